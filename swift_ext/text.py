"""String helpers shared by the core, the rollout checks and the diagnostics."""

from __future__ import annotations

import os


def common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    return len(os.path.commonprefix((a, b)))


def common_suffix_len(a: str, b: str) -> int:
    """Length of the longest common suffix of two strings.

    Compares growing chunks from the end, so a mismatch near the end (the usual
    case when searching candidates) costs almost nothing."""
    limit, done, step = min(len(a), len(b)), 0, 16
    while done < limit:
        size = min(step, limit - done)
        if a[len(a) - done - size:len(a) - done] != b[len(b) - done - size:len(b) - done]:
            return done + len(os.path.commonprefix((a[len(a) - done - size:len(a) - done][::-1],
                                                    b[len(b) - done - size:len(b) - done][::-1])))
        done += size
        step *= 2
    return done
