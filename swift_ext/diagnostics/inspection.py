"""What ``inspect`` shows: one row as the model will be trained, beside what inference feeds it.

The view is plain data, built once and drawn by the terminal and HTML
renderers. The inference prompt of each trained turn is rendered here with
transformers' ``apply_chat_template`` and tokenized whole, as a server does,
not taken from the sample, so the side-by-side is evidence rather than a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core import get_encoder
from ..types import IGNORE_INDEX, EncodeStats, Sample, TurnSpan
from ..verify import verify
from ..weights import LossWeights, last_queries
from .options import CommandOptions
from .rows import Row
from .source import ModelSource


@dataclass
class TokenView:
    position: int
    id: int
    text: str
    turn: int | None = None
    """Message index of the turn this token is a label of; None when not trained."""
    weight: float | None = None
    """The token's loss weight when a loss scale was asked for (``--loss-scale`` / ``--span-weights``)."""
    media: str | None = None
    """``image 1``, ``video 2``: this token is the placeholder the model's processor expands into that item's
    tokens (drawn as one marker, not as the processor's hundreds of pad tokens)."""
    media_tokens: int | None = None
    """How many tokens the model's processor makes of the placeholder (None: no processor or image to ask)."""

    @property
    def marker(self) -> str:
        """``[image 1: 24 tokens]`` (``[image 1]`` when the count is unknown)."""
        count = "" if self.media_tokens is None else f": {self.media_tokens} tokens"
        return f"[{self.media}{count}]"

    @property
    def trained(self) -> bool:
        return self.turn is not None

    @property
    def unusual_weight(self) -> bool:
        """A weight other than what the labels alone say (1 on a label, 0 elsewhere): worth showing."""
        return self.weight is not None and self.weight != (1.0 if self.trained else 0.0)


@dataclass
class SampleView:
    index: int
    tokens: list[TokenView]
    turns: list[TurnSpan]

    @property
    def num_labels(self) -> int:
        return sum(t.trained for t in self.tokens)


@dataclass
class PromptView:
    """The inference side of one trained turn."""

    message_index: int
    sample_index: int
    prompt: list[TokenView]
    completion: list[TokenView]
    matches_sample: bool
    rendered_by: str = "transformers apply_chat_template"


@dataclass
class InspectView:
    label: str
    family: str
    parity_template: str
    row: int
    line: int | None
    messages: list[dict[str, Any]]
    samples: list[SampleView]
    prompts: list[PromptView]
    chosen_turn: int
    stats: EncodeStats
    options: dict[str, Any] = field(default_factory=dict)
    derived_tokenizer: bool = False
    loss_weights: str | None = None
    """The loss scale the token weights are of (None: no weights asked for)."""

    def prompt_for(self, message_index: int) -> PromptView:
        return next(p for p in self.prompts if p.message_index == message_index)

    def training_side(self, prompt: PromptView) -> list[TokenView]:
        """The turn's sample up to its last label, with only this turn's labels marked."""
        sample = self.samples[prompt.sample_index]
        span = next(s for s in sample.turns if s.message_index == prompt.message_index)
        return [t if t.turn in (None, span.message_index) else TokenView(t.position, t.id, t.text)
                for t in sample.tokens[: span.label_end]]

    @staticmethod
    def inference_side(prompt: PromptView) -> list[TokenView]:
        """The generation prompt, then the generated tokens marked as the turn's."""
        start = len(prompt.prompt)
        return prompt.prompt + [TokenView(start + t.position, t.id, t.text, prompt.message_index)
                                for t in prompt.completion]


def token_views(decode: Any, ids: list[int], labels: list[int] | None = None,
                turns: list[TurnSpan] = (), weights: list[float] | None = None) -> list[TokenView]:
    """One view per token; a labelled token records the turn it belongs to, and its weight when asked for."""
    owner = {k: span.message_index for span in turns for k in range(span.label_start, span.label_end)}
    views = []
    for k, token_id in enumerate(ids):
        trained = labels is not None and labels[k] != IGNORE_INDEX
        views.append(TokenView(k, token_id, decode([token_id]), owner.get(k, -1) if trained else None,
                               None if weights is None else weights[k]))
    return views


def build_view(source: ModelSource, row: Row, options: CommandOptions, turn: int | None = None,
               weights: LossWeights | None = None) -> InspectView:
    """Encode and verify ``row``, and pair each trained turn with its independently built inference prompt;
    ``weights``: the loss weight of every token under that loss scale."""
    encoder = get_encoder(source.tokenizer, **source.encoder_kwargs(), **options.encoder_kwargs())
    stats = EncodeStats()
    samples = encoder.encode(row.messages, row.tools, options.chat_template_kwargs, conversation_index=row.index,
                             stats=stats, options=options.policies)
    verify(source.tokenizer, row.messages, samples, row.tools, options.chat_template_kwargs,
           options=options.policies, conversation_index=row.index, **source.encoder_kwargs(),
           **options.encoder_kwargs())
    decode = encoder.tokens.decode
    queries = last_queries(row.messages)
    views = [SampleView(n, token_views(decode, s.input_ids, s.labels, s.turns,
                                       None if weights is None else weights.sample(s, encoder.tokens.offsets,
                                                                                   queries=queries)), s.turns)
             for n, s in enumerate(samples)]
    prompts = [_prompt_view(encoder, source, row, options, n, sample, span)
               for n, sample in enumerate(samples) for span in sample.turns]
    media = media_items(row.messages)
    if media:
        counts = _processor_counts(source, media)
        for view in views:
            mark_media(source.tokenizer, view.tokens, media, counts)
        for prompt in prompts:
            mark_media(source.tokenizer, prompt.prompt, media, counts)
    chosen = turn if turn is not None else prompts[-1].message_index
    if chosen not in {p.message_index for p in prompts}:
        trained = ", ".join(str(p.message_index) for p in prompts)
        raise ValueError(f"message {chosen} is not a trained turn of row {row.index} (trained: {trained})")
    return InspectView(source.label, encoder.family.name, encoder.family.parity_template, row.index, row.line,
                       row.messages, views, prompts, chosen, stats, options.to_dict(), source.derived,
                       None if weights is None else weights.name)


