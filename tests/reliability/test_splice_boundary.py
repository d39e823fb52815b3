"""The splice boundary: where a generation prompt already opened (or closed) a reasoning block, the completion is
exactly what the model writes after it, on the real templates that do this.

Expected completions are written by hand from each model's documented output format (DeepSeek-R1's model card:
the reply starts with ``<think>\\n`` and reads ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``; Kimi-K2.5/K2.6:
``<think>{reasoning}</think>{answer}``; DeepSeek-V3.2: ``</think>`` ends the thinking part), never copied from the
code under test. Prompts are ``apply_chat_template(..., add_generation_prompt=True)`` of the real template.
"""

from __future__ import annotations

import pytest
from conftest import oracle_ids, oracle_prompt_ids, tokenizer

import swift_ext
from swift_ext.types import Sample, TurnSpan

R1_EOS = "<｜end▁of▁sentence｜>"
QUESTION = {"role": "user", "content": "What is 17 * 3?"}
REASONING = "17 * 3 = 51."
ANSWER = "It is 51."

# fixture, chat_template_kwargs, turn (with or without reasoning), completion the model writes after the prompt
CASES = {
    # DeepSeek-R1 (MAI-DS-R1 ships its template) and the R1 distills: the prompt ends "<｜Assistant｜><think>\n".
    "r1-reasoning": ("mai_ds_r1", {}, True, f"{REASONING}\n</think>\n\n{ANSWER}{R1_EOS}"),
    "r1-no-reasoning": ("mai_ds_r1", {}, False, f"\n</think>\n\n{ANSWER}{R1_EOS}"),
    "distill-qwen-reasoning": ("deepseek_r1_distill_qwen", {}, True, f"{REASONING}\n</think>\n\n{ANSWER}{R1_EOS}"),
    "distill-qwen-no-reasoning": ("deepseek_r1_distill_qwen", {}, False, f"\n</think>\n\n{ANSWER}{R1_EOS}"),
    "distill-llama-reasoning": ("deepseek_r1_distill_llama", {}, True, f"{REASONING}\n</think>\n\n{ANSWER}{R1_EOS}"),
    "distill-llama-no-reasoning": ("deepseek_r1_distill_llama", {}, False, f"\n</think>\n\n{ANSWER}{R1_EOS}"),
    # R1-0528 opens nothing in its prompt: the model writes the whole block.
    "r1-0528-reasoning": ("deepseek_r1", {}, True, f"<think>\n{REASONING}\n</think>\n\n{ANSWER}{R1_EOS}"),
    # Kimi-K2.5 / K2.6: the prompt ends "<think>".
    "kimi-k2.5-reasoning": ("kimi_k2_5", {}, True, f"{REASONING}</think>{ANSWER}<|im_end|>"),
    "kimi-k2.5-no-reasoning": ("kimi_k2_5", {}, False, f"</think>{ANSWER}<|im_end|>"),
    "kimi-k2.6-reasoning": ("kimi_k2_6", {}, True, f"{REASONING}</think>{ANSWER}<|im_end|>"),
    # DeepSeek-V3.2 (llama.cpp's template): thinking off, the prompt ends "<think></think>"; on, "<think>".
    "v3.2-thinking-off": ("deepseek_v3_2", {"thinking": False}, False, f"{ANSWER}{R1_EOS}"),
    "v3.2-thinking-on": ("deepseek_v3_2", {"thinking": True}, True, f"{REASONING}</think>{ANSWER}{R1_EOS}"),
}


def _turn(reasoning: bool) -> dict:
    return {"role": "assistant", "content": ANSWER, **({"reasoning_content": REASONING} if reasoning else {})}


@pytest.mark.parametrize("case", list(CASES))
def test_completion_is_the_continuation_of_the_prompt(case: str) -> None:
    name, kwargs, with_reasoning, expected = CASES[case]
    tok = tokenizer(name)
    messages = [QUESTION, _turn(with_reasoning)]
    (sample,) = swift_ext.encode(tok, messages, chat_template_kwargs=kwargs)
    swift_ext.verify(tok, messages, sample and [sample], chat_template_kwargs=kwargs)
    (span,) = sample.turns
    prompt_ids = oracle_prompt_ids(tok, [QUESTION], **kwargs)
    assert sample.input_ids[: span.label_start] == prompt_ids
    assert span.completion_text == expected
    assert sample.labels[span.label_start:span.label_end] == oracle_ids(tok, expected)


def test_multi_turn_r1_distill_every_turn_continues_its_prompt() -> None:
    tok = tokenizer("deepseek_r1_distill_qwen")
    messages = [QUESTION, _turn(True), {"role": "user", "content": "And 17 * 4?"},
                {"role": "assistant", "content": "68.", "reasoning_content": "51 + 17 = 68."}]
    samples = swift_ext.encode(tok, messages)
    swift_ext.verify(tok, messages, samples)
    texts = [t.completion_text for s in samples for t in s.turns]
    assert texts == [f"{REASONING}\n</think>\n\n{ANSWER}{R1_EOS}", f"51 + 17 = 68.\n</think>\n\n68.{R1_EOS}"]
    assert all("<think>" not in text for text in texts)


# A template no family describes whose prompt ends "<think>\n\n" while its turns render "<think>\n{reasoning}".
DOUBLE_NEWLINE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' %}<think>\n{{ m.reasoning_content }}\n</think>\n\n{% endif %}"
    "{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n{% endif %}"
)


