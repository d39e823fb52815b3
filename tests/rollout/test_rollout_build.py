"""Rollout records -> samples: sampled ids verbatim, prompts exactly the engine's, labels and logprobs aligned."""

from __future__ import annotations

import copy

import pytest
from rollout_support import (
    AGENT,
    FAMILIES,
    SWITCH_FAMILIES,
    TOOLS,
    generated_indices,
    hf_ids,
    hf_prompt,
    make_record,
    seed_000_keep_template,
    tokenizer,
    with_evidence,
)

import swift_ext
from swift_ext.errors import PolicyError
from swift_ext.rollout import (
    RolloutSample,
    detect_history_reasoning,
    encode_rollout,
    engine_prompts,
    verify_rollout,
)
from swift_ext.types import IGNORE_INDEX


def _check_sample_layout(record: dict, result) -> None:
    """Every generated turn: its ids verbatim right after its engine prompt; labels, mask and logprobs only there."""
    turns = {m_index: record["messages"][m_index] for m_index in generated_indices(record)}
    seen = []
    for sample in result.samples:
        assert len(sample.input_ids) == len(sample.labels) == len(sample.loss_mask)
        assert len(sample.logprobs) == sum(sample.loss_mask)
        labelled = set()
        expected_logprobs = []
        for span in sample.turns:
            message = turns[span.message_index]
            assert sample.input_ids[span.label_start:span.label_end] == message["token_ids"]
            assert sample.input_ids[:span.prompt_end] == result.prompts[span.turn]
            labelled.update(range(span.label_start, span.label_end))
            expected_logprobs.extend(message["logprobs"])
            seen.append(span.message_index)
        assert {k for k, m in enumerate(sample.loss_mask) if m} == labelled
        assert all((label == IGNORE_INDEX) == (k not in labelled) for k, label in enumerate(sample.labels))
        assert sample.logprobs == expected_logprobs
        position = sample.position_logprobs(fill=0.0)
        assert [position[k] for k in sorted(labelled)] == expected_logprobs
    assert seen == list(turns)


@pytest.mark.parametrize("name", FAMILIES)
def test_keep_one_sequence_with_sampled_ids_verbatim(name):
    record = make_record(name)
    result = encode_rollout(tokenizer(name), record, history_reasoning="keep")
    assert result.history_reasoning == "keep" and not result.detected
    assert len(result.samples) == 1, "raw history never rewrites the past: one sequence per trajectory"
    _check_sample_layout(record, result)
    verify_rollout(tokenizer(name), record, result.samples, history_reasoning="keep")


@pytest.mark.parametrize("name", FAMILIES)
def test_strip_prompts_are_what_a_chat_server_renders(name):
    """Under 'strip' every prompt is transformers' apply_chat_template of the history, tokenized."""
    tok = tokenizer(name)
    record = make_record(name)
    result = encode_rollout(tok, record, history_reasoning="strip")
    for prompt, index in zip(result.prompts, generated_indices(record)):
        assert prompt == hf_prompt(tok, record, index)
    _check_sample_layout(record, result)
    # The third turn follows a new user query: every family here rewrites the history for it.
    assert len(result.samples) >= 2
    verify_rollout(tok, record, result.samples, history_reasoning="strip")


@pytest.mark.parametrize("name", SWITCH_FAMILIES)
def test_keep_equals_the_templates_own_keep_switch(name):
    """Raw history, built from sampled ids plus rendered tails, is token for token the template rendering with
    its keep-history switch (preserve_thinking / clear_thinking=False) of the same conversation."""
    tok = tokenizer(name)
    family = swift_ext.get_encoder(tok).family
    record = make_record(name)
    prompts = engine_prompts(tok, record, "keep")
    switch = {family.keep_history_kwarg: family.keep_history_value}
    assert prompts == [hf_prompt(tok, record, i, switch) for i in generated_indices(record)]


