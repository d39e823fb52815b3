"""``swift_ext.encode`` from many threads on one tokenizer gives what one thread gives, and never raises.

Before the piece cache was made thread-safe, 8 threads raised 74 raw ``KeyError`` in 23,357 conversations:
one thread cleared the cache between another's membership check and its read.
"""

from __future__ import annotations

import copy
import random
import threading

from conftest import oracle_prompt_ids, tokenizer

import swift_ext
from swift_ext.tokens import CACHE_ENV_VAR

THREADS = 8
CONVERSATIONS = 2400
# Small enough that the cache drops a generation every few conversations while threads are reading it.
TINY_CACHE_MB = "0.03"

WORDS = ("alpha", "beta", "gamma", "delta", "über", "naïve", "你好", "世界", "code:", "x=1;", "\n", "  ", "42",
         "emoji 🙂")
# Added tokens inside user text: more split points (the template's own ones are in every rendering anyway).
USER_WORDS = (*WORDS, "<|im_start|>", "<|im_end|>", "<tool_call>", "<|endoftext|>")
SYSTEM_PROMPTS = ("You are a helpful assistant.", "Answer briefly.", "You write Python.", "Think step by step.")


def _text(rng: random.Random, low: int = 1, high: int = 40, words: tuple[str, ...] = WORDS) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))


def _conversation(seed: int) -> list[dict]:
    """Shared system prompts and short replies (cache hits) mixed with fresh text (misses, evictions)."""
    rng = random.Random(seed)
    messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.7 else []
    for _ in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": _text(rng, words=USER_WORDS)})
        reply = {"role": "assistant", "content": rng.choice(["OK.", "Sure.", _text(rng)])}
        if rng.random() < 0.3:
            reply["reasoning_content"] = _text(rng, 1, 10)
        messages.append(reply)
    return messages


def _run_threads(work, count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            work(k)
        except BaseException as exc:  # noqa: BLE001  (any escape is the failure being tested for)
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_threads_sharing_one_tokenizer_get_sequential_results(monkeypatch):
    conversations = [_conversation(seed) for seed in range(CONVERSATIONS)]
    reference = swift_ext.Encoder(tokenizer("qwen3"))  # its own tokenizer and cache, one thread
    expected = [reference.encode(messages) for messages in conversations]

    monkeypatch.setenv(CACHE_ENV_VAR, TINY_CACHE_MB)
    tok = copy.deepcopy(tokenizer("qwen3"))  # not the fixture object others share: its encoder gets the tiny cache
    tokens = swift_ext.get_encoder(tok).tokens
    assert tokens.memoised and tokens.cache_bytes < 40_000
    results: list = [None] * CONVERSATIONS

    def work(k: int) -> None:
        for i in range(k, CONVERSATIONS, THREADS):
            results[i] = swift_ext.encode(tok, conversations[i], conversation_index=i)

    errors = _run_threads(work, THREADS)
    assert errors == []
    assert swift_ext.get_encoder(tok).tokens is tokens  # one encoder, shared by all threads
    assert tokens.evictions > 50, "the cache must have dropped generations while threads were reading it"
    assert tokens.cached_bytes <= tokens.cache_bytes
    mismatched = [i for i in range(CONVERSATIONS) if results[i] != expected[i]]
    assert mismatched == []
    # The sequential reference is itself the oracle's: spot-check it.
    for i in range(0, CONVERSATIONS, 400):
        for sample in expected[i]:
            for span in sample.turns:
                prompt = oracle_prompt_ids(tok, conversations[i][: span.message_index])
                assert sample.input_ids[: span.label_start] == prompt


def test_threads_churning_the_encoder_cache_get_the_right_encoder():
    """More template variants than the encoder cache holds, from 8 threads: entries are evicted and rebuilt
    while others read them; every call still gets an encoder for its own template."""
    tok = tokenizer("qwen3")
    variants = [tok.chat_template + "{#- variant " + str(k) + " -#}" for k in range(12)]
    messages = _conversation(7)
    expected = swift_ext.Encoder(tokenizer("qwen3")).encode(messages)

    def work(k: int) -> None:
        rng = random.Random(k)
        for _ in range(25):
            template = rng.choice(variants)
            encoder = swift_ext.get_encoder(tok, chat_template=template)
            assert encoder.template == template and encoder.tokenizer is tok
            assert swift_ext.encode(tok, messages, chat_template=template) == expected

    assert _run_threads(work, THREADS) == []
