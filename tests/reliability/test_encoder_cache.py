"""The cached encoder always answers for the tokenizer as it is now.

``encode`` keeps up to 8 encoders (and their piece caches) per process. They used to be keyed by
``id(tokenizer)`` and the template: after ``add_special_tokens`` on a tokenizer already used, ``encode`` kept
returning the old ids.
"""

from __future__ import annotations

import copy

import pytest
from conftest import oracle_ids, oracle_prompt_ids, tokenizer

import swift_ext
from swift_ext import core

NEW_TOKEN = "<|project_marker|>"


def _own_tokenizer(name: str):
    """A tokenizer this test may change: the fixtures' are shared by every test in the process."""
    return copy.deepcopy(tokenizer(name))


def _messages() -> list[dict]:
    return [
        {"role": "user", "content": f"Put {NEW_TOKEN} between the two halves."},
        {"role": "assistant", "content": f"First half {NEW_TOKEN} second half."},
    ]


def _assert_inference_exact(tok, messages) -> list[int]:
    """The sample's prompt is the oracle's generation prompt, its labels the oracle's ids of the turn's text."""
    (sample,) = swift_ext.encode(tok, messages)
    (span,) = sample.turns
    assert sample.input_ids[: span.label_start] == oracle_prompt_ids(tok, messages[:1])
    assert NEW_TOKEN in span.completion_text
    assert sample.input_ids[span.label_start: span.label_end] == oracle_ids(tok, span.completion_text)
    return sample.input_ids


ADD_TOKEN = {
    "add_special_tokens": lambda tok: tok.add_special_tokens({"additional_special_tokens": [NEW_TOKEN]},
                                                             replace_extra_special_tokens=False),
    "add_tokens": lambda tok: tok.add_tokens([NEW_TOKEN]),
}


@pytest.mark.parametrize("how", sorted(ADD_TOKEN))
@pytest.mark.parametrize("name", ["qwen3", "llama3", "gpt_oss"])
def test_tokens_added_after_use_are_seen(name, how):
    tok = _own_tokenizer(name)
    before = _assert_inference_exact(tok, _messages())  # builds and warms the cached encoder
    assert ADD_TOKEN[how](tok) == 1
    new_id = tok.convert_tokens_to_ids(NEW_TOKEN)
    assert new_id not in before
    after = _assert_inference_exact(tok, _messages())
    assert after.count(new_id) == 2  # once in the prompt, once in the labels


def test_reassigned_special_token_is_seen():
    """Llama-3.1's template renders ``bos_token``: reassigning it changes every prompt."""
    tok = _own_tokenizer("llama3")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    swift_ext.encode(tok, messages)
    tok.bos_token = "<|reserved_special_token_3|>"
    (sample,) = swift_ext.encode(tok, messages)
    prompt = oracle_prompt_ids(tok, messages[:1])
    assert prompt[0] == tok.convert_tokens_to_ids("<|reserved_special_token_3|>")
    assert sample.input_ids[: sample.turns[0].label_start] == prompt


def test_changed_chat_template_is_seen():
    tok = _own_tokenizer("qwen3")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    swift_ext.encode(tok, messages)
    tok.chat_template = tok.chat_template.replace("<|im_start|>assistant\n", "<|im_start|>assistant\n\n")
    (sample,) = swift_ext.encode(tok, messages)
    assert sample.input_ids[: sample.turns[0].label_start] == oracle_prompt_ids(tok, messages[:1])


def test_unchanged_tokenizer_reuses_its_encoder():
    """The checks run on every call and must not rebuild (that would drop the piece cache each conversation)."""
    tok = tokenizer("qwen3")
    encoder = swift_ext.get_encoder(tok)
    swift_ext.encode(tok, _messages())
    assert swift_ext.get_encoder(tok) is encoder
    assert swift_ext.get_encoder(tok, stop_strings=["<|im_end|>"]) is not encoder  # other settings, other encoder


def test_new_tokenizer_at_a_recycled_id_gets_its_own_encoder():
    """Python reuses the id of a collected object. What that looks like to the cache: a new tokenizer's key
    finds the entry built for another one (here one that splits at NEW_TOKEN, which the new one does not know)."""
    old = _own_tokenizer("qwen3")
    old.add_special_tokens({"additional_special_tokens": [NEW_TOKEN]}, replace_extra_special_tokens=False)
    old_encoder = swift_ext.get_encoder(old)
    new = _own_tokenizer("qwen3")
    with core._ENCODERS_LOCK:
        (old_key,) = [key for key, entry in core._ENCODERS.items() if entry.encoder is old_encoder]
        core._ENCODERS[(id(new), *old_key[1:])] = core._ENCODERS[old_key]
    encoder = swift_ext.get_encoder(new)
    assert encoder is not old_encoder and encoder.tokenizer is new
    (sample,) = swift_ext.encode(new, _messages())
    assert sample.input_ids[: sample.turns[0].label_start] == oracle_prompt_ids(new, _messages()[:1])
    assert len(oracle_ids(new, NEW_TOKEN)) > 1  # several ordinary tokens for the new tokenizer


def test_encoder_cache_holds_at_most_eight():
    tok = tokenizer("qwen3")
    for k in range(11):
        swift_ext.get_encoder(tok, chat_template=tok.chat_template + "{#- bound " + str(k) + " -#}")
    assert len(core._ENCODERS) == core._MAX_ENCODERS == 8
