"""String helpers shared by the core, the rollout checks and the diagnostics."""

from __future__ import annotations

import os


def common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    return len(os.path.commonprefix((a, b)))


def common_suffix_len(a: str, b: str) -> int:
    """Length of the longest common suffix of two strings."""
    return len(os.path.commonprefix((a[::-1], b[::-1])))