def _prompt_view(encoder: Any, source: ModelSource, row: Row, options: CommandOptions, number: int,
                 sample: Sample, span: TurnSpan) -> PromptView:
    text, rendered_by = _inference_prompt(encoder, source, row, options, span.message_index)
    prompt_ids = encoder.tokens.encode_whole(text)
    completion_ids = encoder.tokens.encode_whole(span.completion_text)
    decode = encoder.tokens.decode
    return PromptView(
        span.message_index, number, token_views(decode, prompt_ids), token_views(decode, completion_ids),
        matches_sample=sample.input_ids[: span.label_start] == prompt_ids
        and sample.input_ids[span.label_start:span.label_end] == completion_ids,
        rendered_by=rendered_by,
    )


def _inference_prompt(encoder: Any, source: ModelSource, row: Row, options: CommandOptions,
                      upto: int) -> tuple[str, str]:
    """The generation prompt as a server renders it: transformers' ``apply_chat_template``.

    Falls back to swift_ext's renderer (tested against it) only when transformers
    cannot render the template itself.
    """
    conversation = encoder.conversation(row.messages, row.tools, options.chat_template_kwargs, options.policies)
    try:
        text = source.tokenizer.apply_chat_template(conversation.dicts[:upto], tools=conversation.tools,
                                                    add_generation_prompt=True, tokenize=False,
                                                    chat_template=source.chat_template, **conversation.kwargs)
        return text, "transformers apply_chat_template"
    except Exception:  # transformers' own jinja setup rejected the template; the core's renderer did not
        return conversation.generation_prompt(upto), "swift_ext renderer"


# ------------------------------------------------------------------ media markers
_MEDIA_KINDS = ("image", "video")


def media_items(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """``(kind, source)`` of every media content part, in conversation order (``source``: the part's URL, path
    or data, None for a bare ``{"type": "image"}``)."""
    items = []
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            kind = part.get("type", "") if isinstance(part, dict) else ""
            kind = kind[:-len("_url")] if kind.endswith("_url") else kind
            if kind in _MEDIA_KINDS:
                value = part.get(f"{kind}_url", part.get(kind))
                items.append((kind, value.get("url") if isinstance(value, dict) else value))
    return items


def mark_media(tokenizer: Any, tokens: list[TokenView], media: list[tuple[str, Any]],
               counts: dict[int, int]) -> None:
    """Mark each media item's placeholder token in ``tokens`` (a sample or a prompt: a prefix of the
    conversation, so its items are the first ones, in order). The placeholder is the added token whose text
    names the kind and which occurs once per item (Qwen's ``<|image_pad|>``, Gemma-4's ``<|image|>``), read from
    the tokenizer, not from a list of models."""
    added = tokenizer.get_added_vocab()
    for kind in _MEDIA_KINDS:
        numbers = [k for k, (item_kind, _) in enumerate(media) if item_kind == kind]
        if not numbers:
            continue
        ids = [t.id for t in tokens]
        candidates = [i for text, i in added.items() if kind in text and 0 < ids.count(i) <= len(numbers)]
        if len(candidates) != 1:
            continue  # no unambiguous placeholder: leave the tokens as they are
        seen = 0
        for token in tokens:
            if token.id == candidates[0]:
                token.media = f"{kind} {seen + 1}"
                token.media_tokens = counts.get(numbers[seen])
                seen += 1


def _processor_counts(source: ModelSource, media: list[tuple[str, Any]]) -> dict[int, int]:
    """Item index -> how many tokens the model's processor makes of its placeholder, for images the row names
    (a path or a data URL) when the model folder has a processor; empty otherwise (markers without counts)."""
    import os

    folder = getattr(source, "spec", None)
    if not (isinstance(folder, str) and os.path.isfile(os.path.join(folder, "preprocessor_config.json"))):
        return {}
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(folder)
        token = processor.image_token
    except Exception:  # no vision stack here, or a processor transformers cannot build
        return {}
    counts = {}
    for k, (kind, value) in enumerate(media):
        image = _load_image(value) if kind == "image" else None
        if image is None:
            continue
        try:
            out = processor(text=[token], images=[image], add_special_tokens=False)
        except Exception:  # an image the processor refuses: no count, the marker stays
            continue
        counts[k] = len(out["input_ids"][0])
    return counts


def _load_image(value: Any) -> Any:
    """A PIL image from a path, ``file://`` path or base64 data URL; None for anything else (URLs are not
    fetched: inspecting a row never goes to the network)."""
    import base64
    import io

    try:
        from PIL import Image

        if isinstance(value, str) and value.startswith("data:image") and "base64," in value:
            return Image.open(io.BytesIO(base64.b64decode(value.split("base64,", 1)[1]))).convert("RGB")
        if isinstance(value, str) and not value.startswith(("http://", "https://")):
            return Image.open(value.removeprefix("file://")).convert("RGB")
    except Exception:  # not an image file: no count
        return None
    return None