def test_overlap_is_taken_at_its_full_length() -> None:
    """The prompt's "<think>\\n\\n" holds the turn's "<think>\\n": the label starts with the reasoning itself."""
    tok = tokenizer("qwen3")
    messages = [QUESTION, _turn(True)]
    samples = swift_ext.encode(tok, messages, chat_template=DOUBLE_NEWLINE)
    swift_ext.verify(tok, messages, samples, chat_template=DOUBLE_NEWLINE)
    assert samples[0].turns[0].completion_text == f"{REASONING}\n</think>\n\n{ANSWER}<|im_end|>"


def test_generic_open_block_is_refused() -> None:
    """llama.cpp's R1-Distill-Qwen copy (no family describes it) opens <think> in its prompt and renders only the
    answer: the template never shows how the block closes, so the generic path refuses instead of guessing."""
    tok = tokenizer("deepseek_r1_distill_qwen_llamacpp")
    assert swift_ext.get_encoder(tok).family.name == "hf"
    with pytest.raises(swift_ext.ParityError) as info:
        swift_ext.encode(tok, [QUESTION, _turn(False)], chat_template_kwargs={"enable_thinking": True})
    assert info.value.rule == "reasoning-block-open" and info.value.message_index == 1
    # with thinking off the prompt closes the block itself ("<think>\n</think>"): the answer follows it
    (sample,) = swift_ext.encode(tok, [QUESTION, _turn(False)])
    assert sample.turns[0].completion_text == f"{ANSWER}{R1_EOS}"


def test_call_after_tool_outputs_is_refused() -> None:
    """MAI-DS-R1's (DeepSeek-R1's) template renders a call made right after tool outputs inside the outputs block,
    where no generation prompt leads: there is no exact sample, and encode says so."""
    tok = tokenizer("mai_ds_r1")
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    messages = [QUESTION, {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "content": "cold"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    with pytest.raises(swift_ext.ParityError) as info:
        swift_ext.encode(tok, messages, reasoning_policy="drop")
    assert info.value.rule in ("turn-not-located", "template-drops-tool-calls") and info.value.message_index == 3


def _sample_with(tok, messages, completion: str, **kwargs) -> list[Sample]:
    """A sample built by hand: the real inference prompt, then ``completion`` labelled (what a buggy encoder gave)."""
    prompt = oracle_prompt_ids(tok, messages[:1], **kwargs)
    ids = oracle_ids(tok, completion)
    span = TurnSpan(message_index=1, prompt_end=len(prompt), label_start=len(prompt),
                    label_end=len(prompt) + len(ids), completion_text=completion, spliced=True)
    return [Sample(prompt + ids, [-100] * len(prompt) + ids, [span])]


@pytest.mark.parametrize(("name", "kwargs", "completion"), [
    # the old R1 label: a second <think> after the prompt's <think>\n
    ("mai_ds_r1", {}, f"<think>\n\n</think>\n\n{ANSWER}{R1_EOS}"),
    # the old Kimi-K2.5 label: the block closed twice
    ("kimi_k2_5", {}, f"<think>{REASONING}</think></think>{ANSWER}<|im_end|>"),
    # the old V3.2 label: a close after the prompt's own <think></think>
    ("deepseek_v3_2", {"thinking": False}, f"</think>{ANSWER}{R1_EOS}"),
    # an answer left inside the block the prompt opened
    ("mai_ds_r1", {}, f"{ANSWER}{R1_EOS}"),
])
def test_verify_rejects_a_broken_reasoning_block(name: str, kwargs: dict, completion: str) -> None:
    tok = tokenizer(name)
    messages = [QUESTION, _turn(False)]
    with pytest.raises(swift_ext.VerificationError) as info:
        swift_ext.verify(tok, messages, _sample_with(tok, messages, completion, **kwargs),
                         chat_template_kwargs=kwargs)
    assert info.value.rule == "I2-reasoning-block" and info.value.message_index == 1


@pytest.mark.parametrize("answer", ["t\nIt is sunny.", "ght\nSunny.", "hought\nSunny."])
def test_an_answer_that_begins_like_the_prompt_ends_keeps_its_words(answer: str) -> None:
    """Gemma-4's prompt after a tool response ends ``<|channel>thought\\n``; an answer without reasoning that
    begins ``t\\n`` (what the prompt ends with) was cut as if the prompt had written it: the turn lost its first
    characters and raised I2-content-not-rendered (found by the property tests). The completion is the family's
    empty thought block's close, then the whole answer (Gemma-4 model card: ``<|channel>thought\\n...<channel|>``
    then the reply)."""
    tok = tokenizer("gemma4")
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                                "parameters": {"type": "object", "properties": {}}}}
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": {}}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
                {"role": "assistant", "content": answer}]
    kwargs = {"enable_thinking": True}
    samples = swift_ext.encode(tok, messages, [weather], kwargs)
    swift_ext.verify(tok, messages, samples, [weather], kwargs)
    prompt = oracle_prompt_ids(tok, messages[:3], [weather], **kwargs)
    sample = next(s for s in samples if s.input_ids[:len(prompt)] == prompt)
    completion = sample.input_ids[len(prompt):]
    assert completion == oracle_ids(tok, f"\n<channel|>{answer}<turn|>")
    assert sample.labels[len(prompt):] == completion
