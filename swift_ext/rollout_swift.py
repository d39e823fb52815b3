"""ms-swift GRPO: encode conversations whose assistant turns are token ids, and make logprob mismatches loud.

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

ms-swift turns importance-sampling correction off without a word when the rollout logprobs do not match the
completion tokens one for one (``build_rollout_logps`` returns None; the multi-turn loop empties
``rollout_logprobs``). ``install_logprob_guard`` wraps ``build_rollout_logps`` to raise (or warn) instead.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .core import Encoder, get_encoder
from .errors import InputError
from .rollout.diagnose import RolloutAlignmentError, alignment_error
from .rollout.prompts import PromptBuilder, stop_length
from .rollout.record import GeneratedTurn, MessageParser, RolloutRecord, ToolCallParser, text_from_ids
from .types import IGNORE_INDEX

logger = logging.getLogger(__name__)


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
class TokenTurnEncoding:
    """Result of ``encode_token_turns``."""

    input_ids: list[int]
    labels: list[int]
    loss_scale: list[float]
    turns: list[tuple[int, int, int]] = field(default_factory=list)
    """(message index, start, end): ``input_ids[start:end]`` are the turn's ids; ``input_ids[:start]`` is the
    prompt the turn was sampled from."""
    is_training: bool = True

    def swift_contexts(self) -> tuple[list[list[int]], list[float], int]:
        """``(context_list, loss_scale_list, answer_len)`` as ms-swift's ``Template._jinja_encode`` returns them."""
        contexts: list[list[int]] = []
        scales: list[float] = []
        for token, scale in zip(self.input_ids, self.loss_scale):
            if scales and scales[-1] == scale:
                contexts[-1].append(token)
            else:
                contexts.append([token])
                scales.append(scale)
        return contexts, scales, 1 if self.is_training else 0

    @property
    def num_labels(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


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
            needs ``swift_ext.rollout.record.parse_harmony`` (its template refuses channel tags in content).
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
    prefix = list(response_prefix_ids or ())
    text_messages: list[dict[str, Any]] = []
    turns: list[tuple[int, list[int], list[float]]] = []
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
    if not turns:
        if is_training:
            raise InputError("no assistant message has token-id content: nothing was sampled to train on",
                             rule="rollout-input")
        # The first rollout turn: the plain generation prompt.
        builder = PromptBuilder(encoder, RolloutRecord(text_messages, tools or None, dict(chat_template_kwargs or {}),
                                                       []), dict(chat_template_kwargs or {}), {})
        add = not (text_messages and text_messages[-1].get("role") == "assistant")
        prompt = encoder.tokens.encode(builder.render(len(text_messages), add_generation_prompt=add))
        return TokenTurnEncoding(prompt, [IGNORE_INDEX] * len(prompt), [0.0] * len(prompt), [], False)
    generated = [GeneratedTurn(message_index=i, ordinal=n, token_ids=tuple(ids), logprobs=None)
                 for n, (i, ids, _) in enumerate(turns)]
    record = RolloutRecord(text_messages, tools or None, dict(chat_template_kwargs or {}), generated)
    builder = PromptBuilder(encoder, record, dict(record.chat_template_kwargs), {})
    input_ids: list[int] = []
    scales_out: list[float] = []
    spans: list[tuple[int, int, int]] = []
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
        spans.append((index, len(input_ids), len(input_ids) + len(ids)))
        input_ids.extend(ids)
        scales_out.extend(scales)
        previous = turn
    last = turns[-1][0]
    if last < len(text_messages) - 1:
        tail = builder.tail_after(previous, len(text_messages), add_generation_prompt=not is_training)
        context = encoder.tokens.encode(tail)
        input_ids.extend(context)
        scales_out.extend([0.0] * len(context))
    labels = [t if s > 0 else IGNORE_INDEX for t, s in zip(input_ids, scales_out)]
    if logprob_counts is not None:
        check_turn_logprob_counts(spans, scales_out, logprob_counts)
    return TokenTurnEncoding(input_ids, labels, scales_out, spans, is_training)


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


def check_turn_logprob_counts(spans: Sequence[tuple[int, int, int]], loss_scale: Sequence[float],
                              logprob_counts: Sequence[int]) -> None:
    """Each id turn's trained positions must match its rollout logprobs one for one."""
    if len(logprob_counts) != len(spans):
        raise alignment_error(
            rule="rollout-logprob-count", turn=None, message_index=None, consumed=len(spans),
            expected=len(logprob_counts),
            headline=f"{len(spans)} token-id turns but rollout logprobs for {len(logprob_counts)} turns: ms-swift "
                     "would silently turn off importance-sampling correction", cause=None)
    for ordinal, ((index, start, end), count) in enumerate(zip(spans, logprob_counts)):
        trained = sum(1 for s in loss_scale[start:end] if s > 0)
        if trained != count:
            raise alignment_error(
                rule="rollout-logprob-count", turn=ordinal, message_index=index, consumed=trained, expected=count,
                headline=f"token-id turn #{ordinal} (message {index}) has {trained} trained tokens but {count} "
                         "rollout logprobs: ms-swift would silently turn off importance-sampling correction",
                cause="dropped-token" if trained == count - 1 else "inserted-token" if trained == count + 1 else None)


# ------------------------------------------------------------------------------ IS-correction guard
def explain_logprob_mismatch(rollout_logprobs: Sequence[Any], completion_counts: Sequence[int]) -> list[str]:
    """Why ms-swift's ``build_rollout_logps`` would return None for this batch (empty list: it would not).

    ``rollout_logprobs``: per sample, nested per turn (``OnPolicySample.rollout_logprobs``) or None/empty;
    ``completion_counts``: per sample, the number of completion (labelled) tokens.
    """
    problems = []
    present = [bool(lp) for lp in rollout_logprobs]
    if not any(present):
        return []
    for i, (nested, count) in enumerate(zip(rollout_logprobs, completion_counts)):
        if not nested:
            problems.append(f"sample {i} has no rollout logprobs (ms-swift empties them when a multi-turn "
                            "rollout's logprobs do not match its loss mask) while other samples have them")
            continue
        flat = [lp for turn in nested for lp in (turn if isinstance(turn, (list, tuple)) else [turn])]
        if any(lp is None for lp in flat):
            problems.append(f"sample {i} has a None logprob")
        elif len(flat) not in (count, count + 1):
            problems.append(f"sample {i}: {len(flat)} rollout logprobs for {count} completion tokens")
    return problems


def install_logprob_guard(mode: str = "raise", module: Any = None):
    """Wrap ms-swift's ``build_rollout_logps`` so a mismatch that would silently disable importance-sampling
    correction raises ``RolloutAlignmentError`` (``mode="raise"``) or logs a warning (``"warn"``).

    ``module``: where ``build_rollout_logps`` lives (default ``swift.rlhf_trainers.utils``, whose
    ``collate_to_grpo_micro_batch`` looks it up at call time). Returns a function that removes the guard.
    """
    if mode not in ("raise", "warn"):
        raise ValueError("mode must be 'raise' or 'warn'")
    if module is None:
        from swift.rlhf_trainers import utils as module
    swift_utils = module

    original = getattr(swift_utils.build_rollout_logps, "__wrapped_by_swift_ext__", swift_utils.build_rollout_logps)

    def guarded(rollout_logprobs_list, completion_mask, device):
        result = original(rollout_logprobs_list, completion_mask, device)
        if result is None:
            counts = [int(row.sum().item()) for row in completion_mask]
            problems = explain_logprob_mismatch(list(rollout_logprobs_list), counts)
            if problems:
                message = ("[swift-ext] ms-swift would silently turn off rollout importance-sampling correction "
                           "for this batch: " + "; ".join(problems) + ". The completion tokens (labels != -100) "
                           "must be exactly the sampled tokens with loss_mask 1.")
                if mode == "raise":
                    raise RolloutAlignmentError(message, rule="rollout-is-disabled")
                warnings.warn(message, stacklevel=2)
                logger.warning(message)
        return result

    guarded.__wrapped_by_swift_ext__ = original
    swift_utils.build_rollout_logps = guarded

    def uninstall() -> None:
        swift_utils.build_rollout_logps = original

    return uninstall


__all__ = [
    "TokenTurnEncoding",
    "check_turn_logprob_counts",
    "encode_token_turns",
    "explain_logprob_mismatch",
    "has_token_id_content",
    "install_logprob_guard",
    "token_content_ids",
]
