"""ms-swift GRPO: encode conversations whose assistant turns are token ids.

ms-swift 4.6's GRPO passes each generated turn to ``Template.encode`` as token-id content: a ``List[int]`` or
``{'token_ids': [...], 'loss_scale': [...]}`` (``replace_assistant_response_with_ids`` in
``swift/rlhf_trainers/utils.py``; multi-turn schedulers put the previous turn back into the next request the
same way, ``set_assistant_message_token_ids``). The rollout engine builds its prompt with the same template, in
inference mode, from the same messages. So one function serves both sides:

- ``encode_token_turns(..., is_training=False)``: the prompt ids the engine is fed;
- ``encode_token_turns(..., is_training=True)``: the training ids, whose part before each turn is exactly the
  prompt that turn was sampled from, the turn's ids verbatim after it, labels where ``loss_scale > 0``.

Token-id turns are raw history: their ids stay verbatim (reasoning included) and only what comes after them
(tool results, user messages, the generation prompt) is rendered by the chat template, as ms-swift's own
``swift`` backend also does with id content. The masked response prefix ms-swift injects in front of the
sampled ids (``<think>\\n`` etc., ``get_response_prefix_ids``) was prompt context, not sampled: it is removed
from the turn, and is in the prompt exactly when the template's generation prompt holds it.

A family whose generated text is not the default ``<think>`` split names its parser (``Family.message_parser``,
``[rollout] message_parser`` in its TOML; gpt-oss: ``harmony``): ``message_parser_for``.

``check_turn_logprob_counts`` checks each id turn against its rollout logprobs; ``logprob_guard.py`` makes
ms-swift's own silent check loud.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..core import Encoder, get_encoder
from ..errors import InputError
from ..families import Family
from ..rollout.diagnose import alignment_error
from ..rollout.prompts import PromptBuilder, stop_length
from ..rollout.record import GeneratedTurn, MessageParser, RolloutRecord, ToolCallParser, parse_harmony, text_from_ids
from ..types import IGNORE_INDEX, Sample, TurnSpan
from .encoding import contexts

MESSAGE_PARSERS: Mapping[str, MessageParser] = MappingProxyType({"harmony": parse_harmony})
"""``Family.message_parser`` -> the function that splits a generated turn's text into message fields."""


def message_parser_for(family: Family) -> MessageParser | None:
    """The family's parser of a generated turn's text (None: the default ``<think>`` split)."""
    return None if family.message_parser is None else MESSAGE_PARSERS[family.message_parser]


def token_content_ids(content: Any) -> list[int] | None:
    """The ids of token-id content (as ms-swift's ``get_token_backed_response_ids`` reads it), else None."""
    if isinstance(content, Mapping):
        ids = content.get("token_ids", content.get("input_ids"))
    elif isinstance(content, list) and content and all(isinstance(x, int) and not isinstance(x, bool)
                                                       for x in content):
        ids = content
    else:
        return None
    if not isinstance(ids, list) or any(not isinstance(x, int) or isinstance(x, bool) for x in ids):
        return None
    return list(ids)


def has_token_id_content(messages: Sequence[Mapping[str, Any]]) -> bool:
    """True when any assistant message's content is token ids (the GRPO rollout/training path)."""
    return any(m.get("role") == "assistant" and token_content_ids(m.get("content")) is not None for m in messages)


@dataclass
class TokenTurnEncoding(Sample):
    """Result of ``encode_token_turns``: a ``Sample`` whose ``loss_scale`` is the turns' own and whose ``turns`` are
    the id turns (``input_ids[label_start:label_end]`` are the turn's ids; ``input_ids[:prompt_end]`` is the prompt
    it was sampled from)."""

    is_training: bool = True

    def swift_contexts(self) -> tuple[list[list[int]], list[float], int]:
        """``(context_list, loss_scale_list, answer_len)`` as ms-swift's ``Template._jinja_encode`` returns them."""
        return (*contexts(self.input_ids, self.loss_scale or []), 1 if self.is_training else 0)


