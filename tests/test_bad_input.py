"""Malformed conversations: each is an error naming the conversation and the rule,
or documented behaviour tested as such."""

from __future__ import annotations

import pytest
from conftest import oracle_prompt_ids, tokenizer

import swift_ext

USER = {"role": "user", "content": "Hi"}
ANSWER = {"role": "assistant", "content": "Hello."}
CALL = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}

CASES = {
    "missing role": ([{"content": "Hi"}, ANSWER], "input-missing-role", 0),
    "unknown role": ([{"role": "robot", "content": "Hi"}, ANSWER], "input-unknown-role", 0),
    "non-string content": ([{"role": "user", "content": 42}, ANSWER], "input-content-type", 0),
    "dict content": ([{"role": "user", "content": {"text": "Hi"}}, ANSWER], "input-content-type", 0),
    "assistant first": ([ANSWER, USER, ANSWER], "input-assistant-first", 0),
    "system then assistant first": ([{"role": "system", "content": "S"}, ANSWER], "input-assistant-first", 1),
    "empty conversation": ([], "input-empty", None),
    "not a list": ("hello", "input-not-a-list", None),
    "only system": ([{"role": "system", "content": "S"}], "input-no-turns", None),
    "no assistant turn": ([USER], "I5-no-assistant-turn", None),
    "tool result without a call": ([USER, ANSWER, {"role": "tool", "content": "1"}], "input-orphan-tool-result", 2),
    "more results than calls": (
        [USER, {"role": "assistant", "content": "", "tool_calls": [CALL]}, {"role": "tool", "content": "1"},
         {"role": "tool", "content": "2"}, ANSWER], "input-orphan-tool-result", 3),
    "malformed argument JSON": (
        [USER, {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": '{"x": 1'}}]}],
        "input-bad-arguments", 1),
    "arguments not an object": (
        [USER, {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}],
        "input-bad-arguments", 1),
    "tool call without name": (
        [USER, {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}],
        "input-tool-call-name", 1),
    "reasoning on a user message": (
        [{"role": "user", "content": "Hi", "reasoning_content": "hmm"}, ANSWER], "input-reasoning-role", 0),
    "tool calls on a user message": ([{"role": "user", "content": "Hi", "tool_calls": [CALL]}, ANSWER],
                                     "input-tool-calls-role", 0),
    "loss not a bool": ([USER, {"role": "assistant", "content": "x", "loss": "no"}], "input-bad-loss", 1),
    "every turn loss false": ([USER, {"role": "assistant", "content": "x", "loss": False}], "I5-zero-label", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_names_conversation_and_rule(case):
    tok = tokenizer("qwen3")
    messages, rule, message_index = CASES[case]
    with pytest.raises(swift_ext.ParityError) as info:
        swift_ext.encode(tok, messages, conversation_index=41)
    error = info.value
    assert error.rule == rule
    assert error.conversation_index == 41 and "conversation 41" in str(error)
    assert error.message_index == message_index
    assert f"[{rule}]" in str(error)


def test_template_that_raises_names_the_turn():
    tok = tokenizer("gemma3")  # Gemma 3 requires strictly alternating user/assistant turns
    messages = [USER, USER, ANSWER]
    with pytest.raises(swift_ext.TemplateRenderError) as info:
        swift_ext.encode(tok, messages, conversation_index=5)
    assert "alternate" in str(info.value) and "conversation 5" in str(info.value)
    assert "messages[:2]" in str(info.value)


def test_template_syntax_error():
    tok = tokenizer("qwen3")
    with pytest.raises(swift_ext.TemplateRenderError) as info:
        swift_ext.encode(tok, [USER, ANSWER], chat_template="{% for m in messages %}{{ m.content }")
    assert info.value.rule == "template-syntax"


def test_sandbox_blocks_escape():
    tok = tokenizer("qwen3")
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(swift_ext.TemplateRenderError):
        swift_ext.encode(tok, [USER, ANSWER], chat_template=evil)


def test_inline_think_is_reasoning():
    """Documented: inline <think>R</think>C in assistant content is the same as reasoning_content=R."""
    tok = tokenizer("qwen3")
    inline = [USER, {"role": "assistant", "content": "<think>\nShort.\n</think>\n\nHello."}]
    field = [USER, {"role": "assistant", "content": "Hello.", "reasoning_content": "Short."}]
    assert swift_ext.encode(tok, inline)[0].input_ids == swift_ext.encode(tok, field)[0].input_ids


def test_aliases_thinking_and_reasoning_fields():
    tok = tokenizer("gpt_oss")
    a = [USER, {"role": "assistant", "content": "Hello.", "thinking": "Greet."}]
    b = [USER, {"role": "assistant", "content": "Hello.", "reasoning": "Greet."}]
    c = [USER, {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet."}]
    ids = [swift_ext.encode(tok, m)[0].input_ids for m in (a, b, c)]
    assert ids[0] == ids[1] == ids[2]
    assert "Greet." in tok.decode(ids[0])


def test_string_and_dict_arguments_give_the_same_sample():
    tok = tokenizer("qwen3_5")  # its template iterates arguments|items: string arguments are parsed
    def conv(args):
        return [USER, {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": args}}]}]
    assert swift_ext.encode(tok, conv('{"x": 1}'))[0].input_ids == swift_ext.encode(tok, conv({"x": 1}))[0].input_ids


def test_reasoning_policy_drop_counts():
    tok = tokenizer("llama3")
    messages = [USER, {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet."}]
    with pytest.raises(swift_ext.ReasoningDroppedError) as info:
        swift_ext.encode(tok, messages)
    assert info.value.rule == "reasoning-dropped"
    stats = swift_ext.EncodeStats()
    (sample,) = swift_ext.encode(tok, messages, reasoning_policy="drop", stats=stats)
    assert stats.reasoning_dropped == 1
    assert sample.input_ids[: sample.turns[0].label_start] == oracle_prompt_ids(tok, messages[:1])


def test_thinking_off_with_reasoning_drop_policy_renders_without_it():
    tok = tokenizer("qwen3")
    messages = [USER, {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet."}]
    kwargs = {"enable_thinking": False}
    with pytest.raises(swift_ext.ReasoningDroppedError) as info:
        swift_ext.encode(tok, messages, chat_template_kwargs=kwargs)
    assert info.value.rule == "reasoning-thinking-off"
    stats = swift_ext.EncodeStats()
    (sample,) = swift_ext.encode(tok, messages, chat_template_kwargs=kwargs, reasoning_policy="drop", stats=stats)
    assert stats.reasoning_dropped == 1 and sample.turns[0].completion_text == "Hello.<|im_end|>"


def test_unknown_policy_values():
    tok = tokenizer("qwen3")
    for kwargs in ({"reasoning_policy": "ignore"}, {"history_reasoning": "strip"}, {"train_turns": "first"}):
        with pytest.raises(swift_ext.PolicyError):
            swift_ext.encode(tok, [USER, ANSWER], **kwargs)
    with pytest.raises(swift_ext.UnknownFamilyError):
        swift_ext.encode(tok, [USER, ANSWER], family="qwen9")


def test_lossy_tokenizer_is_reported():
    """A tokenizer that drops whitespace (transformers < 5.20 loads DeepSeek's that way) must not go unnoticed."""
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast

    base = tokenizer("qwen3")
    raw = base.backend_tokenizer.__class__.from_str(base.backend_tokenizer.to_str())
    raw.normalizer = normalizers.Replace(" ", "")
    lossy = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>")
    lossy.chat_template = base.chat_template
    with pytest.warns(UserWarning, match="does not round-trip"):
        swift_ext.encode(lossy, [USER, ANSWER])
