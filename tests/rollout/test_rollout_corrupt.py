"""Deliberately corrupted rollouts: each is caught, with the rule, the turn and the right likely cause."""

from __future__ import annotations

import copy
import json
import re

import pytest
from rollout_support import (
    AGENT,
    FAMILIES,
    generated_indices,
    generations,
    hf_ids,
    hf_prompt,
    make_record,
    tokenizer,
    with_evidence,
)

from swift_ext.errors import ParityError
from swift_ext.rollout import RolloutAlignmentError, encode_rollout, engine_prompts, verify_rollout

ANSWER_TURN = 1
"""Generated turn #1 (message 4): the answer after the tool result."""


def _raises(tok, record, **kwargs) -> RolloutAlignmentError:
    with pytest.raises(RolloutAlignmentError) as info:
        encode_rollout(tok, record, **kwargs)
    return info.value


def _answer(record: dict) -> dict:
    return record["messages"][generated_indices(record)[ANSWER_TURN]]


@pytest.mark.parametrize("name", FAMILIES)
def test_dropped_token_ids_only(name):
    """One id lost (the logprobs kept): the counts differ and the lost token is named."""
    tok = tokenizer(name)
    record = make_record(name)
    message = _answer(record)
    lost = message["token_ids"].pop(5)
    error = _raises(tok, record, history_reasoning="keep")
    assert error.rule == "rollout-logprob-count" and error.cause == "dropped-token"
    assert error.turn == ANSWER_TURN and error.message_index == generated_indices(record)[ANSWER_TURN]
    assert (error.consumed, error.expected) == (len(message["token_ids"]), len(message["token_ids"]) + 1)
    assert error.position == 5
    text = str(error)
    assert "LIKELY CAUSE (dropped-token)" in text and repr(tok.decode([lost])) in text
    assert "first difference at token 5" in text


@pytest.mark.parametrize("name", FAMILIES)
def test_dropped_token_ids_and_logprobs(name):
    """The same token lost from both lists: counts agree, but the ids are no longer the turn's text. (A lost
    whitespace-only token is indistinguishable from the template normalising whitespace, so drop a word.)"""
    tok = tokenizer(name)
    record = make_record(name)
    message = _answer(record)
    ids = message["token_ids"]
    k = next(k for k in range(5, len(ids)) if tok.decode(ids[k:k + 1]).strip() and ids[k] != ids[k + 1])
    del message["token_ids"][k], message["logprobs"][k]
    for policy in ("keep", "strip"):
        error = _raises(tok, record, history_reasoning=policy)
        assert error.rule == "rollout-turn-text" and error.cause == "dropped-token" and error.position == k


def _piecewise(tok, text: str, ids: list[int]) -> list[int]:
    """Re-tokenize ``text`` in two pieces cut inside a word so that the token count changes."""
    for match in re.finditer(r"[A-Za-z]{5,}", text):
        for cut in range(match.start() + 2, match.end() - 1):
            pieces = hf_ids(tok, text[:cut]) + hf_ids(tok, text[cut:])
            if len(pieces) != len(ids):
                return pieces
    raise AssertionError("no cut changes the token count")


@pytest.mark.parametrize("name", FAMILIES)
def test_retokenized_boundary_in_sampled_ids(name):
    """The record's ids were re-made from text in pieces (a BPE merge split at the cut): same text, different
    ids, and the engine's logprobs no longer line up."""
    tok = tokenizer(name)
    record = make_record(name)
    message = _answer(record)
    text = tok.decode(message["token_ids"], skip_special_tokens=False)
    message["token_ids"] = _piecewise(tok, text, message["token_ids"])
    error = _raises(tok, record, history_reasoning="keep")
    assert error.rule == "rollout-logprob-count" and error.cause == "retokenized-boundary"
    assert "decode to exactly the turn's text" in str(error)


