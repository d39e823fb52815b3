"""The string helpers against their definitions."""

from hypothesis import given
from hypothesis import strategies as st

from swift_ext.text import common_prefix_len, common_suffix_len

texts = st.text(alphabet="ab<|>\n", max_size=300)


def _naive_suffix(a: str, b: str) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[-1 - k] == b[-1 - k]:
        k += 1
    return k


@given(texts, texts, texts)
def test_common_suffix_len(a, b, shared):
    assert common_suffix_len(a + shared, b + shared) == _naive_suffix(a + shared, b + shared) >= len(shared)


@given(texts, texts, texts)
def test_common_prefix_len(a, b, shared):
    n = common_prefix_len(shared + a, shared + b)
    assert n >= len(shared) and (shared + a)[:n] == (shared + b)[:n]
    assert n == min(len(a), len(b)) + len(shared) or (shared + a)[n] != (shared + b)[n]
