"""Where the parts of a completion are: reasoning, answer, tool calls, stop string, and the template's glue.

A completion is the text the model generates for one turn (``TurnSpan.completion_text``). The core knows what the
turn holds (its reasoning, answer and tool calls) and how the family delimits reasoning, so it can say which
characters are which without splitting the string by patterns. Loss weights by kind (``swift_ext.ms_swift``'s
``parity_spans`` loss scale, LLaMA-Factory's ``span_weights``) are read from these parts.

Kinds: ``reasoning`` (a reasoning block, its tags and the whitespace after it), ``empty_reasoning`` (a block that
holds only whitespace: Qwen3's ``<think>\\n\\n</think>\\n\\n``), ``answer`` (the turn's content text),
``tool_call`` (from the end of the answer, or of the reasoning, to the stop string: every call the turn makes),
``stop`` (the stop string that ends the turn), ``other`` (what the template writes between them).
"""

from __future__ import annotations

from collections.abc import Sequence

from .messages import content_text
from .types import Message, Part

KINDS = ("reasoning", "empty_reasoning", "answer", "tool_call", "stop", "other")


def completion_parts(completion: str, message: Message, tags: Sequence[tuple[str, str]],
                     open_tags: tuple[str, str] | None, stop_strings: Sequence[str]) -> tuple[Part, ...]:
    """The parts of one completion, in order, covering it exactly.

    ``tags``: the family's reasoning delimiters; ``open_tags``: the block the generation prompt left open (the
    completion then starts inside it); ``stop_strings``: what can end the turn."""
    stop = next((s for s in sorted(stop_strings, key=len, reverse=True) if completion.endswith(s)), "")
    body_end = len(completion) - len(stop)
    parts: list[Part] = []
    reasoning_end = _reasoning(completion[:body_end], tags, open_tags, message, parts)
    answer = content_text(message.content).strip()
    at = completion.find(answer, reasoning_end, body_end) if answer else -1
    answer_span = (at, at + len(answer)) if at >= 0 else None
    calls = _calls(completion, message, reasoning_end, body_end, answer_span)
    for span, kind in ((answer_span, "answer"), (calls, "tool_call")):
        if span is not None and span[1] > span[0]:
            parts.append(Part(kind, *span))
    if stop:
        parts.append(Part("stop", body_end, len(completion)))
    return _fill(sorted(parts, key=lambda p: p.start), len(completion))


def _reasoning(body: str, tags: Sequence[tuple[str, str]], open_tags: tuple[str, str] | None, message: Message,
               parts: list[Part]) -> int:
    """Add the reasoning block's part; return where it ends (0: none)."""
    candidates = [open_tags] if open_tags else []
    candidates += [pair for pair in tags if body.lstrip().startswith(pair[0])]
    for opener, closer in candidates:
        close = body.find(closer)
        if close < 0:
            continue
        end = close + len(closer)
        end += len(body[end:]) - len(body[end:].lstrip())  # the whitespace after the block is the block's
        start = 0 if (opener, closer) == open_tags else body.find(opener)
        inner = body[start + (0 if (opener, closer) == open_tags else len(opener)):close]
        kind = "reasoning" if inner.strip() or (message.reasoning or "").strip() else "empty_reasoning"
        parts.append(Part(kind, start, end))
        return end
    return 0


def _calls(completion: str, message: Message, after: int, body_end: int,
           answer: tuple[int, int] | None) -> tuple[int, int] | None:
    """The region of the turn's tool calls: after the answer, or before it when the template renders calls
    first (where the first call's name appears decides)."""
    if not message.tool_calls:
        return None
    first = completion.find(message.tool_calls[0].name, after, body_end)
    if answer is None:
        return after, body_end
    if first >= 0 and first < answer[0]:
        return after, answer[0]
    return answer[1], body_end


def _fill(parts: list[Part], length: int) -> tuple[Part, ...]:
    """Cover ``[0, length)``: gaps between parts are ``other``; overlaps are cut to the earlier part."""
    out: list[Part] = []
    cursor = 0
    for part in parts:
        start = max(part.start, cursor)
        if start > cursor:
            out.append(Part("other", cursor, start))
        if part.end > start:
            out.append(Part(part.kind, start, part.end))
            cursor = part.end
    if cursor < length:
        out.append(Part("other", cursor, length))
    return tuple(out)


__all__ = ["KINDS", "Part", "completion_parts"]