def test_qwen3_keep_equals_seed_000_modified_template():
    """Qwen3 has no switch; seed 000 patched its template to keep every turn's reasoning. Raw history matches it."""
    tok = tokenizer("qwen3")
    record = make_record("qwen3")
    prompts = engine_prompts(tok, record, "keep")
    modified = seed_000_keep_template(tok)
    assert prompts == [hf_prompt(tok, record, i, chat_template=modified) for i in generated_indices(record)]
    # ... and the template's own rendering strips it for the turn after the new user query.
    strip = engine_prompts(tok, record, "strip")
    assert strip[:2] == prompts[:2] and strip[2] != prompts[2]


@pytest.mark.parametrize("name", ("gpt_oss", "deepseek_r1"))
def test_keep_tail_is_the_templates_rendering_of_what_came_after(name):
    """Families without a keep form: the raw prompt is the previous prompt, the sampled ids, then exactly the
    template's text for the tool result / user message and the generation prompt."""
    tok = tokenizer(name)
    record = make_record(name)
    prompts = engine_prompts(tok, record, "keep")
    indices = generated_indices(record)
    for n in range(1, len(indices)):
        previous = prompts[n - 1] + record["messages"][indices[n - 1]]["token_ids"]
        assert prompts[n][:len(previous)] == previous
        tail = tok.decode(prompts[n][len(previous):], skip_special_tokens=False)
        rendered = tok.decode(hf_prompt(tok, record, indices[n]), skip_special_tokens=False)
        assert rendered.endswith(tail)
        following = record["messages"][indices[n - 1] + 1]["content"]
        assert following in tail and record["messages"][indices[n - 1]].get("content", "") not in tail.replace(
            following, "") or not record["messages"][indices[n - 1]].get("content")


@pytest.mark.parametrize("name", FAMILIES)
def test_policy_detected_from_engine_prompt_evidence(name):
    tok = tokenizer(name)
    record = make_record(name)
    for policy in ("keep", "strip"):
        prompts = engine_prompts(tok, record, policy)
        for counts_only in (False, True):
            evidenced = with_evidence(record, prompts, counts_only=counts_only)
            assert detect_history_reasoning(tok, evidenced)[0] == policy
            result = encode_rollout(tok, evidenced)
            assert result.history_reasoning == policy and result.detected
            _check_sample_layout(evidenced, result)


@pytest.mark.parametrize("name", FAMILIES)
def test_ambiguous_policy_raises(name):
    tok = tokenizer(name)
    record = make_record(name)
    policy, why = detect_history_reasoning(tok, record)
    assert policy is None and "ambiguous" in why
    with pytest.raises(PolicyError) as info:
        encode_rollout(tok, record)
    assert info.value.rule == "rollout-policy-ambiguous"
    assert "engine_history='keep' or 'strip'" in str(info.value)


@pytest.mark.parametrize("name", FAMILIES)
def test_single_turn_needs_no_policy(name):
    """With one generated turn both policies give the same prompt: nothing to choose."""
    tok = tokenizer(name)
    record = make_record(name, AGENT[:3])
    result = encode_rollout(tok, record)
    assert result.detected and len(result.samples) == 1
    _check_sample_layout(record, result)


def test_policy_from_record_and_aliases():
    tok = tokenizer("qwen3")
    record = make_record("qwen3")
    assert encode_rollout(tok, {**record, "history_reasoning": "raw"}).history_reasoning == "keep"
    assert encode_rollout(tok, record, history_reasoning="template").history_reasoning == "strip"
    with pytest.raises(PolicyError):
        encode_rollout(tok, record, history_reasoning="sometimes")


@pytest.mark.parametrize("name", ("qwen3", "qwen3_6", "glm4_7"))
def test_thinking_off_rollout(name):
    """enable_thinking=False: the empty think block is prompt, the sampled ids are the answer only."""
    tok = tokenizer(name)
    messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in AGENT]
    kwargs = {"enable_thinking": False}
    record = make_record(name, messages, kwargs=kwargs)
    for policy in ("keep", "strip"):
        result = encode_rollout(tok, record, history_reasoning=policy)
        _check_sample_layout(record, result)
    strip = encode_rollout(tok, record, history_reasoning="strip")
    assert strip.prompts == [hf_prompt(tok, record, i) for i in generated_indices(record)]