@pytest.mark.parametrize("name", FAMILIES)
def test_retokenized_boundary_in_engine_prompt(name):
    """The engine reports a prompt tokenized differently from the template's text (a boundary re-tokenized)."""
    tok = tokenizer(name)
    record = make_record(name)
    prompts = engine_prompts(tok, record, "strip")
    first = tok.decode(prompts[0], skip_special_tokens=False)
    prompts[0] = _piecewise(tok, first, prompts[0])
    error = _raises(tok, with_evidence(record, prompts), history_reasoning="strip")
    assert error.rule == "rollout-engine-prompt" and error.cause == "retokenized-boundary" and error.turn == 0


@pytest.mark.parametrize("name", FAMILIES)
def test_reasoning_stripped_from_the_record(name):
    """The stored message lost its reasoning_content (ms-swift's loader drops it), the ids still hold it."""
    tok = tokenizer(name)
    record = make_record(name)
    del _answer(record)["reasoning_content"]
    error = _raises(tok, record, history_reasoning="keep")
    assert error.rule == "rollout-turn-text" and error.cause == "reasoning-missing" and error.turn == ANSWER_TURN


@pytest.mark.parametrize("name", FAMILIES)
def test_history_reasoning_stripped_breaks_one_sequence(name):
    """Seed 000: the template strips earlier reasoning from a later prompt, so one sequence per trajectory cannot
    hold every turn with its logprobs: consumed vs expected, the first differing token, the cause."""
    tok = tokenizer(name)
    record = make_record(name)
    error = _raises(tok, record, history_reasoning="strip", single_sequence=True)
    assert error.rule == "rollout-single-sequence" and error.cause == "history-reasoning-stripped"
    sampled = len(record["messages"][error.message_index]["token_ids"])
    assert error.expected == sampled and error.consumed < sampled
    text = str(error)
    assert f"consumed: {error.consumed} tokens" in text and f"{sampled - error.consumed} logprobs unmatched" in text
    # Without single_sequence the same record gives one sample per rewritten history, each exact.
    result = encode_rollout(tok, record, history_reasoning="strip")
    assert len(result.samples) >= 2


@pytest.mark.parametrize("name", FAMILIES)
def test_engine_kept_history_but_strip_requested(name):
    tok = tokenizer(name)
    record = with_evidence(make_record(name), engine_prompts(tok, make_record(name), "keep"))
    error = _raises(tok, record, history_reasoning="strip")
    assert error.rule == "rollout-engine-prompt" and error.cause == "history-reasoning-stripped"
    assert "engine_history='keep'" in str(error)
    assert encode_rollout(tok, record).history_reasoning == "keep"


@pytest.mark.parametrize("name", FAMILIES)
def test_engine_stripped_history_but_keep_requested(name):
    tok = tokenizer(name)
    record = with_evidence(make_record(name), engine_prompts(tok, make_record(name), "strip"))
    error = _raises(tok, record, history_reasoning="keep")
    assert error.rule == "rollout-engine-prompt" and error.cause == "history-reasoning-kept"
    assert encode_rollout(tok, record).history_reasoning == "strip"


def _naive_full_render_sample(tok, record: dict, open_marker: str, close_marker: str) -> dict:
    """What seed 000's trainer did: render the whole conversation once, label every assistant span."""
    text = tok.apply_chat_template([{k: v for k, v in m.items() if k not in ("token_ids", "logprobs")}
                                    for m in record["messages"]], tools=record["tools"], tokenize=False)
    ids = hf_ids(tok, text)
    opener, closer = hf_ids(tok, open_marker), hf_ids(tok, close_marker)[0]
    labels = [-100] * len(ids)
    k = 0
    while k < len(ids):
        if ids[k:k + len(opener)] == opener:
            end = ids.index(closer, k + len(opener))
            labels[k + len(opener):end + 1] = ids[k + len(opener):end + 1]
            k = end
        k += 1
    return {"input_ids": ids, "labels": labels}


