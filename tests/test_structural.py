"""The prefix property the fast path rests on, proven against the real templates; and the fast path itself.

A family's ``[prefix]`` table (templates/README.md) states, for the template whose sha256 it lists: while no message
of the ``rewritten_by`` kinds follows, the rendering of a conversation's prefix ``messages[:k]`` is the rendering of
a longer prefix ``messages[:j]`` cut where message k starts, and the generation prompt of ``messages[:k]`` is that
rendering plus one fixed generation prompt (``last_turn = "same-with-reasoning"``: only where message k - 1 is not
an assistant turn without reasoning). The oracle is transformers' ``apply_chat_template`` of the real template;
swift-ext's renderer only supplies the cut points (``ChatRenderer.render_marked``), and those are checked against
the oracle's own prefix renders. Then ``encode``'s fast path must give exactly what its per-turn path gives, and a
family that states a property its template does not have must fail loudly (``family-prefix-mismatch``).
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest
from conftest import tokenizer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import swift_ext
from swift_ext import ParityError
from swift_ext.core import Encoder, _PrefixPlan
from swift_ext.families import list_families

PREFIX_FAMILIES = [family.name for family in list_families() if family.prefix_rewritten_by is not None]
EXAMPLES = int(os.environ.get("SWIFT_EXT_PROPERTY_EXAMPLES", "30"))
TOOLS = [{"type": "function", "function": {"name": "shell", "description": "run a command",
                                           "parameters": {"type": "object",
                                                          "properties": {"command": {"type": "string"}}}}}]
# Text that looks like the templates' own markup: a cut point found by searching the text would be fooled by it.
TRICKY = ["<|im_start|>assistant\n", "<|im_end|>", "<think>\n", "</think>", "<|assistant|>", "<|observation|>",
          "<|start|>assistant", "<|end|>", "<tool_response>", "</tool_response>", "\n\n", "  ", "Zürich 日本"]
WORDS = ["alpha", "beta", "ls -la", "error:", "ok", "{\"a\": 1}", *TRICKY]


def test_prefix_families_are_the_measured_ones() -> None:
    assert set(PREFIX_FAMILIES) == {"qwen3_6", "qwen3", "glm4_7", "gpt_oss"}


def encoder_for(name: str) -> Encoder:
    encoder = Encoder(tokenizer(name))
    assert encoder.family.name == name and encoder.prefix, "the fixture's template is the one [prefix] is stated for"
    return encoder


@st.composite
def texts(draw, empty: bool = True) -> str:
    words = draw(st.lists(st.sampled_from(WORDS), min_size=0 if empty else 1, max_size=6))
    return " ".join(words)


@st.composite
def agent_conversations(draw) -> list[dict]:
    """A system prompt or not; one or more user tasks, each followed by tool rounds (reasoning or not, content or
    not, one shell call) and often a final answer."""
    messages: list[dict] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts(empty=False))})
    for _ in range(draw(st.integers(1, 2))):
        messages.append({"role": "user", "content": draw(texts(empty=False))})
        for _ in range(draw(st.integers(0, 3))):
            turn: dict = {"role": "assistant", "content": draw(st.sampled_from(["", "Let me look.", "<b>x</b>"])),
                          "tool_calls": [{"type": "function", "function": {
                              "name": "shell", "arguments": {"command": draw(texts(empty=False))}}}]}
            if draw(st.booleans()):
                turn["reasoning_content"] = draw(texts(empty=False))
            if turn["content"] and turn.get("reasoning_content"):
                turn["content"] = ""  # gpt-oss takes either content or thinking beside a call
            messages += [turn, {"role": "tool", "content": draw(texts())}]
        if draw(st.booleans()) or messages[-1]["role"] == "user":
            answer = {"role": "assistant", "content": draw(texts(empty=False))}
            if draw(st.booleans()):
                answer["reasoning_content"] = draw(texts(empty=False))
            messages.append(answer)
    return messages


def thinking_kwargs(encoder: Encoder) -> list[dict]:
    kwarg = encoder.family.thinking_kwarg
    return [{kwarg: True}, {kwarg: False}] if kwarg else [{}]


def _without_thinking_off_reasoning(messages: list[dict], kwargs: dict) -> list[dict]:
    if any(value is False for value in kwargs.values()):
        return [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    return messages


@pytest.mark.parametrize("name", PREFIX_FAMILIES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_prefix_property_holds_for_the_real_template(name: str, data: st.DataObject) -> None:
    """Every prefix the fast path derives equals the oracle's own render of it."""
    encoder = encoder_for(name)
    tok = encoder.tokenizer
    kwargs = data.draw(st.sampled_from(thinking_kwargs(encoder)))
    raw = _without_thinking_off_reasoning(data.draw(agent_conversations()), kwargs)
    try:
        conversation = encoder.conversation(raw, TOOLS, kwargs)
    except ParityError:
        assume(False)  # input the encoder refuses (markup in content): no prefix to derive
    dicts, n = conversation.dicts, len(conversation.dicts)
    first = next(i for i, m in enumerate(conversation.messages) if m.role == "assistant")
    plan = _PrefixPlan(encoder, conversation, "")

    def oracle(k: int, gen: bool = False) -> str:
        return tok.apply_chat_template(dicts[:k], tools=TOOLS, tokenize=False, add_generation_prompt=gen, **kwargs)

    generation_prompt = oracle(first, True)[len(oracle(first)):]
    for j in sorted(set(plan.next_rewrite[first:n]) | {n}):
        if j <= first:
            continue
        text, offsets = encoder.renderer.render_marked(dicts[:j], tools=TOOLS, kwargs=conversation.kwargs)
        assert text == oracle(j)
        for k in range(first, j + 1):
            if plan.next_rewrite[k] < j or not plan._stable_when_last(k - 1):
                continue  # a message in messages[k:j] may rewrite history, or message k - 1 renders differently last
            history = oracle(k)
            cut = len(text) if k == j else offsets[k]
            assert text[:cut] == history, f"messages[:{k}] is not the reference cut at message {k}"
            assert oracle(k, True) == history + generation_prompt, "the generation prompt is not one fixed text"


