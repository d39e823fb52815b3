"""String helpers shared by the core, the rollout checks and the diagnostics.

Renderings of one conversation share thousands of characters; both helpers
compare growing chunks (string slices compare in C) and look at single
characters only inside the chunk where the strings part.
"""

from __future__ import annotations

import os


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
