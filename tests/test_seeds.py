"""The five field reports in ../shared/seeds, as acceptance tests.

Each test sets up the reported scenario on the real fixture and asserts the
training sample is what inference really produced.
"""

from __future__ import annotations

import pytest
from conftest import oracle_ids, oracle_prompt_ids, oracle_render, tokenizer

import swift_ext

SEED_001_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am a model."},
    {"role": "user", "content": "What is your name?"},
    {"role": "assistant", "content": "My name is QwQ."},
]


def _labels_text(tok, sample, span) -> str:
    return tok.decode(sample.labels[span.label_start: span.label_end])


def test_seed_001_qwen3_non_thinking_last_turn_is_not_trained_on_empty_think():
    """Seed 001: a full render puts <think>\\n\\n</think>\\n\\n only on the last turn; inference puts it in
    every generation prompt. Each turn must be the generation prompt followed by what the model generated."""
    tok = tokenizer("qwen3")
    kwargs = {"enable_thinking": False}
    full = oracle_render(tok, SEED_001_MESSAGES, **kwargs)
    assert full.count("<think>\n\n</think>\n\n") == 1  # the seed's observation, on the real template
    samples = swift_ext.encode(tok, SEED_001_MESSAGES, chat_template_kwargs=kwargs)
    spans = [(s, t) for s in samples for t in s.turns]
    assert [t.message_index for _, t in spans] == [2, 4]
    for (sample, span), answer in zip(spans, ["I am a model.", "My name is QwQ."]):
        i = span.message_index
        prompt_ids = oracle_prompt_ids(tok, SEED_001_MESSAGES[:i], **kwargs)
        assert tok.decode(prompt_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert sample.input_ids[: span.label_start] == prompt_ids
        assert span.completion_text == answer + "<|im_end|>"
        assert _labels_text(tok, sample, span) == answer + "<|im_end|>"  # empty think is prompt, never label
    # The empty-think block the template drops from history makes turn 4's prompt diverge from turn 2's sample.
    assert len(samples) == 2


def test_seed_001_qwq_generation_prompt_opens_think():
    """Seed 001 (QwQ): the generation prompt holds <think>\\n, the turn's rendering does not."""
    tok = tokenizer("qwq")
    messages = [dict(m) for m in SEED_001_MESSAGES]
    messages[4] = {"role": "assistant", "content": "My name is QwQ.", "reasoning_content": "They ask my name."}
    samples = swift_ext.encode(tok, messages, train_turns="last")
    (sample,) = samples
    (span,) = sample.turns
    assert sample.input_ids[: span.label_start] == oracle_prompt_ids(tok, messages[:4])
    assert tok.decode(sample.input_ids[: span.label_start]).endswith("<|im_start|>assistant\n<think>\n")
    assert span.completion_text == "They ask my name.\n</think>\n\nMy name is QwQ.<|im_end|>"
    assert span.spliced and span.reasoning_formatted


@pytest.mark.parametrize("variant", ["gemma4", "gemma4_e2b"])
def test_seed_002_gemma4_thought_wrapper(variant):
    """Seed 002: Gemma-4 26B/31B put <|channel>thought\\n<channel|> in the generation prompt but not in
    rendered turns; the sample must be the generation prompt followed by the answer. E2B/E4B have no
    wrapper and need no splice. (Tokenizer derived from Gemma 3 plus the Gemma-4 control tokens.)"""
    tok = tokenizer(variant)
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "what is LLM?"},
        {"role": "assistant", "content": "A large language model."},
    ]
    kwargs = {"enable_thinking": False}
    wrapper = "<|channel>thought\n<channel|>"
    prompt_1 = oracle_render(tok, messages[:1], add_generation_prompt=True, **kwargs)
    rendered_1 = oracle_render(tok, messages[:2], **kwargs)
    samples = swift_ext.encode(tok, messages, chat_template_kwargs=kwargs)
    spans = [(s, t) for s in samples for t in s.turns]
    for (sample, span), answer in zip(spans, ["Hello!", "A large language model."]):
        prompt_ids = oracle_prompt_ids(tok, messages[: span.message_index], **kwargs)
        assert sample.input_ids[: span.label_start] == prompt_ids
        assert span.completion_text == answer + "<turn|>"
        assert sample.labels[span.label_start: span.label_end] == oracle_ids(tok, answer + "<turn|>")
    if variant == "gemma4":
        assert prompt_1.endswith("<|turn>model\n" + wrapper) and wrapper not in rendered_1  # the seed's bug
        assert all(t.spliced for _, t in spans)
        assert len(samples) == 2  # history renders the turn without the wrapper: the next prompt diverges
    else:
        assert wrapper not in prompt_1
        assert not any(t.spliced for _, t in spans) and len(samples) == 1