@pytest.mark.parametrize("name", PREFIX_FAMILIES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_equals_per_turn_path(name: str, data: st.DataObject) -> None:
    encoder = encoder_for(name)
    kwargs = data.draw(st.sampled_from(thinking_kwargs(encoder)))
    raw = _without_thinking_off_reasoning(data.draw(agent_conversations()), kwargs)
    encoder.prefix_checked = Encoder.PREFIX_CHECK_FIRST  # no sampled check: the comparison is this test's
    try:
        fast = encoder.encode(raw, TOOLS, kwargs)
    except ParityError as exc:
        encoder.prefix = False
        with pytest.raises(ParityError) as slow_error:
            encoder.encode(raw, TOOLS, kwargs)
        assert slow_error.value.rule == exc.rule
        return
    encoder.prefix = False
    assert fast == encoder.encode(raw, TOOLS, kwargs)


@pytest.mark.parametrize("name", PREFIX_FAMILIES)
def test_long_trajectory_takes_the_fast_path_for_every_tool_turn(name: str, monkeypatch) -> None:
    """A 40-round trajectory: every tool-call turn comes from the reference render (no render of its own), and the
    result is the per-turn path's."""
    encoder = encoder_for(name)
    rng = random.Random(7)
    messages = [{"role": "user", "content": "fix it"}]
    for round_ in range(40):
        messages += [{"role": "assistant", "content": "", "reasoning_content": f"step {round_} {rng.random()}",
                      "tool_calls": [{"type": "function", "function": {"name": "shell",
                                                                        "arguments": {"command": f"ls {round_}"}}}]},
                     {"role": "tool", "content": f"out {rng.random()}\n" * 5}]
    # (a reasoning of 12+ characters: a shorter one is checked by a render of its own, invariants.rendered_beyond)
    messages.append({"role": "assistant", "content": "done", "reasoning_content": "all the tests pass now"})
    taken = []
    original = _PrefixPlan.turn

    def turn(self, i):
        result = original(self, i)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(_PrefixPlan, "turn", turn)
    renders = []
    render = encoder.renderer.render
    monkeypatch.setattr(encoder.renderer, "render", lambda *a, **k: renders.append(1) or render(*a, **k))
    encoder.prefix_checked = Encoder.PREFIX_CHECK_FIRST  # not a sampled conversation: no per-turn renders
    fast = encoder.encode(messages, TOOLS)
    assert all(taken[:40]) and len(taken) == 41  # gpt-oss's final answer rewrites history: per turn
    assert len(renders) <= 6, "a reference render, the first turn's two, and a history-rewriting last turn's three"
    encoder.prefix = False
    assert fast == encoder.encode(messages, TOOLS)


def test_a_wrong_prefix_statement_fails_loudly() -> None:
    """family-prefix-mismatch: Qwen3 described as never rewriting history, on a conversation whose second user
    query drops the first answer's reasoning. The first conversation of an encoder is always checked."""
    tok = tokenizer("qwen3")
    wrong = dataclasses.replace(Encoder(tok).family, prefix_rewritten_by=())
    encoder = Encoder(tok, family=wrong)
    assert encoder.prefix
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "reasoning_content": "r"},
                {"role": "user", "content": "c"}, {"role": "assistant", "content": "d", "reasoning_content": "s"}]
    with pytest.raises(ParityError) as error:
        encoder.encode(messages)
    assert error.value.rule == "family-prefix-mismatch"
    assert error.value.message_index == 1