def encode_token_turns(
    encoder: Encoder | Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    is_training: bool = True,
    response_prefix_ids: Sequence[int] | None = None,
    tool_call_parser: ToolCallParser | None = None,
    message_parser: MessageParser | None = None,
    logprob_counts: Sequence[int] | None = None,
) -> TokenTurnEncoding:
    """Encode an HF-form conversation (system message included) whose generated assistant turns are token ids.

    Args:
        encoder: a ``swift_ext.Encoder`` (the parity template's ``parity_encoder``) or a tokenizer.
        messages: role/content dicts; an assistant ``content`` may be ``List[int]`` or
            ``{'token_ids': [...], 'loss_scale': [...]}`` (``input_ids`` is accepted for ``token_ids``).
            Other messages are text, rendered by the chat template. A trailing assistant message with
            ``content=None`` (ms-swift's placeholder) is ignored.
        tools, chat_template_kwargs: as given to the engine.
        is_training: False for the engine's prompt (ends with the generation prompt, or with the last turn's ids
            when the conversation ends on an assistant turn: a continuation; with no id turn yet, the plain
            generation prompt); True for training ids.
        response_prefix_ids: the ids ms-swift prepends (masked) to each response, i.e.
            ``tokenizer.encode(template._get_response_prefix(inputs), add_special_tokens=False)``.
        tool_call_parser: text -> OpenAI ``tool_calls`` for an id turn, for templates that need the call to
            render the tool results after it; the Qwen3, GLM and DeepSeek templates do not.
        message_parser: text -> message fields for an id turn, replacing the default ``<think>`` split; gpt-oss
            needs ``swift_ext.rollout.record.parse_harmony`` (its template refuses channel tags in content):
            ``message_parser_for(encoder.family)``.
        logprob_counts: when known, the number of rollout logprobs of each id turn: each must equal the number of
            the turn's ids with ``loss_scale > 0``, else ``RolloutAlignmentError`` (ms-swift would silently turn
            off importance-sampling correction).

    Returns:
        ``TokenTurnEncoding``; ``.swift_contexts()`` is what ``_jinja_encode`` returns.
    """
    if not isinstance(encoder, Encoder):
        encoder = get_encoder(encoder)
    messages = [dict(m) for m in messages]
    while messages and messages[-1].get("role") == "assistant" and messages[-1].get("content") is None \
            and not messages[-1].get("tool_calls"):
        messages.pop()
    text_messages, turns = _id_turns(encoder, messages, list(response_prefix_ids or ()), tool_call_parser,
                                     message_parser)
    kwargs = dict(chat_template_kwargs or {})
    if not turns:
        if is_training:
            raise InputError("no assistant message has token-id content: nothing was sampled to train on",
                             rule="rollout-input")
        return _first_prompt(encoder, text_messages, tools, kwargs)
    input_ids, scales, spans = _assemble(encoder, text_messages, turns, tools, kwargs, is_training)
    labels = [t if s > 0 else IGNORE_INDEX for t, s in zip(input_ids, scales)]
    if logprob_counts is not None:
        check_turn_logprob_counts(spans, scales, logprob_counts)
    return TokenTurnEncoding(input_ids, labels, spans, loss_scale=scales, is_training=is_training)


IdTurn = tuple[int, list[int], list[float]]
"""(message index, the turn's ids, their loss scales)."""


def _id_turns(encoder: Encoder, messages: list[dict[str, Any]], prefix: list[int],
              tool_call_parser: ToolCallParser | None,
              message_parser: MessageParser | None) -> tuple[list[dict[str, Any]], list[IdTurn]]:
    """The messages with each id turn as text (for the template to render what follows it), and the id turns."""
    text_messages: list[dict[str, Any]] = []
    turns: list[IdTurn] = []
    for index, message in enumerate(messages):
        ids = token_content_ids(message.get("content")) if message.get("role") == "assistant" else None
        if ids is None:
            text_messages.append(message)
            continue
        content = message.get("content")
        scales = _scales(content, ids, index)
        explicit = isinstance(content, Mapping) and content.get("loss_scale") is not None
        if prefix and ids[:len(prefix)] == prefix and (not explicit or all(s == 0 for s in scales[:len(prefix)])):
            # ms-swift's injected response prefix: prompt context, never sampled (see the module doc). A plain
            # id list is how ms-swift puts a finished turn back into the next request, prefix included.
            ids, scales = ids[len(prefix):], scales[len(prefix):]
        text = {k: v for k, v in message.items() if k not in ("content", "loss_scale", "loss")}
        text.update(text_from_ids(ids, encoder.tokens.decode, encoder.stop_strings, tool_call_parser,
                                  message_parser, stop_tokens=stop_length(encoder, ids)))
        text_messages.append(text)
        turns.append((index, ids, scales))
    return text_messages, turns


