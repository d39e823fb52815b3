"""Small string helpers for showing where two renderings part."""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher


def around(text: str, at: int, before: int = 40, after: int = 60) -> str:
    """The part of ``text`` around position ``at``, with ellipses where it was cut."""
    start, end = max(0, at - before), min(len(text), at + after)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def rewrite(old: str, new: str, boundaries: Sequence[int] = ()) -> tuple[str, str]:
    """The edit turning ``old`` into the start of ``new``: ``(removed, inserted)``.

    Both start at the first difference; ``new`` may run on past ``old`` (later
    turns follow). A pure removal (``new`` goes on with the rest of ``old``) or a
    pure insertion is tried first; otherwise a character diff over a window a
    little longer than ``old`` is widened to the token ``boundaries`` of ``old``
    so it reads as whole tokens (``<|return|>`` -> ``<|end|>``).
    """
    window = new[: 2 * len(old) + 64]
    for k in range(1, len(old)):
        if new.startswith(old[k:]):
            return old[:k], ""
    for j in range(1, len(window) - len(old) + 1):
        if window[j:].startswith(old):
            return "", window[:j]
    return _diff(old, window[: len(old) + len(old) // 2 + 16], boundaries)


def _diff(old: str, window: str, boundaries: Sequence[int]) -> tuple[str, str]:
    ops = SequenceMatcher(None, old, window, autojunk=False).get_opcodes()
    edits = [op for op in ops if op[0] != "equal" and not (op[0] == "insert" and op[1] == len(old))]
    if not edits:
        return "", ""
    i1, j1, i2, j2 = edits[0][1], edits[0][3], edits[-1][2], edits[-1][4]
    start = max((b for b in [0, *boundaries] if b <= i1), default=0)
    end = min((b for b in [*boundaries, len(old)] if b >= i2), default=len(old))
    return old[start:end], window[j1 - (i1 - start): j2 + (end - i2)]
