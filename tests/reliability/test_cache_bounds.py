"""The piece cache is bounded in bytes, the bound is honest, and it stays exact whatever it evicts.

It used to be capped at 200,000 entries: about 10 GB per process for conversations of ~1.7k-token messages.
"""

from __future__ import annotations

import copy
import gc
import random
import sys
import tracemalloc

import pytest
from conftest import oracle_ids, oracle_prompt_ids, tokenizer

import swift_ext
from swift_ext.errors import PolicyError
from swift_ext.tokens import CACHE_ENV_VAR, SegmentTokenizer, cache_budget

MiB = 1 << 20


def _own_tokenizer(name: str):
    """A tokenizer no other test shares (the fixtures' are cached per process, and so are their encoders),
    so the bound set in this test is the one its encoder is built with."""
    return copy.deepcopy(tokenizer(name))
WORDS = ("the", "model", "answers", "quickly", "über", "naïve", "你好", "token", "cache", "bytes", "=", "(x)", "\n")


def _long_message(rng: random.Random, tokens: int = 1700) -> str:
    """About ``tokens`` tokens of text nobody else wrote (so every such message is a new cache entry)."""
    words = [rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in range(tokens // 2)]
    return " ".join(words)


def _long_conversation(rng: random.Random) -> list[dict]:
    return [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": _long_message(rng)},
        {"role": "assistant", "content": _long_message(rng)},
        {"role": "user", "content": "And in short?"},
        {"role": "assistant", "content": "In short: yes."},
    ]


def test_default_bound_is_256_mib(monkeypatch):
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    assert cache_budget() == 256 * MiB
    assert SegmentTokenizer(tokenizer("qwen3")).cache_bytes == 256 * MiB


def test_environment_variable_and_argument_set_the_bound(monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, "1.5")
    tok = _own_tokenizer("qwen3")
    assert SegmentTokenizer(tok).cache_bytes == int(1.5 * MiB)
    assert SegmentTokenizer(tok, cache_bytes=12345).cache_bytes == 12345  # the argument wins
    assert swift_ext.get_encoder(tok).tokens.cache_bytes == int(1.5 * MiB)  # what encode() uses


@pytest.mark.parametrize("value", ["lots", "-1", "nan"])
def test_bad_cache_size_is_a_policy_error(monkeypatch, value):
    monkeypatch.setenv(CACHE_ENV_VAR, value)
    tok = _own_tokenizer("qwen3")
    with pytest.raises(PolicyError) as info:
        swift_ext.encode(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert info.value.rule == "policy-token-cache"
    assert CACHE_ENV_VAR in str(info.value)


def test_long_messages_keep_the_cache_under_its_bound(monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, "1")
    tok = _own_tokenizer("qwen3")
    tokens = swift_ext.get_encoder(tok).tokens
    assert tokens.memoised and tokens.cache_bytes == MiB
    rng = random.Random(0)
    peak = 0
    for k in range(40):
        messages = _long_conversation(rng)
        samples = swift_ext.encode(tok, messages)
        peak = max(peak, tokens.cached_bytes)
        assert tokens.cached_bytes <= tokens.cache_bytes, k
        if k % 10 == 0:  # still exact after evictions
            for sample in samples:
                for span in sample.turns:
                    prompt = oracle_prompt_ids(tok, messages[: span.message_index])
                    assert sample.input_ids[: span.label_start] == prompt
    assert tokens.evictions >= 5
    assert peak > tokens.cache_bytes // 2  # the bound is used, not just respected


def _distinct_texts(tok, count: int, message_tokens: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = [_long_message(rng, message_tokens) for _ in range(4)]
        texts.append("<|im_start|>user\n" + "<|im_end|>\n<|im_start|>assistant\n".join(parts) + "<|im_end|>\n")
    return texts


@pytest.mark.parametrize(("message_tokens", "count"), [(1700, 20), (6, 1500)], ids=["long-pieces", "short-pieces"])
def test_accounted_bytes_are_honest(message_tokens, count):
    """What the cache counts is what it holds, within a factor of 1.5: measured by tracemalloc (every Python
    allocation the cached strings, lists, ints and dict slots made) and by summing ``sys.getsizeof``."""
    tok = tokenizer("qwen3")
    tokens = SegmentTokenizer(tok, split_on=tok.chat_template, cache_bytes=1 << 40)  # nothing evicted
    assert tokens.memoised
    texts = _distinct_texts(tok, count, message_tokens, seed=message_tokens)
    before = tokens.cached_bytes
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for text in texts:
            tokens.encode(text)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    accounted = tokens.cached_bytes - before
    assert 1 / 1.5 <= held / accounted <= 1.5, (held, accounted)

    entries = {**tokens._old, **tokens._young}
    summed = sum(sys.getsizeof(piece) + sys.getsizeof(ids) + sum(sys.getsizeof(i) for i in ids if i > 256)
                 for piece, ids in entries.items()) + sys.getsizeof(tokens._young) + sys.getsizeof(tokens._old)
    assert 1 / 1.5 <= summed / tokens.cached_bytes <= 1.5, (summed, tokens.cached_bytes)


def test_hot_pieces_survive_evictions():
    """Eviction drops what was not used lately: a system prompt in every conversation is tokenized once,
    however many generations the unique messages push through."""
    tok = tokenizer("qwen3")
    tokens = SegmentTokenizer(tok, split_on=tok.chat_template, cache_bytes=MiB // 2)
    calls: list[str] = []
    backend = tokens._backend
    original = backend.encode_batch

    class Counting:
        def __getattr__(self, name):
            return getattr(backend, name)

        def encode_batch(self, pieces, **kwargs):
            calls.extend(pieces)
            return original(pieces, **kwargs)

    tokens._backend = Counting()
    system = "<|im_start|>system\nYou are a careful assistant who cites sources.<|im_end|>\n"
    hot = "system\nYou are a careful assistant who cites sources."
    rng = random.Random(1)
    for _ in range(60):
        text = system + "<|im_start|>user\n" + _long_message(rng, 600) + "<|im_end|>\n"
        assert tokens.encode(text) == oracle_ids(tok, text)
    assert tokens.evictions >= 5
    assert calls.count(hot) == 1


def test_pieces_too_big_for_the_bound_are_tokenized_each_time():
    tok = tokenizer("qwen3")
    tokens = SegmentTokenizer(tok, split_on=tok.chat_template, cache_bytes=20_000)
    text = "<|im_start|>user\n" + _long_message(random.Random(2), 1700) + "<|im_end|>\n"
    for _ in range(3):
        assert tokens.encode(text) == oracle_ids(tok, text)
    assert tokens.cached_bytes <= 20_000


def test_zero_bound_turns_memoisation_off_and_stays_exact(monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, "0")
    tok = _own_tokenizer("qwen3")
    messages = _long_conversation(random.Random(3))
    samples = swift_ext.encode(tok, messages)
    assert swift_ext.get_encoder(tok).tokens.cached_bytes == 0
    for sample in samples:
        for span in sample.turns:
            assert sample.input_ids[: span.label_start] == oracle_prompt_ids(tok, messages[: span.message_index])