def _first_prompt(encoder: Encoder, text_messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                  kwargs: dict[str, Any]) -> TokenTurnEncoding:
    """The first rollout turn (no id turn yet): the plain generation prompt."""
    builder = PromptBuilder(encoder, RolloutRecord(text_messages, tools or None, dict(kwargs), []), dict(kwargs), {})
    add = not (text_messages and text_messages[-1].get("role") == "assistant")
    prompt = encoder.tokens.encode(builder.render(len(text_messages), add_generation_prompt=add))
    return TokenTurnEncoding(prompt, [IGNORE_INDEX] * len(prompt), [], loss_scale=[0.0] * len(prompt),
                             is_training=False)


def _assemble(encoder: Encoder, text_messages: list[dict[str, Any]], turns: list[IdTurn],
              tools: list[dict[str, Any]] | None, kwargs: dict[str, Any],
              is_training: bool) -> tuple[list[int], list[float], list[TurnSpan]]:
    """Each turn's prompt context then its ids verbatim, then what follows the last one: (ids, scales, spans)."""
    generated = [GeneratedTurn(message_index=i, ordinal=n, token_ids=tuple(ids), logprobs=None)
                 for n, (i, ids, _) in enumerate(turns)]
    record = RolloutRecord(text_messages, tools or None, dict(kwargs), generated)
    builder = PromptBuilder(encoder, record, dict(record.chat_template_kwargs), {})
    input_ids: list[int] = []
    scales_out: list[float] = []
    spans: list[TurnSpan] = []
    previous: GeneratedTurn | None = None
    for turn, (index, ids, scales) in zip(generated, turns):
        if previous is None:
            context = builder.strip_prompt(index)
        else:
            context = encoder.tokens.encode(builder.tail_after(previous, index))
        input_ids.extend(context)
        scales_out.extend([0.0] * len(context))
        # Leading masked ids the prompt already ends with (a response prefix the generation prompt holds).
        overlap = _masked_overlap(input_ids, ids, scales)
        ids, scales = ids[overlap:], scales[overlap:]
        builder.turn_ids[index] = ids
        spans.append(TurnSpan(index, len(input_ids), len(input_ids), len(input_ids) + len(ids), ordinal=turn.ordinal))
        input_ids.extend(ids)
        scales_out.extend(scales)
        previous = turn
    if turns[-1][0] < len(text_messages) - 1:
        tail = builder.tail_after(previous, len(text_messages), add_generation_prompt=not is_training)
        context = encoder.tokens.encode(tail)
        input_ids.extend(context)
        scales_out.extend([0.0] * len(context))
    return input_ids, scales_out, spans


def _scales(content: Any, ids: list[int], index: int) -> list[float]:
    if isinstance(content, Mapping) and content.get("loss_scale") is not None:
        scales = [float(s) for s in content["loss_scale"]]
        if len(scales) != len(ids):
            raise InputError(f"token_ids ({len(ids)}) and loss_scale ({len(scales)}) differ in length",
                             rule="rollout-input", message_index=index)
        return scales
    return [1.0] * len(ids)


def _masked_overlap(context: list[int], ids: list[int], scales: list[float]) -> int:
    leading = 0
    while leading < len(ids) and scales[leading] == 0:
        leading += 1
    for k in range(min(leading, len(context)), 0, -1):
        if context[-k:] == ids[:k]:
            return k
    return 0


def check_turn_logprob_counts(spans: Sequence[TurnSpan], loss_scale: Sequence[float],
                              logprob_counts: Sequence[int]) -> None:
    """Each id turn's trained positions must match its rollout logprobs one for one."""
    if len(logprob_counts) != len(spans):
        raise alignment_error(
            rule="rollout-logprob-count", turn=None, message_index=None, consumed=len(spans),
            expected=len(logprob_counts),
            headline=f"{len(spans)} token-id turns but rollout logprobs for {len(logprob_counts)} turns: ms-swift "
                     "would silently turn off importance-sampling correction", cause=None)
    for ordinal, (span, count) in enumerate(zip(spans, logprob_counts)):
        index = span.message_index
        trained = sum(1 for s in loss_scale[span.label_start:span.label_end] if s > 0)
        if trained != count:
            raise alignment_error(
                rule="rollout-logprob-count", turn=ordinal, message_index=index, consumed=trained, expected=count,
                headline=f"token-id turn #{ordinal} (message {index}) has {trained} trained tokens but {count} "
                         "rollout logprobs: ms-swift would silently turn off importance-sampling correction",
                cause="dropped-token" if trained == count - 1 else "inserted-token" if trained == count + 1 else None)


__all__ = [
    "MESSAGE_PARSERS",
    "TokenTurnEncoding",
    "check_turn_logprob_counts",
    "encode_token_turns",
    "has_token_id_content",
    "message_parser_for",
    "token_content_ids",
]