def test_the_check_samples_conversations() -> None:
    encoder = encoder_for("qwen3")
    due = [encoder._check_due() for _ in range(2 * Encoder.PREFIX_CHECK_EVERY)]
    assert due[: Encoder.PREFIX_CHECK_FIRST] == [True] * Encoder.PREFIX_CHECK_FIRST
    assert sum(due) == Encoder.PREFIX_CHECK_FIRST + 2


@pytest.mark.parametrize("name", PREFIX_FAMILIES)
def test_prefix_ids_equal_whole_tokenization(name: str) -> None:
    """PrefixIds: the ids of text[:end] + tail from one tokenization of text, at every cut, with added tokens
    that straddle the cut or are completed by the tail."""
    encoder = encoder_for(name)
    rng = random.Random(3)
    pieces = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|assistant|>", "<|end|>", "<|start|>", "a",
              " b", "\n", "é", "<|", "im_", "|>", "end|>"]
    for _ in range(20):
        text = "".join(rng.choice(pieces) for _ in range(60))
        prefixes = encoder.tokens.prefixes(text)
        for end in range(len(text) + 1):
            tail = rng.choice(["", "<|im_start|>assistant\n", "|>", "end|>x", "<think>\n"])
            count, rest = prefixes.split(end, tail)
            assert prefixes.ids(0, count) + rest == encoder.tokens.encode_whole(text[:end] + tail)
        whole = encoder.tokens.encode_whole(text)
        for start, stop in [(0, len(whole)), (3, 40), (17, 18), (len(whole) - 5, len(whole))]:
            assert prefixes.ids(start, stop) == whole[start:stop]


def test_marked_render_is_the_render() -> None:
    encoder = encoder_for("qwen3_6")
    conversation = encoder.conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    text, offsets = encoder.renderer.render_marked(conversation.dicts, kwargs=conversation.kwargs)
    assert text == encoder.renderer.render(conversation.dicts, kwargs=conversation.kwargs)
    assert sorted(offsets) == [0, 1] and offsets[1] == text.index("<|im_start|>assistant")


def test_encode_without_the_fast_path_is_unchanged_for_other_families() -> None:
    encoder = Encoder(tokenizer("llama3"))
    assert not encoder.prefix
    assert swift_ext.encode(encoder.tokenizer, [{"role": "user", "content": "a"},
                                                {"role": "assistant", "content": "b"}])
