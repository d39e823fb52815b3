"""Rollout record formats: what SGLang and vLLM return, turns given as ids only, malformed records."""

from __future__ import annotations

import copy

import pytest
from rollout_support import FAMILIES, generated_indices, make_record, tokenizer

from swift_ext.errors import InputError
from swift_ext.rollout import RolloutAlignmentError, encode_rollout
from swift_ext.rollout.record import parse_harmony


def _baseline(name="qwen3_6"):
    tok = tokenizer(name)
    record = make_record(name)
    return tok, record, encode_rollout(tok, record, history_reasoning="keep")


def test_vllm_openai_logprobs_form():
    """vLLM chat completions: ``logprobs.content[*]`` with ``token`` as ``token_id:N`` (return_tokens_as_token_ids)."""
    tok, record, base = _baseline()
    for index in generated_indices(record):
        message = record["messages"][index]
        message["logprobs"] = {"content": [{"token": f"token_id:{tid}", "logprob": lp, "top_logprobs": []}
                                           for tid, lp in zip(message["token_ids"], message["logprobs"])]}
    result = encode_rollout(tok, record, history_reasoning="keep")
    assert [s.to_dict() for s in result.samples] == [s.to_dict() for s in base.samples]


def test_sglang_generate_form():
    """SGLang /generate: ``output_ids`` and ``output_token_logprobs`` as ``[logprob, token_id, text]``."""
    tok, record, base = _baseline()
    for index in generated_indices(record):
        message = record["messages"][index]
        ids = message.pop("token_ids")
        message["output_ids"] = ids
        message["output_token_logprobs"] = [[lp, tid, None] for lp, tid in zip(message.pop("logprobs"), ids)]
    result = encode_rollout(tok, record, history_reasoning="keep")
    assert [s.to_dict() for s in result.samples] == [s.to_dict() for s in base.samples]


@pytest.mark.parametrize("name", FAMILIES)
def test_turns_given_as_ids_only(name):
    """No text on the generated turns: raw history needs none (tail rendering decodes the ids). gpt-oss's
    template refuses channel tags in content: its turns are split with the harmony parser."""
    tok = tokenizer(name)
    record = make_record(name)
    base = encode_rollout(tok, record, history_reasoning="keep")
    bare = copy.deepcopy(record)
    for index in generated_indices(bare):
        message = bare["messages"][index]
        bare["messages"][index] = {"role": "assistant", "token_ids": message["token_ids"],
                                   "logprobs": message["logprobs"]}
    parser = parse_harmony if name == "gpt_oss" else None
    result = encode_rollout(tok, bare, history_reasoning="keep", message_parser=parser)
    assert [s.to_dict() for s in result.samples] == [s.to_dict() for s in base.samples]


def test_parse_harmony():
    text = ('<|channel|>analysis<|message|>Need the tool.<|end|><|start|>assistant to=functions.get_weather'
            '<|channel|>commentary json<|message|>{"city":"Paris"}')
    assert parse_harmony(text) == {"content": "", "thinking": "Need the tool.", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    assert parse_harmony("<|channel|>final<|message|>Hi.") == {"content": "Hi."}


def test_no_logprobs_at_all():
    tok, record, _ = _baseline()
    for index in generated_indices(record):
        del record["messages"][index]["logprobs"]
    result = encode_rollout(tok, record, history_reasoning="keep")
    assert result.samples[0].logprobs is None and result.samples[0].num_labels > 0
    with pytest.raises(ValueError):
        result.samples[0].position_logprobs()


def test_logprobs_on_some_turns_only():
    tok, record, _ = _baseline()
    del record["messages"][generated_indices(record)[1]]["logprobs"]
    with pytest.raises(RolloutAlignmentError) as info:
        encode_rollout(tok, record, history_reasoning="keep")
    assert info.value.rule == "rollout-logprobs-missing" and info.value.turn == 1


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (lambda r: r["messages"][1].update(token_ids=[1, 2]), "rollout-input"),
        (lambda r: r["messages"][2].update(token_ids=[]), "rollout-input"),
        (lambda r: r["messages"][2].update(token_ids=["a"]), "rollout-input"),
        (lambda r: r["messages"][2].pop("token_ids"), "rollout-input"),
        (lambda r: r["messages"][2].update(logprobs=[None] * len(r["messages"][2]["token_ids"])), "rollout-input"),
        (lambda r: r["messages"][2].update(prompt_tokens="12"), "rollout-input"),
        (lambda r: [m.pop("token_ids", None) for m in r["messages"]], "rollout-input"),
        (lambda r: r.update(messages=[]), "rollout-input"),
        (lambda r: r["messages"].insert(0, "hello"), "rollout-input"),
    ],
    ids=["user-ids", "empty-ids", "non-int-ids", "logprobs-without-ids", "none-logprob", "bad-prompt-tokens",
         "nothing-generated", "no-messages", "not-a-dict"],
)
def test_malformed_records(mutate, rule):
    tok = tokenizer("qwen3")
    record = make_record("qwen3")
    mutate(record)
    with pytest.raises(InputError) as info:
        encode_rollout(tok, record, history_reasoning="keep")
    assert info.value.rule.startswith(rule)


def test_assistant_first_is_rejected():
    tok = tokenizer("qwen3")
    record = make_record("qwen3")
    record["messages"] = record["messages"][2:3]
    with pytest.raises(InputError):
        encode_rollout(tok, record, history_reasoning="keep")


def test_engine_history_and_its_earlier_name() -> None:
    """``engine_history`` is the rollout policy's name; ``history_reasoning`` (its earlier name, now the core's
    policy) is still accepted, and the two may not disagree."""
    from swift_ext.errors import PolicyError

    tok, record, _ = _baseline()
    new = encode_rollout(tok, record, engine_history="keep")
    old = encode_rollout(tok, record, history_reasoning="keep")
    assert new.engine_history == old.history_reasoning == "keep"
    assert [s.input_ids for s in new.samples] == [s.input_ids for s in old.samples]
    with pytest.raises(PolicyError) as info:
        encode_rollout(tok, record, engine_history="keep", history_reasoning="strip")
    assert info.value.rule == "rollout-policy"
