"""String helpers shared by the core, the rollout checks, the diagnostics and the fixtures.

Renderings of one conversation share thousands of characters; both helpers
compare growing chunks (string slices compare in C) and look at single
characters only inside the chunk where the strings part.
"""

from __future__ import annotations

import os
import re


def common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    limit, done, step = min(len(a), len(b)), 0, 64
    while done < limit:
        size = min(step, limit - done)
        if a[done:done + size] != b[done:done + size]:
            return done + len(os.path.commonprefix((a[done:done + size], b[done:done + size])))
        done += size
        step *= 2
    return done


def common_suffix_len(a: str, b: str) -> int:
    """Length of the longest common suffix of two strings."""
    limit, done, step = min(len(a), len(b)), 0, 16
    while done < limit:
        size = min(step, limit - done)
        tail_a, tail_b = a[len(a) - done - size:len(a) - done], b[len(b) - done - size:len(b) - done]
        if tail_a != tail_b:
            return done + len(os.path.commonprefix((tail_a[::-1], tail_b[::-1])))
        done += size
        step *= 2
    return done


def first_difference(expected: str, actual: str) -> str:
    """Where two texts part, with 30 characters of context on each side."""
    at = common_prefix_len(expected, actual)
    return (
        f"first difference at character {at}: expected {expected[max(0, at - 30):at + 30]!r}, "
        f"got {actual[max(0, at - 30):at + 30]!r}"
    )


def first_token_difference(a: list[int], b: list[int]) -> int:
    """Index of the first differing token of two id lists (the shorter length when one extends the other)."""
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def suffix_prefix_overlap(a: str, b: str, limit: int = 4096) -> int:
    """Length of the longest suffix of ``a`` that is a prefix of ``b`` (the text ``b`` repeats of ``a``'s tail),
    up to ``limit`` characters (the overlaps looked for are tags and headers, never whole turns)."""
    for k in range(min(len(a), len(b), limit), 0, -1):
        if a.endswith(b[:k]):
            return k
    return 0


# Control strings of chat templates: <|...|>, <|...>, <...|>, <seed:...>, [INST]-style brackets, Gemma-4's <|"|>.
_CONTROL = re.compile(r"<\|[^<>|\s]{1,40}\|>|<\|[^<>|\s]{1,40}>|<[^<>|\s/]{1,40}\|>|<seed:[a-z_]+>|</seed:[a-z_]+>"
                      r"|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|IMG)\]|<\|\"\|>")


def control_strings(template: str) -> list[str]:
    """The control strings a chat template writes (sorted), which a tokenizer must keep as single tokens."""
    return sorted(set(_CONTROL.findall(template)))
