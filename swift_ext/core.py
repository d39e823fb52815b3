"""The parity core: a conversation in, inference-exact training samples out.

For each trained assistant turn i (generation-prompt splicing, see DESIGN.md):

1. ``G_i`` = render(messages[:i], add_generation_prompt=True): what an
   inference server feeds the model; its tokens are the turn's prompt.
2. ``R_i`` = render(messages[:i+1]): the template's own rendering with the
   turn last. The turn's *completion* is what follows the generation prompt in
   it, cut after the first stop string. Where ``R_i`` does not start with
   ``G_i`` (the generation prompt holds text the turn's rendering puts
   elsewhere or omits, or the template rewrote history for this render) the
   turn's text is located in ``R_i`` and placed after ``G_i``: what inference
   really produced.
3. Reasoning the template drops is written back in the family's format, or
   raises, or (by request) is dropped and counted.
4. Consecutive turns share a sample while each next prompt extends the sample
   token for token; a new sample starts where the template rewrote history.

Nothing here imports a training framework.
"""

from __future__ import annotations

import json
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import (
    InputError,
    ParityError,
    PolicyError,
    ReasoningDroppedError,
    TemplateRenderError,
    VerificationError,
)
from .families import Family, resolve_family
from .messages import parse_messages
from .render import ChatRenderer, template_of, tokenizer_template_kwargs
from .text import common_prefix_len, common_suffix_len
from .tokens import SegmentTokenizer
from .types import IGNORE_INDEX, EncodeStats, Message, Sample, TurnSpan

REASONING_POLICIES = ("error", "drop")
HISTORY_POLICIES = ("template", "keep")
TRAIN_TURNS = ("all", "last")


@dataclass
class _Turn:
    """One trained turn before tokenization."""

    message_index: int
    prompt_text: str
    completion_text: str
    spliced: bool
    reasoning_formatted: bool
    reasoning_dropped: bool


def default_stop_strings(tokenizer: Any) -> tuple[str, ...]:
    """Stop strings of a template no family describes: the tokenizer's eos and,
    when the tokenizer was loaded from a folder, its generation config's eos ids."""
    stops: list[str] = []
    eos = getattr(tokenizer, "eos_token", None)
    if eos:
        stops.append(str(eos))
    path = getattr(tokenizer, "name_or_path", None)
    if path:
        import os

        config = os.path.join(str(path), "generation_config.json")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as fh:
                ids = json.load(fh).get("eos_token_id", [])
            for token_id in [ids] if isinstance(ids, int) else ids:
                text = tokenizer.convert_ids_to_tokens(int(token_id))
                if text and text not in stops:
                    stops.append(text)
    return tuple(stops)


