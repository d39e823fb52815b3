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


PROSE = ("the", "model", "answers", "quickly", "über", "naïve", "你好", "token", "cache", "bytes", "counted", "held",
         "memory", "bound", "evicted", "generation", "reader", "writer", "lock", "piece", ",", ".", "(", ")")


def _texts(count: int, message_words: int, seed: int, *, digits: bool) -> list[str]:
    """Renderings of four-message chats: prose, or text full of digits (ids below 257: shared int objects)."""
    rng = random.Random(seed)
    if digits:
        def message() -> str:
            return " ".join(str(rng.randint(0, 99)) for _ in range(message_words))
    else:
        def message() -> str:
            return " ".join(rng.choice(PROSE) for _ in range(message_words))
    return ["<|im_start|>user\n" + "<|im_end|>\n<|im_start|>assistant\n".join(message() for _ in range(4))
            + "<|im_end|>\n" for _ in range(count)]


def _held_and_accounted(texts: list[str]) -> tuple[int, int]:
    """Bytes the cache's new entries hold (tracemalloc: every Python allocation left behind by encoding the texts,
    which is the cached strings, lists, ints and dict slots) and bytes it accounted for them."""
    tok = tokenizer("qwen3")
    tokens = SegmentTokenizer(tok, split_on=tok.chat_template, cache_bytes=1 << 40)  # nothing evicted
    assert tokens.memoised
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
    entries = {**tokens._old, **tokens._young}
    # Each id's int object once (a generation's lists share one per distinct id), and the table that shares them.
    objects = {id(i): i for ids in entries.values() for i in ids if i > 256}
    summed = (sum(sys.getsizeof(piece) + sys.getsizeof(ids) for piece, ids in entries.items())
              + sum(map(sys.getsizeof, objects.values())) + sys.getsizeof(tokens._ints)
              + sys.getsizeof(tokens._young) + sys.getsizeof(tokens._old))
    # The sum of sys.getsizeof (entries made by the probe included) agrees with tracemalloc.
    assert 1 / 1.2 <= summed / (held + before) <= 1.2, (summed, held, before)
    return held, tokens.cached_bytes - before


@pytest.mark.parametrize(("message_words", "count"), [(850, 20), (3, 1500)], ids=["long-messages", "short-messages"])
def test_accounted_bytes_are_honest_for_prose(message_words, count):
    """For prose (~1.7k-token messages, or a few tokens each) the count is at most 20% above what is held,
    never below it by more than 5%."""
    held, accounted = _held_and_accounted(_texts(count, message_words, seed=message_words, digits=False))
    assert 0.8 <= held / accounted <= 1.05, (held, accounted)


def test_accounted_bytes_never_undercount_digits():
    """Ids below 257 are shared int objects, counted as a new int object each the first time a generation holds
    them (at most 257 over-counted objects): text of digits is counted as closely as prose."""
    held, accounted = _held_and_accounted(_texts(20, 850, seed=1, digits=True))
    assert 0.8 <= held / accounted <= 1.05, (held, accounted)


def test_hot_pieces_survive_evictions():
    """Eviction drops what was not used lately: a system prompt in every conversation is tokenized once,
    however many generations the unique messages push through."""
    tok = tokenizer("qwen3")
    tokens = SegmentTokenizer(tok, split_on=tok.chat_template, cache_bytes=MiB // 8)
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


def test_a_generation_holds_one_int_object_per_distinct_id():
    """The ids of all the pieces a generation holds, and so of the samples built from them, share one int object
    per distinct id (issue 14: one per occurrence was 30% of a long gpt-oss trajectory's peak memory)."""
    tok = tokenizer("qwen3")
    tokens = SegmentTokenizer(tok, split_on=tok.chat_template, cache_bytes=1 << 40)
    encoded = [tokens.encode(text) for text in _texts(5, 200, seed=4, digits=False)]
    assert encoded == [oracle_ids(tok, text) for text in _texts(5, 200, seed=4, digits=False)]
    large = [i for ids in encoded for i in ids if i > 256]  # below 257 CPython shares them anyway
    assert len({id(i) for i in large}) == len(set(large)) < len(large) // 10
