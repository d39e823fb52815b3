"""Alignment failures between a rollout and training tokens, and what probably caused them.

Every failure is a ``RolloutAlignmentError`` (a ``ParityError``) whose ``rule`` says which check failed and
whose ``cause`` is a stable key for the likely cause:

==============================  ====================================================================
cause                           meaning
==============================  ====================================================================
``history-reasoning-stripped``  the template dropped an earlier turn's reasoning that the sampled ids hold
``history-reasoning-kept``      the tokens keep an earlier turn's reasoning that the engine's prompt lacked
``thinking-switch``             the engine ran with the other thinking setting (``enable_thinking`` ...)
``retokenized-boundary``        same text, different ids: text was re-tokenized (a BPE merge across a boundary)
``tool-arguments``              a tool call's arguments are rendered differently from what was sampled
``dropped-token``               one token is missing
``inserted-token``              one token too many
``reasoning-missing``           the ids hold reasoning the record's message does not carry
``turn-text-differs``           the ids are not the turn's text
``template-differs``            a part the template renders differs (template, kwargs or tools differ)
==============================  ====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import ParityError
from ..messages import REASONING_ALIASES
from ..text import first_token_difference

CAUSES = {
    "history-reasoning-stripped": (
        "history reasoning stripped by the template: an earlier turn's reasoning, which the engine sampled (and "
        "which the rollout's logprobs cover), is missing from the re-rendered tokens"),
    "history-reasoning-kept": (
        "history reasoning kept: the tokens hold an earlier turn's reasoning that the engine's prompt, rendered by "
        "the template, did not have"),
    "thinking-switch": "thinking switch differs: the engine ran with the other thinking setting",
    "retokenized-boundary": (
        "retokenization at a boundary: the text is the same but its ids differ (text was tokenized again, "
        "in pieces or after decoding, instead of keeping the sampled ids)"),
    "tool-arguments": (
        "tool-argument rendering: the template renders the tool call's arguments differently from what the model "
        "generated (JSON spacing, key order, dict vs string)"),
    "dropped-token": "a dropped token: one sampled token is missing",
    "inserted-token": "an inserted token: one token more than was sampled",
    "reasoning-missing": (
        "reasoning missing from the record: the sampled ids hold reasoning that the message does not carry (it was "
        "stripped before the rollout was stored, or stored under a key the template does not read)"),
    "turn-text-differs": "the sampled ids are not the turn's text in the record",
    "template-differs": (
        "a template-rendered part differs: the chat template, chat_template_kwargs or tools differ from the "
        "engine's"),
}

FIXES = {
    "history-reasoning-stripped": (
        "build the samples with swift_ext.rollout.encode_rollout(..., engine_history='keep') if the engine kept "
        "raw history (the tokens then hold the sampled ids verbatim), or 'strip' to follow the template (one sample "
        "per rewritten history); never re-render the whole conversation once"),
    "history-reasoning-kept": "use engine_history='strip' (the engine re-rendered the conversation each turn)",
    "thinking-switch": "pass the engine's chat_template_kwargs (e.g. {'enable_thinking': False}) with the record",
    "retokenized-boundary": "keep the engine's token ids; never decode and re-tokenize generated text",
    "tool-arguments": (
        "store the tool call exactly as the engine returned it (arguments as the JSON text the model wrote), or "
        "keep raw history (engine_history='keep')"),
    "dropped-token": "store token_ids and logprobs exactly as the engine returned them",
    "inserted-token": "store token_ids and logprobs exactly as the engine returned them",
    "reasoning-missing": "store the engine's reasoning_content with the message (or pass the turn as ids only)",
    "turn-text-differs": "check that token_ids belong to this message, or pass check_text=False to rely on the ids",
    "template-differs": "pass the engine's chat template, tools and chat_template_kwargs with the record",
}


class RolloutAlignmentError(ParityError):
    """A rollout's tokens or logprobs do not line up with the training tokens.

    Attributes: ``turn`` (0-based generated-turn number), ``message_index``, ``consumed`` (tokens the training
    side holds for the turn), ``expected`` (logprobs / sampled ids of the turn), ``position`` (first differing
    token), ``cause`` (a key of ``CAUSES``), ``fix``.
    """

    rule = "rollout-alignment"

    def __init__(self, detail: str, *, rule: str, message_index: int | None = None, turn: int | None = None,
                 consumed: int | None = None, expected: int | None = None, position: int | None = None,
                 cause: str | None = None, conversation_index: int | None = None) -> None:
        self.turn = turn
        self.consumed = consumed
        self.expected = expected
        self.position = position
        self.cause = cause
        self.fix = FIXES.get(cause or "")
        super().__init__(detail, rule=rule, conversation_index=conversation_index, message_index=message_index)


def alignment_error(*, rule: str, headline: str, turn: int | None, message_index: int | None,
                    consumed: int | None = None, expected: int | None = None, position: int | None = None,
                    context: str | None = None, cause: str | None, because: str | None = None) -> RolloutAlignmentError:
    """Build the seed-000-style report: headline, consumed vs expected, first difference, likely cause."""
    lines = [headline]
    if consumed is not None:
        lines.append(f"  consumed: {consumed} tokens")
    if expected is not None:
        lines.append(f"  expected: {expected} (logprobs / sampled ids of the turn)")
        if consumed is not None and consumed < expected:
            lines.append(f"  difference: {expected - consumed} logprobs unmatched")
        elif consumed is not None and consumed > expected:
            lines.append(f"  difference: {consumed - expected} tokens without a logprob")
    if context:
        lines.append(context)
    if cause:
        lines.append(f"  LIKELY CAUSE ({cause}): {CAUSES[cause]}" + (f"; {because}" if because else ""))
        lines.append(f"  FIX: {FIXES[cause]}")
    return RolloutAlignmentError("\n".join(lines), rule=rule, message_index=message_index, turn=turn,
                                 consumed=consumed, expected=expected, position=position, cause=cause)




def token_context(decode, a: Sequence[int], b: Sequence[int], k: int, names: tuple[str, str],
                  width: int = 8) -> str:
    """Two lines showing the decoded tokens around position k on both sides, the differing token marked."""
    def show(ids: Sequence[int]) -> str:
        before = decode(list(ids[max(0, k - width):k]))
        at = decode(list(ids[k:k + 1])) if k < len(ids) else "<end>"
        after = decode(list(ids[k + 1:k + 1 + width])) if k < len(ids) else ""
        return f"{before!r} >>{at!r}<< {after!r}"

    pad = max(len(n) for n in names)
    return (f"  first difference at token {k}:\n"
            f"    {names[0]:<{pad}}: {show(a)}\n"
            f"    {names[1]:<{pad}}: {show(b)}")


def single_edit(actual: Sequence[int], expected: Sequence[int]) -> tuple[str, int] | None:
    """('dropped-token'|'inserted-token', position) when ``actual`` is ``expected`` with one token removed/added."""
    if len(actual) == len(expected) - 1:
        k = first_token_difference(actual, expected)
        if list(actual[k:]) == list(expected[k + 1:]):
            return "dropped-token", k
    if len(actual) == len(expected) + 1:
        k = first_token_difference(actual, expected)
        if list(actual[k + 1:]) == list(expected[k:]):
            return "inserted-token", k
    return None


_WS = re.compile(r"\s+")


def squash(text: str) -> str:
    return _WS.sub("", text)


def is_insertion(longer: str, shorter: str) -> bool:
    """``longer`` is ``shorter`` with one contiguous piece inserted (whitespace ignored)."""
    longer, shorter = squash(longer), squash(shorter)
    if len(longer) <= len(shorter):
        return False
    p = 0
    while p < len(shorter) and longer[p] == shorter[p]:
        p += 1
    s = 0
    while s < len(shorter) - p and longer[-1 - s] == shorter[-1 - s]:
        s += 1
    return p + s >= len(shorter)


def reasoning_of(message: dict[str, Any]) -> str | None:
    for key in REASONING_ALIASES:
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def tool_call_texts(message: dict[str, Any]) -> list[str]:
    """Names and argument values of a message's tool calls (to tell whether a difference sits in one)."""
    out = []
    for call in message.get("tool_calls") or ():
        function = call.get("function", call) if isinstance(call, dict) else {}
        if function.get("name"):
            out.append(str(function["name"]))
    return out