class Encoder:
    """Turns conversations into samples for one tokenizer and chat template.

    Holds what is reused across conversations: the compiled template, the
    family description, the memoised tokenizer. Build one per dataset (the
    module-level ``encode`` keeps a small cache of them).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        chat_template: str | None = None,
        family: str | Family | None = None,
        strict: bool = False,
        stop_strings: Sequence[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template_of(tokenizer, chat_template)
        self.family = resolve_family(self.template, family, strict=strict)
        self.renderer = ChatRenderer(self.template, tokenizer_template_kwargs(tokenizer))
        self.stop_strings = tuple(stop_strings or self.family.stop_strings or default_stop_strings(tokenizer))
        if not self.stop_strings:
            raise PolicyError(
                "no stop strings: the template matches no family and the tokenizer has no eos token; "
                "pass stop_strings=[...]",
                rule="no-stop-strings",
            )
        self.tokens = SegmentTokenizer(tokenizer, split_on=self.template + "".join(self.stop_strings))
        _warn_if_lossy(self.tokens)

    # ------------------------------------------------------------------ encode
    def encode(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        *,
        reasoning_policy: str = "error",
        history_reasoning: str = "template",
        train_turns: str = "all",
        conversation_index: int | None = None,
        stats: EncodeStats | None = None,
    ) -> list[Sample]:
        try:
            with self.renderer.memo():
                return self._encode(
                    messages, tools, chat_template_kwargs, reasoning_policy, history_reasoning, train_turns, stats
                )
        except ParityError as exc:
            raise exc.with_conversation(conversation_index) from None

    def _encode(self, raw_messages, tools, chat_template_kwargs, reasoning_policy, history_reasoning, train_turns,
                stats) -> list[Sample]:
        _check_choice("reasoning_policy", reasoning_policy, REASONING_POLICIES)
        _check_choice("train_turns", train_turns, TRAIN_TURNS)
        messages = parse_messages(raw_messages)
        kwargs = self.template_kwargs(chat_template_kwargs, history_reasoning)
        dicts = [self.template_message(m) for m in messages]
        trained = self.trained_turns(messages, train_turns)
        turns = [self._derive_turn(messages, dicts, i, tools, kwargs, reasoning_policy) for i in trained]
        samples = self._assemble(turns)
        if stats is not None:
            self._count(stats, samples, turns, dicts, tools, kwargs)
        return samples

    # ----------------------------------------------------------- conversation
    def template_kwargs(self, chat_template_kwargs: Mapping[str, Any] | None, history_reasoning: str) -> dict:
        """Template kwargs for a history-reasoning policy (``keep`` uses the template's own switch)."""
        _check_choice("history_reasoning", history_reasoning, HISTORY_POLICIES)
        kwargs = dict(chat_template_kwargs or {})
        if history_reasoning == "keep":
            if self.family.keep_history_kwarg is None:
                raise PolicyError(
                    f"history_reasoning='keep' needs a template switch that keeps past reasoning, and the "
                    f"{self.family.name!r} family's template has none; use 'template' (the template's own behaviour) "
                    "or a model whose template has one (Qwen3.6 preserve_thinking, GLM-4.7 clear_thinking)",
                    rule="policy-keep-history",
                )
            kwargs[self.family.keep_history_kwarg] = self.family.keep_history_value
        return kwargs

    @staticmethod
    def trained_turns(messages: list[Message], train_turns: str) -> list[int]:
        turns = [i for i, m in enumerate(messages) if m.role == "assistant" and m.train]
        if train_turns == "last":
            last = max(i for i, m in enumerate(messages) if m.role == "assistant")
            turns = [i for i in turns if i == last]
        if not turns:
            raise InputError("no assistant turn is trained (all have loss: false)", rule="I5-zero-label")
        return turns

    def template_message(self, message: Message, *, drop_reasoning: bool = False) -> dict[str, Any]:
        """The dict the chat template sees for one message, in the family's field names."""
        # A None value means "absent", as transformers >= 5.2x and OpenAI-style servers treat it (5.19 would
        # render the text 'None' into GLM-4.7's history).
        out: dict[str, Any] = {"role": message.role}
        if message.content is not None:
            out["content"] = message.content
        reasoning = None if drop_reasoning else message.reasoning
        if reasoning is not None:
            # The names transformers itself passes reasoning under, plus the family's own.
            out["reasoning_content"] = reasoning
            out["thinking"] = reasoning
            if self.family.reasoning_field:
                out[self.family.reasoning_field] = reasoning
        if message.tool_calls:
            out["tool_calls"] = [self._tool_call(call) for call in message.tool_calls]
        if message.tool_call_id is not None:
            out["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            out["name"] = message.name
        for key, value in message.extra.items():
            if value is not None:
                out.setdefault(key, value)
        return out

    def _tool_call(self, call: Any) -> dict[str, Any]:
        form = self.family.tool_arguments
        if form == "dict":
            arguments: Any = call.arguments
        elif form == "json":
            arguments = call.arguments_json if call.arguments_json is not None else json.dumps(
                call.arguments, ensure_ascii=False
            )
        else:
            arguments = call.arguments_json if call.arguments_json is not None else call.arguments
        function = {"name": call.name, "arguments": arguments}
        out: dict[str, Any] = {"type": call.type, "function": function}
        if call.id is not None:
            out["id"] = call.id
        return out

    def render(self, dicts, tools, kwargs, *, add_generation_prompt: bool, upto: int) -> str:
        try:
            return self.renderer.render(
                dicts[:upto], tools=tools, add_generation_prompt=add_generation_prompt, kwargs=kwargs
            )
        except TemplateRenderError as exc:
            what = "generation prompt" if add_generation_prompt else "rendering"
            raise TemplateRenderError(
                f"{exc.detail} (while building the {what} of messages[:{upto}])", rule=exc.rule,
                message_index=upto - 1 if upto else None,
            ) from None

    # ------------------------------------------------------------------- turns
    def _derive_turn(self, messages, dicts, i, tools, kwargs, reasoning_policy) -> _Turn:
        message = messages[i]
        prompt = self.render(dicts, tools, kwargs, add_generation_prompt=True, upto=i)
        thinking = self.family.thinking_enabled(kwargs)
        dropped = False
        if thinking is False and message.reasoning and message.reasoning.strip():
            if reasoning_policy != "drop":
                raise ReasoningDroppedError(
                    f"the turn carries reasoning ({message.reasoning[:40]!r}...) but thinking is off "
                    f"({self.family.thinking_kwarg}=False): a model in non-thinking mode does not generate it. "
                    "Turn thinking on, remove the reasoning, or pass reasoning_policy='drop'",
                    rule="reasoning-thinking-off",
                    message_index=i,
                )
            dicts = list(dicts)
            dicts[i] = self.template_message(message, drop_reasoning=True)
            dropped = True
        try:
            raw, spliced = self._turn_text(dicts, i, prompt, tools, kwargs)
        except ReasoningDroppedError:
            if not (message.reasoning and reasoning_policy == "drop"):
                raise
            dicts = list(dicts)
            dicts[i] = self.template_message(message, drop_reasoning=True)
            raw, spliced = self._turn_text(dicts, i, prompt, tools, kwargs)
            dropped = True
        completion = self._cut_at_stop(raw, message, i)
        formatted = False
        if message.reasoning and message.reasoning.strip() and not dropped:
            completion, formatted, dropped = self._restore_reasoning(prompt, completion, message, i, thinking,
                                                                     reasoning_policy)
        completion, closed = self._close_open_block(prompt, completion, i)
        formatted = formatted or closed
        self._check_rendered(completion, message, i)
        if spliced:
            _check_no_foreign_text(completion, messages, i)
        return _Turn(i, prompt, completion, spliced, formatted, dropped)

    def _turn_text(self, dicts, i, prompt, tools, kwargs) -> tuple[str, bool]:
        """The text the model generated for turn i (before the stop cut), and whether it was spliced."""
        rendering = self.render(dicts, tools, kwargs, add_generation_prompt=False, upto=i + 1)
        if rendering.startswith(prompt):
            return rendering[len(prompt):], False
        history = self.render(dicts, tools, kwargs, add_generation_prompt=False, upto=i)
        if not prompt.startswith(history):
            raise TemplateRenderError(
                "the generation prompt does not extend the rendering of the history: "
                + _first_difference(history, prompt),
                rule="generation-prompt-not-suffix",
                message_index=i,
            )
        gen_prompt = prompt[len(history):]
        if rendering.startswith(history):
            turn = rendering[len(history):]
        else:
            turn = self._locate_turn(rendering, gen_prompt, history, i, prompt)
        shared = self._shared_header(turn, gen_prompt)
        completion, leftover = turn[shared:], gen_prompt[shared:]
        if leftover.strip() and leftover.strip() in completion:
            raise ReasoningDroppedError(
                f"the generation prompt already holds {leftover!r}, which the turn's own rendering writes after "
                f"its text ({completion[:60]!r}...): the turn carries reasoning while thinking is off. Turn thinking "
                "on, remove the reasoning, or pass reasoning_policy='drop'",
                rule="reasoning-thinking-off",
                message_index=i,
            )
        return completion, shared < len(gen_prompt)

    def _shared_header(self, turn: str, gen_prompt: str) -> int:
        """Length of the longest run of whole generation-prompt tokens the turn's rendering starts with."""
        shared = common_prefix_len(turn, gen_prompt)
        return max((end for end in [0, *self.tokens.boundaries(gen_prompt)] if end <= shared), default=0)

    def _locate_turn(self, rendering: str, gen_prompt: str, history: str, i: int, prompt: str) -> str:
        """Find turn i's text in a rendering whose history differs from the prompt's.

        The rewrite (a past turn's reasoning dropped, say) is somewhere inside the
        history; what comes right before the turn, the rendering of the message it
        answers, is the same in both. So the turn starts at the copy of the
        generation prompt's first token whose preceding text shares the longest
        suffix with the prompt's history.
        """
        bounds = self.tokens.boundaries(gen_prompt)
        head = gen_prompt[: bounds[0]] if bounds else gen_prompt
        best, best_shared = -1, -1
        # The rewrite is inside the history, so the turn starts after the first place the two histories part.
        start = rendering.find(head, common_prefix_len(history, rendering))
        while head and start >= 0:
            shared = common_suffix_len(history, rendering[:start])
            if shared >= best_shared:
                best, best_shared = start, shared
            start = rendering.find(head, start + 1)
        if best < 0 or best_shared == 0:
            raise TemplateRenderError(
                "cannot find the turn in the template's rendering (history was rewritten and the generation "
                "prompt's header does not follow the history): " + _first_difference(prompt, rendering),
                rule="turn-not-located",
                message_index=i,
            )
        return rendering[best:]

    def _cut_at_stop(self, raw: str, message: Message, i: int) -> str:
        cut = None
        for stop in self.stop_strings:
            pos = raw.find(stop)
            if pos >= 0 and (cut is None or pos + len(stop) < cut):
                cut = pos + len(stop)
        if cut is not None:
            return raw[:cut]
        appended = self.family.stop_after_tool_calls if message.tool_calls else None
        appended = appended or self.family.stop_after_turn
        if appended:
            return raw + appended
        raise ParityError(
            f"the turn's rendering {raw[-80:]!r} contains none of the stop strings {list(self.stop_strings)}; "
            "pass stop_strings=[...] with what the model generates to end a turn",
            rule="I2-no-stop-string",
            message_index=i,
        )

    def _restore_reasoning(self, prompt, completion, message, i, thinking, reasoning_policy) -> tuple[str, bool, bool]:
        """Make sure the turn's reasoning is in its completion, or say why not."""
        reasoning = message.reasoning
        if _rendered_beyond(reasoning.strip(), completion, message):
            return completion, False, False
        family = self.family
        if thinking is not False and family.reasoning_format and self._format_fits(prompt):
            text = family.reasoning_format.format(reasoning=reasoning)
            placeholder = family.reasoning_placeholder
            if placeholder and placeholder in completion:
                return completion.replace(placeholder, text, 1), True, False
            return text + completion, True, False
        if reasoning_policy == "drop":
            return completion, False, True
        if thinking is False:
            why = "thinking is off for this render"
        elif family.reasoning_format:
            why = f"the {family.name!r} family's reasoning format has no place after this prompt"
        else:
            why = f"the {family.name!r} family gives no format for it"
        raise ReasoningDroppedError(
            f"the turn carries reasoning ({reasoning[:40]!r}...) that the template does not render, and {why}; "
            "training without it would be silent. Pass reasoning_policy='drop' to drop it (counted)",
            rule="reasoning-dropped",
            message_index=i,
        )

    def _inside_open_block(self, prompt: str) -> bool:
        opener, closer = self.family.reasoning_open, self.family.reasoning_close
        return bool(opener and closer) and prompt.rfind(opener) > prompt.rfind(closer)

    def _format_fits(self, prompt: str) -> bool:
        """A reasoning format that opens its own block (``<think>\n{reasoning}...``) fits after any prompt; one
        that only closes it (``{reasoning}</think>``) fits only where the prompt ends inside an open block
        (DeepSeek-V3.1 opens none after tool outputs: there its reasoning has no place)."""
        opener = self.family.reasoning_open
        return not opener or opener in self.family.reasoning_format or self._inside_open_block(prompt)

    def _close_open_block(self, prompt: str, completion: str, i: int) -> tuple[str, bool]:
        """A prompt ending inside an open reasoning block (QwQ's ``<think>\n``; Gemma-4's
        ``<|channel>thought\n`` after a tool response) is followed at inference by reasoning and the block's
        close. A turn without reasoning whose rendering never closes it gets the family's format with empty
        reasoning; with no format, training the answer inside the open block would be silent, so it raises."""
        opener, closer = self.family.reasoning_open, self.family.reasoning_close
        if not self._inside_open_block(prompt) or closer in completion:
            return completion, False
        if self.family.reasoning_format:
            return self.family.reasoning_format.format(reasoning="") + completion, True
        raise ReasoningDroppedError(
            f"the generation prompt ends inside an open reasoning block ({opener!r}) that the turn's rendering "
            f"never closes ({completion[:60]!r}), and the {self.family.name!r} family gives no format for it; "
            "give the turn its reasoning",
            rule="reasoning-block-open",
            message_index=i,
        )

    @staticmethod
    def _check_rendered(completion: str, message: Message, i: int) -> None:
        """The completion must hold the turn's answer and tool calls: a template that
        drops them would otherwise train the model to say nothing."""
        if isinstance(message.content, str) and message.content.strip():
            if message.content.strip() not in completion:
                raise TemplateRenderError(
                    f"the turn's content {message.content.strip()[:60]!r} is not in what the template renders for "
                    f"it ({completion[:80]!r})",
                    rule="I2-content-not-rendered",
                    message_index=i,
                )
        for call in message.tool_calls:
            if call.name not in completion:
                raise TemplateRenderError(
                    f"the template does not render the turn's tool call {call.name!r} (some templates render "
                    "the call's id instead of its name: Kimi-K2 expects ids like 'functions.NAME:0')",
                    rule="template-drops-tool-calls",
                    message_index=i,
                )

    # --------------------------------------------------------------- samples
    def _assemble(self, turns: list[_Turn]) -> list[Sample]:
        samples: list[Sample] = []
        current: Sample | None = None
        for turn in turns:
            prompt_ids = self.tokens.encode(turn.prompt_text)
            completion_ids = self.tokens.encode(turn.completion_text)
            if not prompt_ids:
                raise VerificationError("the generation prompt is empty: every token would be trained",
                                        rule="I5-all-label", message_index=turn.message_index)
            if not completion_ids:
                raise VerificationError("the turn's completion is empty", rule="I5-empty-completion",
                                        message_index=turn.message_index)
            if current is not None and _extends(prompt_ids, current.input_ids):
                extra = prompt_ids[len(current.input_ids):]
                current.input_ids.extend(extra)
                current.labels.extend([IGNORE_INDEX] * len(extra))
            else:
                current = Sample(list(prompt_ids), [IGNORE_INDEX] * len(prompt_ids), [])
                samples.append(current)
            start = len(current.input_ids)
            current.input_ids.extend(completion_ids)
            current.labels.extend(completion_ids)
            current.turns.append(
                TurnSpan(
                    message_index=turn.message_index,
                    prompt_end=start,
                    label_start=start,
                    label_end=start + len(completion_ids),
                    completion_text=turn.completion_text,
                    spliced=turn.spliced,
                    reasoning_formatted=turn.reasoning_formatted,
                )
            )
        return samples

    def _count(self, stats, samples, turns, dicts, tools, kwargs) -> None:
        full = self.render(dicts, tools, kwargs, add_generation_prompt=False, upto=len(dicts))
        stats.conversations += 1
        stats.samples += len(samples)
        stats.emitted_tokens += sum(len(s) for s in samples)
        stats.full_render_tokens += len(self.tokens.encode(full))
        stats.trained_tokens += sum(s.num_labels for s in samples)
        stats.trained_turns += len(turns)
        stats.spliced_turns += sum(t.spliced for t in turns)
        stats.reasoning_dropped += sum(t.reasoning_dropped for t in turns)
        stats.reasoning_formatted += sum(t.reasoning_formatted for t in turns)


# ---------------------------------------------------------------------- helpers
_ROUND_TRIP = "Hello world\n  indented code"


def _warn_if_lossy(tokens: SegmentTokenizer) -> None:
    """A tokenizer that loses spaces or newlines corrupts every sample, exactly or not: say so once.

    (transformers < 5.20 loads DeepSeek's byte-level tokenizers as Metaspace ones that drop them.)"""
    decoded = tokens.decode(tokens.encode_whole(_ROUND_TRIP))
    if decoded != _ROUND_TRIP:
        warnings.warn(
            f"the tokenizer does not round-trip text ({_ROUND_TRIP!r} decodes as {decoded!r}): it was probably "
            "loaded with the wrong class for its tokenizer.json (transformers < 5.20 does this to DeepSeek "
            "tokenizers). Samples are exact for this tokenizer, but it is not the model's.",
            stacklevel=3,
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PolicyError(f"{name} must be one of {choices}, got {value!r}", rule=f"policy-{name}")


def _extends(ids: list[int], prefix: list[int]) -> bool:
    return len(ids) >= len(prefix) and ids[: len(prefix)] == prefix


def _texts(message: Message, *, reasoning: bool = True) -> list[str]:
    """What a message says, as the template may render it: content, reasoning, tool-call arguments."""
    texts = [message.content if isinstance(message.content, str) else ""]
    texts += [message.reasoning or ""] if reasoning else []
    for call in message.tool_calls:  # once each: as written, else as the template's tojson would write it
        texts.append(call.arguments_json if call.arguments_json is not None else json.dumps(call.arguments,
                                                                                           ensure_ascii=False))
    return [t.strip() for t in texts if t and t.strip()]


def _rendered_beyond(text: str, completion: str, message: Message) -> bool:
    """``text`` occurs in the completion more often than the turn's answer and tool calls account for."""
    elsewhere = sum(t.count(text) for t in _texts(message, reasoning=False))
    return completion.count(text) > elsewhere


_FOREIGN_MIN_CHARS = 12


def _check_no_foreign_text(completion: str, messages: list[Message], i: int) -> None:
    """A spliced or located turn must not hold another message's text (Gemma-4 renders a tool-call turn's
    content after the tool responses, where it would land in the next turn's labels)."""
    own = "\n".join(_texts(messages[i]))
    for j, other in enumerate(messages):
        for text in _texts(other) if j != i else ():
            if len(text) >= _FOREIGN_MIN_CHARS and text in completion and text not in own:
                raise TemplateRenderError(
                    f"the text the template renders for turn {i} holds message {j}'s text {text[:40]!r}: the "
                    "template places that message's content inside this turn, so no completion is exactly what "
                    "the model generated",
                    rule="I3-foreign-text",
                    message_index=i,
                )


def _first_difference(expected: str, actual: str) -> str:
    at = common_prefix_len(expected, actual)
    return (
        f"first difference at character {at}: expected {expected[max(0, at - 30):at + 30]!r}, "
        f"got {actual[max(0, at - 30):at + 30]!r}"
    )


@dataclass(frozen=True)
class _CachedEncoder:
    """An encoder with what its output depends on beyond its cache key, checked on every hit."""

    tokenizer: Callable[[], Any]  # a weak identity: an id Python reuses for a new tokenizer never matches
    special_tokens: Any  # the bos_token/eos_token/... the renderer was given, as built
    encoder: Encoder

    def serves(self, tokenizer: Any) -> bool:
        return (self.tokenizer() is tokenizer and self.encoder.tokens.current()
                and _special_tokens(tokenizer) == self.special_tokens)


def _special_tokens(tokenizer: Any) -> Any:
    """What ``special_tokens_map`` is made from, cheaply: transformers 5 keeps it in one dict that setting
    ``bos_token`` & co. updates (``special_tokens_map`` builds a new dict, 1-2 us a call, per conversation)."""
    state = getattr(tokenizer, "_special_tokens_map", None)
    return state if isinstance(state, dict) else getattr(tokenizer, "special_tokens_map", None)


_MAX_ENCODERS = 8
_ENCODERS: OrderedDict[tuple, _CachedEncoder] = OrderedDict()
_ENCODERS_LOCK = threading.Lock()


def get_encoder(tokenizer: Any, *, chat_template=None, family=None, strict=False, stop_strings=None) -> Encoder:
    """A cached ``Encoder`` for this tokenizer and settings (up to 8 per process, least recently used dropped).

    Rebuilt when its output could differ: another template, tokens added to the tokenizer
    (``add_special_tokens`` / ``add_tokens``) or special tokens reassigned since it was built. Thread-safe."""
    family_key = family.name if isinstance(family, Family) else family
    template = template_of(tokenizer, chat_template)
    key = (id(tokenizer), template, family_key, strict, tuple(stop_strings or ()))
    with _ENCODERS_LOCK:
        cached = _ENCODERS.get(key)
        if cached is not None:
            _ENCODERS.move_to_end(key)
    if cached is not None and cached.serves(tokenizer):
        return cached.encoder
    # Built outside the lock (a template compile and tokenizer probes): other threads' hits do not wait for it.
    special_tokens = _special_tokens(tokenizer)
    special_tokens = dict(special_tokens) if isinstance(special_tokens, dict) else special_tokens  # a snapshot
    encoder = Encoder(tokenizer, chat_template=chat_template, family=family, strict=strict, stop_strings=stop_strings)
    fresh = _CachedEncoder(_weak(tokenizer), special_tokens, encoder)
    with _ENCODERS_LOCK:
        cached = _ENCODERS.get(key)
        if cached is not None and cached.serves(tokenizer):
            return cached.encoder  # another thread built it first: share its piece cache
        _ENCODERS[key] = fresh
        _ENCODERS.move_to_end(key)
        while len(_ENCODERS) > _MAX_ENCODERS:
            _ENCODERS.popitem(last=False)
    return encoder


def _weak(tokenizer: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(tokenizer)
    except TypeError:  # an object without weakref support: the encoder holds it strongly anyway
        return lambda: tokenizer


def encode(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    *,
    chat_template: str | None = None,
    family: str | Family | None = None,
    strict: bool = False,
    stop_strings: Sequence[str] | None = None,
    reasoning_policy: str = "error",
    history_reasoning: str = "template",
    train_turns: str = "all",
    conversation_index: int | None = None,
    stats: EncodeStats | None = None,
) -> list[Sample]:
    """Encode one conversation into inference-exact training samples.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: role/content dicts (system, user, assistant, tool), with
            ``reasoning_content`` (or ``thinking``/``reasoning``/inline
            ``<think>``), ``tool_calls`` and ``loss: false`` as needed.
        tools: tool schemas, as for ``apply_chat_template``.
        chat_template_kwargs: e.g. ``{"enable_thinking": False}``.
        chat_template: a template text (or named template) instead of the tokenizer's.
        family: a family name (``"qwen3"``) instead of detection.
        strict: raise when no family recognises the template.
        stop_strings: override the family's stop strings.
        reasoning_policy: ``"error"`` or ``"drop"`` (counted in ``stats``) for
            reasoning the template does not render and the family cannot format.
        history_reasoning: ``"template"`` or ``"keep"`` (the template's own switch).
        train_turns: ``"all"`` assistant turns without ``loss: false``, or ``"last"``.
        conversation_index: the dataset row, named in errors.
        stats: an ``EncodeStats`` to add this conversation's counts to.

    Returns:
        The fewest samples whose every trained turn has its exact inference prefix.
    """
    encoder = get_encoder(tokenizer, chat_template=chat_template, family=family, strict=strict,
                          stop_strings=stop_strings)
    return encoder.encode(
        messages, tools, chat_template_kwargs, reasoning_policy=reasoning_policy,
        history_reasoning=history_reasoning, train_turns=train_turns, conversation_index=conversation_index,
        stats=stats,
    )
