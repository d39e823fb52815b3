"""How parity samples reach LLaMA-Factory's training rows.

LLaMA-Factory's supervised processor turns one example into one row: it concatenates
the template's ``(prompt, response)`` pairs. A conversation that needs several samples
(Qwen3-style templates give one per user query) cannot be one row: the later samples'
tokens would sit after, and attend to, a history the model never saw. So for parity
templates ``_get_dataset_processor`` hands out the subclasses here, which

1. encode each example with ``swift_ext.encode`` (``mask_history``: last turn only),
2. apply ``cutoff_len`` at whole-turn boundaries (``swift_ext.truncation``),
3. turn every sample into its ``(masked run, trained run)`` pairs and feed one
   placeholder example per sample through LLaMA-Factory's own ``preprocess_dataset``,
   whose ``_encode_data_example`` returns the sample's ids: one row per sample, and
   packing (``neat_packing``) packs samples, not conversations.

The dataset converter for ``formatting: openai`` is replaced, for parity templates
only, by one that keeps the conversation as written (``reasoning_content``, tool
calls, tool messages, ``loss: false``); LLaMA-Factory's own one drops reasoning, merges
tool results and appends "detailed thinking off" to every system prompt.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swift_ext.errors import ParityError
from swift_ext.samples import truncate
from swift_ext.types import EncodeStats, Sample

from ._compat import ensure_torchaudio
from .options import ParityOptions, current_options
from .template import ParityTemplate, encode_payload, pairs_to_row, sample_to_pairs

ensure_torchaudio()  # before LLaMA-Factory, which imports torchaudio at module level

from llamafactory.data.converter import DatasetConverter  # noqa: E402
from llamafactory.data.processor import PackedSupervisedDatasetProcessor, SupervisedDatasetProcessor  # noqa: E402

logger = logging.getLogger("swift_ext.llamafactory")

_MEDIA = ("_images", "_videos", "_audios")


# ------------------------------------------------------------------------------ dataset converter
def _drop_none(value: Any) -> Any:
    """Remove the ``None`` fields Arrow adds when it unifies dicts of different keys."""
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def clean_message(message: Mapping[str, Any], role_key: str = "role", content_key: str = "content") -> dict:
    """A message as it was written, without the keys Arrow filled with ``None``."""
    out: dict[str, Any] = {}
    for key, value in message.items():
        if key == role_key:
            out["role"] = value
        elif key == content_key:
            out["content"] = value
        elif value is None:
            continue
        elif key == "tool_calls":
            out[key] = _drop_none(value)
        else:
            out[key] = value
    out.setdefault("content", None)
    return out


@dataclass
class ParityDatasetConverter(DatasetConverter):
    """``formatting: openai`` for parity templates: the conversation, unchanged, in one payload message."""

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        attr = self.dataset_attr
        raw = example[attr.messages] or []
        role_key = attr.role_tag if raw and attr.role_tag in raw[0] else "role"
        content_key = attr.content_tag if raw and attr.content_tag in raw[0] else "content"
        roles = {
            attr.user_tag: "user",
            attr.assistant_tag: "assistant",
            attr.observation_tag: "tool",
            attr.function_tag: "assistant",
            attr.system_tag: "system",
        }
        messages = []
        for message in raw:
            cleaned = clean_message(message, role_key, content_key)
            cleaned["role"] = roles.get(cleaned.get("role"), cleaned.get("role"))
            messages.append(cleaned)
        system = example.get(attr.system) if attr.system else None
        if system and not (messages and messages[0]["role"] == "system"):
            messages.insert(0, {"role": "system", "content": system})
        tools = example.get(attr.tools) if attr.tools else None
        if isinstance(tools, (list, dict)):
            tools = _drop_none(tools)
        return {
            "_prompt": [{"role": "user", "content": encode_payload(messages, tools or None)}],
            "_response": [{"role": "assistant", "content": ""}],
            "_system": "",
            "_tools": "",
            "_images": self._find_medias(example[attr.images]) if attr.images else None,
            "_videos": self._find_medias(example[attr.videos]) if attr.videos else None,
            "_audios": self._find_medias(example[attr.audios]) if attr.audios else None,
        }


# ------------------------------------------------------------------------------------ truncation
def truncate_sample(sample: Sample, cutoff_len: int, mode: str) -> tuple[Sample | None, int]:
    """Fit a sample into ``cutoff_len`` without breaking a turn (``samples.truncate``: ``turns`` keeps the whole
    turns that fit, ``drop`` deletes the sample). Returns (sample or None, turns not trained)."""
    if len(sample) <= cutoff_len:
        return sample, 0
    if mode == "error":
        raise ParityError(
            f"a sample of {len(sample)} tokens exceeds cutoff_len={cutoff_len}, and cutting it would train a turn "
            "without its context or without its end: raise cutoff_len, or set swift_ext.truncation to 'turns' "
            "(keep the whole turns that fit) or 'drop'",
            rule="lf-cutoff-len",
        )
    cut = truncate(sample, [0.0] * len(sample), cutoff_len, "turns" if mode == "turns" else "delete")
    if not cut.pieces:
        return None, len(sample.turns)
    fitted = cut.pieces[0].sample
    return fitted, len(sample.turns) - len(fitted.turns)


# ------------------------------------------------------------------------------------ processors
class _ParityRows:
    """Mixin: one LLaMA-Factory row per parity sample, through LLaMA-Factory's own loop."""

    parity_options: dict
    _pending: Any = None

    def _options(self) -> ParityOptions:
        return ParityOptions.from_mapping(self.parity_options)

    def _check_arguments(self) -> None:
        args = self.data_args
        if args.train_on_prompt:
            raise ValueError(
                "train_on_prompt trains on system, user and tool tokens, which a model never generates; parity "
                "templates train on the generated tokens only: remove train_on_prompt"
            )
        if args.packing and not args.neat_packing:
            raise ValueError(
                "packing without neat_packing lets every packed sample attend to the samples before it, so no "
                "trained token has its inference context: set neat_packing: true (or packing: false)"
            )

    def _parity_rows(self, examples: dict[str, list[Any]]) -> list[tuple[list[int], list[int]]]:
        self._check_arguments()
        options = self._options()
        stats = self.__dict__.setdefault("_stats", EncodeStats())
        counts = self.__dict__.setdefault("_counts", {"skipped": 0, "dropped_samples": 0, "dropped_turns": 0})
        rows = []
        for i in range(len(examples["_prompt"])):
            if any(examples[key][i] for key in _MEDIA if key in examples):
                raise ValueError("parity templates train on text only; this example has images, videos or audios")
            try:
                samples = self.template.encode_samples(
                    self.tokenizer,
                    examples["_prompt"][i] + examples["_response"][i],
                    examples["_system"][i],
                    examples["_tools"][i],
                    options=options,
                    last_turn_only=self.data_args.mask_history,
                    stats=stats,
                )
            except ParityError as exc:
                exc = _located(exc, examples, i)
                if options.on_error == "raise":
                    raise exc from None
                counts["skipped"] += 1
                logger.warning("swift_ext: skipped a conversation: %s", exc)
                continue
            for sample in samples:
                fitted, dropped_turns = truncate_sample(sample, self.data_args.cutoff_len, options.truncation)
                counts["dropped_turns"] += dropped_turns
                if fitted is None:
                    counts["dropped_samples"] += 1
                    logger.warning(
                        "swift_ext: dropped a sample of %d tokens (> cutoff_len=%d, swift_ext.truncation=%s)",
                        len(sample), self.data_args.cutoff_len, options.truncation,
                    )
                    continue
                if not fitted.num_labels:  # swift_ext.span_weights masked every token it would train
                    counts["masked_samples"] = counts.get("masked_samples", 0) + 1
                    logger.warning("swift_ext: dropped a sample with nothing left to train after span_weights %s",
                                   options.span_weights)
                    continue
                if dropped_turns:
                    logger.warning(
                        "swift_ext: cut a sample of %d tokens to %d at a turn boundary (cutoff_len=%d): %d turn(s) "
                        "not trained", len(sample), len(fitted), self.data_args.cutoff_len, dropped_turns,
                    )
                row = pairs_to_row(sample_to_pairs(fitted))
                if row != (fitted.input_ids, fitted.labels):  # cheap guard on the pair round trip
                    raise ParityError("pairs do not rebuild the sample", rule="lf-pairs")
                rows.append(row)
        return rows

    def preprocess_dataset(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        rows = self._parity_rows(examples)
        n = len(rows)
        placeholders = {
            "_prompt": [[{"role": "user", "content": ""}] for _ in range(n)],
            "_response": [[{"role": "assistant", "content": ""}] for _ in range(n)],
            "_system": [""] * n,
            "_tools": [""] * n,
            "_images": [None] * n,
            "_videos": [None] * n,
            "_audios": [None] * n,
        }
        self._pending = iter(rows)
        try:
            model_inputs = super().preprocess_dataset(placeholders)
            if next(self._pending, None) is not None:
                raise RuntimeError("LLaMA-Factory's processor skipped a parity sample")
        finally:
            self._pending = None
        if not n:  # keep the columns of a batch whose conversations all dropped out
            for key in self._empty_columns():
                model_inputs.setdefault(key, [])
        return model_inputs

    def _encode_data_example(self, *args: Any, **kwargs: Any) -> tuple[list[int], list[int]]:
        if self._pending is None:
            raise RuntimeError("the parity processor encodes through preprocess_dataset only")
        input_ids, labels = next(self._pending)
        return list(input_ids), list(labels)

    def _empty_columns(self) -> tuple[str, ...]:
        return ("input_ids", "attention_mask", "labels", "images", "videos", "audios")

    def print_data_example(self, example: dict[str, list[int]]) -> None:
        super().print_data_example(example)
        stats = self.__dict__.get("_stats")
        counts = self.__dict__.get("_counts", {})
        if stats is not None and stats.conversations:
            print(
                f"swift_ext: {stats.conversations} conversations -> {stats.samples} samples, "
                f"{stats.trained_turns} trained turns ({stats.spliced_turns} spliced), emitted/full-render token "
                f"ratio {stats.emitted_ratio:.3f}; skipped {counts.get('skipped', 0)} conversations, dropped "
                f"{counts.get('dropped_samples', 0)} samples and {counts.get('dropped_turns', 0)} turns for cutoff_len"
                + (f", {counts['masked_samples']} samples left with nothing to train by span_weights"
                   if counts.get("masked_samples") else "")
            )


def _located(exc: ParityError, examples: dict[str, list[Any]], i: int) -> ParityError:
    """Name the example in an error: LLaMA-Factory's map gives no dataset index, so quote its start."""
    from .template import _payload

    messages = examples["_prompt"][i]
    payload = _payload(messages)
    conversation = payload["messages"] if payload else messages
    first = next((m.get("content") for m in conversation if m.get("role") == "user"), None)
    where = f"example {i} of the batch, first user message {str(first)[:60]!r}"
    located = ParityError(f"{exc.detail} ({where})", rule=exc.rule, message_index=exc.message_index)
    located.__cause__ = exc
    return located


@functools.lru_cache(maxsize=1)
def _version() -> str:
    """A digest of swift_ext's code and family files: cached tokenized data goes stale when they change."""
    import hashlib
    from pathlib import Path

    import swift_ext
    from swift_ext.families import _templates_dir

    digest = hashlib.sha256()
    root = Path(swift_ext.__file__).resolve().parent
    for path in sorted([*root.rglob("*.py"), *_templates_dir().glob("*.toml")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class ParitySupervisedDatasetProcessor(_ParityRows, SupervisedDatasetProcessor):
    parity_options: dict = field(default_factory=dict)
    """Part of the processor's state, so datasets' cache fingerprint changes with the options."""
    parity_version: str = ""


@dataclass
class ParityPackedSupervisedDatasetProcessor(_ParityRows, PackedSupervisedDatasetProcessor):
    parity_options: dict = field(default_factory=dict)
    parity_version: str = ""

    def _empty_columns(self) -> tuple[str, ...]:
        columns = (*super()._empty_columns(), "position_ids")
        return (*columns, "packing_params") if self.data_args.neat_packing else columns


def parity_processor(default: Any, stage: str, template: Any, do_generate: bool) -> Any:
    """The processor LLaMA-Factory should use for this template (``default`` when not a parity one)."""
    if not isinstance(template, ParityTemplate):
        return default
    if stage == "sft" and not do_generate:
        cls = (
            ParityPackedSupervisedDatasetProcessor
            if isinstance(default, PackedSupervisedDatasetProcessor)
            else ParitySupervisedDatasetProcessor
        )
        processor = cls(
            template=default.template, tokenizer=default.tokenizer, processor=default.processor,
            data_args=default.data_args, parity_options=json.loads(current_options().to_json()),
            parity_version=_version(),
        )
        processor._check_arguments()
        return processor
    if stage == "pt":
        return default  # pre-training reads plain text; the template is not used
    raise ValueError(
        f"template {template.parity_name!r} supports stage: sft (training) in this version, not stage: {stage}"
        + (" with predict_with_generate" if do_generate else "")
        + "; LLaMA-Factory's processors for it truncate prompts token-wise, which breaks the inference prompt"
    )