@pytest.mark.parametrize("name", ("qwen3", "qwen3_6"))
def test_seed_000_naive_full_render_is_caught(name):
    tok = tokenizer(name)
    record = make_record(name)
    sample = _naive_full_render_sample(tok, record, "<|im_start|>assistant\n", "<|im_end|>")
    with pytest.raises(RolloutAlignmentError) as info:
        verify_rollout(tok, record, [sample], history_reasoning="strip")
    error = info.value
    assert error.rule in ("rollout-turn-tokens", "rollout-prefix")
    assert error.cause == "history-reasoning-stripped" and error.turn == 0
    assert error.consumed < error.expected == len(record["messages"][generated_indices(record)[0]]["logprobs"])


@pytest.mark.parametrize("name", ("qwen3", "qwen3_6", "glm4_7"))
def test_thinking_switch_differs(name):
    """The engine ran with enable_thinking=False, the record does not say so."""
    tok = tokenizer(name)
    messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in AGENT]
    kwargs = {"enable_thinking": False}
    record = make_record(name, messages, kwargs=kwargs)
    prompts = engine_prompts(tok, record, "strip")
    silent = copy.deepcopy(record)
    del silent["chat_template_kwargs"]
    error = _raises(tok, silent, history_reasoning="strip")
    assert error.rule == "rollout-turn-text" and error.cause == "thinking-switch"
    # With only the engine's prompts to go by (text check off), the prompts say the same.
    error = _raises(tok, with_evidence(silent, prompts), history_reasoning="strip", check_text=False)
    assert error.rule == "rollout-engine-prompt" and error.cause == "thinking-switch" and error.turn == 0


@pytest.mark.parametrize("name", ("qwen3", "gpt_oss"))
def test_tool_argument_rendering(name):
    """The model wrote its tool call as compact JSON; the template renders the parsed arguments with spaces. Raw
    history keeps the sampled ids; a template re-render cannot extend them."""
    tok = tokenizer(name)
    texts = generations(tok, AGENT, None)
    call_turn = generated_indices(make_record(name))[0]
    spaced = json.dumps({"city": "Paris", "unit": "celsius"})
    assert spaced in texts[call_turn]
    texts[call_turn] = texts[call_turn].replace(spaced, json.dumps({"city": "Paris", "unit": "celsius"},
                                                                   separators=(",", ":")))
    record = make_record(name, generated=texts)
    keep = encode_rollout(tok, record, history_reasoning="keep")
    assert any("whitespace" in note for note in keep.notes)
    error = _raises(tok, record, history_reasoning="strip", single_sequence=True)
    assert error.cause == "tool-arguments" and error.turn == 0
    # An engine that re-rendered says so in its prompt: raw history was not what it fed the model.
    evidenced = with_evidence(record, [hf_prompt(tok, record, i) for i in generated_indices(record)])
    error = _raises(tok, evidenced, history_reasoning="keep")
    assert error.rule == "rollout-engine-prompt" and error.cause == "tool-arguments"


def test_logprob_entries_for_other_ids():
    """SGLang-style entries carry their token ids: ids that disagree with token_ids are caught."""
    tok = tokenizer("qwen3")
    record = make_record("qwen3")
    message = _answer(record)
    entries = [[lp, tid, ""] for lp, tid in zip(message["logprobs"], message["token_ids"])]
    message["logprobs"] = entries
    encode_rollout(tok, record, history_reasoning="keep")  # well-formed: accepted
    del message["token_ids"][3]
    message["token_ids"].insert(0, message["token_ids"][0])
    error = _raises(tok, record, history_reasoning="keep")
    assert error.rule == "rollout-logprob-ids"


def test_errors_are_parity_errors_with_conversation_index():
    tok = tokenizer("qwen3")
    record = make_record("qwen3")
    del _answer(record)["token_ids"][2]
    with pytest.raises(ParityError) as info:
        encode_rollout(tok, record, history_reasoning="keep", conversation_index=17)
    assert info.value.conversation_index == 17 and str(info.value).startswith("[rollout-logprob-count] conversation 17")