def test_untrained_generated_turn_and_context_assistant_turn():
    """A generated turn with loss=false stays in the sequence unlabelled; an assistant turn without ids is
    context rendered by the template."""
    name = "qwen3_6"
    tok = tokenizer(name)
    record = make_record(name)
    first = generated_indices(record)[0]
    record["messages"][first]["loss"] = False
    context_turn = copy.deepcopy(record)
    del context_turn["messages"][first]["token_ids"], context_turn["messages"][first]["logprobs"]
    for rec, n_generated in ((record, 3), (context_turn, 2)):
        result = encode_rollout(tok, rec, history_reasoning="keep")
        spans = [t for s in result.samples for t in s.turns]
        assert len(spans) == n_generated
        trained = [t for t in spans if t.trained]
        assert len(trained) == 2
        sample = result.samples[0]
        assert len(sample.logprobs) == sum(sample.loss_mask) == sum(t.label_end - t.label_start for t in trained)
        verify_rollout(tok, rec, result.samples, history_reasoning="keep")


def test_verify_accepts_plain_dicts_and_core_like_samples():
    tok = tokenizer("qwen3")
    record = make_record("qwen3")
    result = encode_rollout(tok, record, history_reasoning="strip")
    dicts = [s.to_dict() for s in result.samples]
    verify_rollout(tok, record, dicts, history_reasoning="strip")
    labels_only = [{"input_ids": d["input_ids"], "labels": d["labels"]} for d in dicts]
    verify_rollout(tok, record, labels_only, history_reasoning="strip")
    assert isinstance(result.samples[0], RolloutSample)


def test_non_canonical_sampled_ids_are_kept_verbatim():
    """An engine may sample a token split the tokenizer would not produce: the ids are kept, never re-tokenized;
    under 'strip' the next prompt (re-tokenized from text) then starts a new sample, as it did at inference."""
    name = "qwen3"
    tok = tokenizer(name)
    record = make_record(name)
    index = generated_indices(record)[1]
    message = record["messages"][index]
    text = tok.decode(message["token_ids"], skip_special_tokens=False)
    cut = text.index("sunny") + 3
    ids = hf_ids(tok, text[:cut]) + hf_ids(tok, text[cut:])
    assert ids != message["token_ids"]
    message["token_ids"], message["logprobs"] = ids, [-0.25] * len(ids)
    keep = encode_rollout(tok, record, history_reasoning="keep")
    assert len(keep.samples) == 1
    span = keep.samples[0].turns[1]
    assert keep.samples[0].input_ids[span.label_start:span.label_end] == ids and span.canonical is False
    assert any("not the tokenizer's own tokenization" in note for note in keep.notes)
    record["messages"][index + 1:] = record["messages"][index + 1:index + 2]  # end after a follow-up user turn
    record["messages"].append(copy.deepcopy(make_record(name)["messages"][-1]))
    strip = encode_rollout(tok, record, history_reasoning="strip")
    assert all(s.input_ids[t.label_start:t.label_end] == record["messages"][t.message_index]["token_ids"]
               for s in strip.samples for t in s.turns)


def test_truncated_turn_without_stop_token():
    """finish_reason=length: the ids end mid-text; under 'keep' the template's terminator follows them."""
    name = "qwen3_6"
    tok = tokenizer(name)
    record = make_record(name)
    index = generated_indices(record)[1]
    message = record["messages"][index]
    message["token_ids"] = message["token_ids"][:-4]
    message["logprobs"] = message["logprobs"][:-4]
    message["finish_reason"] = "length"
    result = encode_rollout(tok, record, history_reasoning="keep")
    _check_sample_layout(record, result)
    sample = result.samples[0]
    end = sample.turns[1].label_end
    assert tok.decode(sample.input_ids[end:end + 1]) == "<|im_end|>"
    assert any("without a stop string" in note for note in result.notes)


def test_record_is_just_a_message_list_with_tools_kwarg():
    tok = tokenizer("glm4_7")
    record = make_record("glm4_7")
    result = encode_rollout(tok, record["messages"], tools=TOOLS, history_reasoning="keep")
    _check_sample_layout(record, result)
