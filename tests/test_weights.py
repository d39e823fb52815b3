"""``swift_ext.weights``: loss weights per token from weights per part kind, on the real fixture tokenizers.

The expectation is computed here from the turn's parts and the tokenizer's own ``return_offsets_mapping`` (not
swift-ext's offsets): each label token weighs the largest kind weight among the characters it covers, every other
token 0, and the token ids never change. One named test per ``policy-span-weights`` / ``policy-loss-scale`` case.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from conftest import tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

import swift_ext
from swift_ext.errors import PolicyError
from swift_ext.spans import KINDS
from swift_ext.weights import LossWeights, apply_last_round, kind_weights, last_queries, masked, token_weights

EXAMPLE = json.loads((Path(swift_ext.__file__).parent / "data" / "example_conversation.json").read_text())
FAMILIES = ["qwen3", "qwen3_6", "gpt_oss", "glm4_7", "deepseek_r1", "gemma4", "kimi_k2", "llama3"]


@cache
def _samples(name: str):
    tok = tokenizer(name)
    # Llama 3.1 renders no reasoning: dropped
    return tok, swift_ext.encode(tok, EXAMPLE["messages"], EXAMPLE["tools"], reasoning_policy="drop")


def _offsets(tok):
    return lambda text: tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


@pytest.mark.parametrize("name", FAMILIES)
@settings(max_examples=15, deadline=None)
@given(weights=st.fixed_dictionaries({}, optional={k: st.sampled_from([0.0, 0.25, 1.0, 2.0]) for k in KINDS}))
def test_kind_weights_follow_the_parts_on_real_tokens(name, weights):
    tok, samples = _samples(name)
    kinds = kind_weights(weights)
    loss = LossWeights(kinds=kinds)
    for sample in samples:
        got = loss.sample(sample, swift_ext.get_encoder(tok).tokens.offsets)
        expected = [0.0] * len(sample)
        for turn in sample.turns:
            chars = [0.0] * len(turn.completion_text)
            for part in turn.parts:
                chars[part.start:part.end] = [kinds[part.kind]] * (part.end - part.start)
            offsets = _offsets(tok)(turn.completion_text)
            assert len(offsets) == turn.label_end - turn.label_start
            for k, (a, b) in zip(range(turn.label_start, turn.label_end), offsets):
                expected[k] = max(chars[a:b]) if b > a else chars[a]
        assert got == expected
        assert masked(sample, got).input_ids == sample.input_ids
        if all(w == 1.0 for w in kinds.values()):
            assert got == [float(m) for m in sample.loss_mask]


def test_the_straddle_rule_takes_the_largest_weight():
    # characters: "ab" weigh 0, "cd" weigh 2; tokens "a", "bc" (straddles), "d", and an empty-span piece of "d"
    assert token_weights([(0, 1), (1, 3), (3, 4), (3, 3)], [0.0, 0.0, 2.0, 2.0]) == [0.0, 2.0, 2.0, 2.0]


def test_the_prompt_weighs_nothing_unless_it_is_trained():
    tok, (sample, *_) = _samples("qwen3")
    offsets = swift_ext.get_encoder(tok).tokens.offsets
    prompt = range(sample.turns[0].label_start)
    assert all(LossWeights(kinds=kind_weights({})).sample(sample, offsets)[k] == 0 for k in prompt)
    assert all(LossWeights(train_prompt=True).sample(sample, offsets)[k] == 1 for k in prompt)


def test_a_messages_own_scale_wins():
    tok, (sample, *_) = _samples("qwen3")
    turn = sample.turns[0]
    got = LossWeights(kinds=kind_weights({"reasoning": 0})).sample(sample, swift_ext.get_encoder(tok).tokens.offsets,
                                                                   {turn.message_index: 3.0})
    assert got[turn.label_start:turn.label_end] == [3.0] * (turn.label_end - turn.label_start)


def test_a_split_multiplies_the_kind_weights_and_reads_the_query():
    tok, (sample, *_) = _samples("qwen3")
    seen = []

    def split(text, query):
        seen.append(query)
        return [text], [0.5]

    got = LossWeights(kinds=kind_weights({"answer": 4}), split=split).sample(
        sample, swift_ext.get_encoder(tok).tokens.offsets, queries=last_queries(EXAMPLE["messages"]))
    turn = sample.turns[0]
    assert set(got[turn.label_start:turn.label_end]) <= {0.5, 2.0} and 2.0 in got
    assert seen[0] == next(m["content"] for m in EXAMPLE["messages"] if m["role"] == "user")


def test_last_round_keeps_only_the_turns_after_the_last_user_message():
    messages = [dict(m) for m in EXAMPLE["messages"]]
    apply_last_round(messages)
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    assert [i for i, m in enumerate(messages) if m.get("loss") is False] == [
        i for i, m in enumerate(messages) if m["role"] == "assistant" and i < last_user]


# ------------------------------------------------------------------ policy-span-weights, one test per case
@pytest.mark.parametrize(("given", "says"), [
    ({"thoughts": 1}, "unknown kinds ['thoughts']"),
    ({"reasoning": -1}, "not a finite number >= 0: ['reasoning']"),
    ({"reasoning": float("nan")}, "not a finite number >= 0: ['reasoning']"),
    ({"reasoning": float("inf")}, "not a finite number >= 0: ['reasoning']"),
    ({"reasoning": True}, "not a finite number >= 0: ['reasoning']"),
    ({"reasoning": "0.5"}, "not a finite number >= 0: ['reasoning']"),
    ("[0.5]", "must be a JSON object"),
    ("{reasoning: 0.5}", "is not JSON"),
], ids=["unknown-kind", "negative", "nan", "inf", "bool", "string", "not-an-object", "not-json"])
def test_span_weights_policy_errors(given, says):
    with pytest.raises(PolicyError) as info:
        kind_weights(given, source="the test's weights")
    assert info.value.rule == "policy-span-weights" and says in str(info.value) and "the test's weights" in str(
        info.value)


def test_span_weights_from_a_file(tmp_path):
    path = tmp_path / "weights.json"
    path.write_text('{"empty_reasoning": 0}')
    assert kind_weights(str(path)) == {kind: 0.0 if kind == "empty_reasoning" else 1.0 for kind in KINDS}


# ------------------------------------------------------------------ policy-loss-scale, one test per case
def test_a_split_that_does_not_add_up_is_refused():
    tok, (sample, *_) = _samples("qwen3")
    loss = LossWeights(split=lambda text, query: ([text[:-1]], [1.0]), name="cutter")
    with pytest.raises(PolicyError) as info:
        loss.sample(sample, swift_ext.get_encoder(tok).tokens.offsets)
    assert info.value.rule == "policy-loss-scale" and "cutter" in str(info.value)


def test_a_tokenizer_without_offsets_is_refused():
    tok, (sample, *_) = _samples("qwen3")

    def no_offsets(text):
        raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")

    with pytest.raises(PolicyError) as info:
        LossWeights(kinds=kind_weights({})).sample(sample, no_offsets)
    assert info.value.rule == "policy-loss-scale" and "fast tokenizer" in str(info.value)


def test_offsets_that_do_not_match_the_labels_are_refused():
    tok, (sample, *_) = _samples("qwen3")
    with pytest.raises(PolicyError) as info:
        LossWeights(kinds=kind_weights({})).sample(sample, lambda text: [(0, len(text))])
    assert info.value.rule == "policy-loss-scale" and info.value.message_index == sample.turns[0].message_index