def test_seed_000_rl_history_reasoning():
    """Seed 000: Qwen3 strips reasoning from earlier turns. Every turn's completion keeps its own reasoning;
    turns split into samples where history was rewritten; 'keep' needs the template's own switch."""
    messages = [
        {"role": "user", "content": "Plan a trip."},
        {"role": "assistant", "content": "Go to Rome.", "reasoning_content": "Rome is nice in May."},
        {"role": "user", "content": "And after?"},
        {"role": "assistant", "content": "Then Florence.", "reasoning_content": "Florence is close."},
    ]
    tok = tokenizer("qwen3")
    samples = swift_ext.encode(tok, messages)
    assert len(samples) == 2
    for sample in samples:
        (span,) = sample.turns
        reasoning = messages[span.message_index]["reasoning_content"]
        assert reasoning in _labels_text(tok, sample, span)
    prompt_3 = oracle_render(tok, messages[:3], add_generation_prompt=True)
    assert "Rome is nice in May." not in prompt_3  # the template strips it: that is why samples split
    with pytest.raises(swift_ext.PolicyError) as info:
        swift_ext.encode(tok, messages, history_reasoning="keep")
    assert info.value.rule == "policy-keep-history"

    tok36 = tokenizer("qwen3_6")
    kept = swift_ext.encode(tok36, messages, history_reasoning="keep")
    assert len(kept) == 1  # preserve_thinking keeps history stable: one sample, both turns
    (sample,) = kept
    for span in sample.turns:
        prompt_ids = oracle_prompt_ids(tok36, messages[: span.message_index], preserve_thinking=True)
        assert sample.input_ids[: span.label_start] == prompt_ids


def test_seed_003_qwen36_trailing_newline_and_jinja_backend_masks():
    """Seed 003: Qwen3.6 trims content; ms-swift's jinja backend trained every token. The prompt must be
    the trimmed inference prompt, and only assistant completions are labelled."""
    tok = tokenizer("qwen3_6")
    tools = [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]
    messages = [
        {"role": "user", "content": "Summarise the file.\n"},
        {"role": "assistant", "content": "", "reasoning_content": "Read it first.",
         "tool_calls": [{"type": "function", "function": {"name": "read_file", "arguments": {"path": "a.txt"}}}]},
        {"role": "tool", "content": "hello world\n"},
        {"role": "assistant", "content": "It says hello world.", "reasoning_content": "Short file."},
    ]
    samples = swift_ext.encode(tok, messages, tools=tools)
    labelled = 0
    for sample in samples:
        for span in sample.turns:
            assert sample.input_ids[: span.label_start] == oracle_prompt_ids(tok, messages[: span.message_index], tools)
            text = _labels_text(tok, sample, span)
            assert "Summarise the file." not in text and "hello world\n" not in text.replace("hello world.", "")
            labelled += span.label_end - span.label_start
        assert sum(1 for x in sample.labels if x != -100) == sum(t.label_end - t.label_start for t in sample.turns)
    assert 0 < labelled < sum(len(s) for s in samples) / 2


def test_seed_004_never_masks_everything_silently():
    """Seed 004: a trainer that cannot find the response marker masked every token and trained at zero loss.
    Here each such case is an error naming the conversation and the rule."""
    tok = tokenizer("qwen3")
    only_context = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey", "loss": False}]
    with pytest.raises(swift_ext.InputError) as info:
        swift_ext.encode(tok, only_context, conversation_index=17)
    assert info.value.rule == "I5-zero-label" and info.value.conversation_index == 17
    with pytest.raises(swift_ext.ParityError) as info:
        swift_ext.encode(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}],
                         stop_strings=["<never-generated>"], conversation_index=3)
    assert info.value.rule == "I2-no-stop-string" and "conversation 3" in str(info.value)
    custom = (
        "{% for m in messages %}<<{{ m.role }}>> {{ m.content }}{% if m.role == 'assistant' %}<|im_end|>{% endif %}"
        "\n{% endfor %}{% if add_generation_prompt %}<<assistant>> {% endif %}"
    )
    with pytest.raises(swift_ext.UnknownFamilyError):
        swift_ext.encode(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}],
                         chat_template=custom, strict=True)
    # Not strict: an unknown but self-consistent template works through the generic path (eos = <|im_end|>).
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]
    (sample,) = swift_ext.encode(tok, chat, chat_template=custom)
    assert sample.input_ids[: sample.turns[0].label_start] == oracle_prompt_ids(tok, chat[:1], chat_template=custom)
    assert sample.turns[0].completion_text == "Hey<|im_end|>"


@pytest.mark.parametrize("name, kwargs, messages", [
    ("qwq", {}, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]),
    ("gemma4", {"enable_thinking": True}, [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "cold"},
        {"role": "assistant", "content": "It is cold."}]),
])
def test_open_reasoning_block_is_closed(name, kwargs, messages):
    """Seed 001's QwQ case, and Gemma-4 after a tool response with thinking on: the generation prompt opens a
    reasoning block. A turn without reasoning must close it the way the template writes a turn with reasoning
    (here: the template's own rendering with reasoning 'R', minus 'R'), never answer inside the open block."""
    tok = tokenizer(name)
    i = len(messages) - 1
    with_reasoning = [*messages[:i], {**messages[i], "reasoning_content": "R"}]
    prompt = oracle_render(tok, messages[:i], add_generation_prompt=True, **kwargs)
    turn = oracle_render(tok, with_reasoning, **kwargs)
    stop = swift_ext.get_encoder(tok).family.stop_strings[0]
    (sample,) = swift_ext.encode(tok, messages, chat_template_kwargs=kwargs, train_turns="last")
    span = sample.turns[-1]
    assert sample.input_ids[: span.label_start] == oracle_prompt_ids(tok, messages[:i], **kwargs)
    if turn.startswith(prompt + "R"):  # Gemma-4 renders the turn's reasoning right after the open block
        expected = turn[len(prompt) + 1:]
        assert span.completion_text == expected[: expected.index(stop) + len(stop)]
    else:  # QwQ never renders reasoning: the family's format closes the block
        assert name == "qwq" and "R" not in turn[len(prompt) - 20:]
        assert span.completion_text == "\n</think>\n\nHello there.<|im_end|>"
    assert span.reasoning_formatted
