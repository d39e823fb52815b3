"""Text a turn holds twice: a short reasoning, or one that its tool call also holds (name, id, arguments).

Whether the template rendered a turn's reasoning, and whether it rendered each call, cannot be told by counting
where the same characters also stand in the call: Kimi-K2.5's ids read ``functions.get_weather:0``, and arguments
written as JSON text (``"\\u00c5"``) are rendered re-serialised (``"Å"``). Found by the property tests on
Kimi-K2.5: reasoning ``"0"`` with such arguments was trained twice (``00</think>``), reasoning ``"w"`` made the
call look dropped (``template-drops-tool-calls``).

Expected completions come from ``apply_chat_template`` of the real template (where it renders the reasoning), or
from the family's documented format where it drops it (QwQ: ``{reasoning}\\n</think>\\n\\n`` after a prompt ending
``<think>\\n``), never from the code under test.
"""

from __future__ import annotations

import json

import pytest
from conftest import oracle_ids, oracle_prompt_ids, oracle_render, tokenizer

import swift_ext

QUESTION = {"role": "user", "content": "What is the weather in Århus?"}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                         "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}
ARGUMENTS = {"query": "Å"}
# texts a call also holds: a digit of its id, a part of its name, the name, one letter of it
REASONINGS = ["0", "weather", "get_weather", "w"]


def _turn(reasoning: str, arguments: object) -> dict:
    call = {"id": "functions.get_weather:0", "type": "function",
            "function": {"name": "get_weather", "arguments": arguments}}
    return {"role": "assistant", "content": "", "reasoning_content": reasoning, "tool_calls": [call]}


def _encode_one(tok, messages) -> swift_ext.Sample:
    (sample,) = swift_ext.encode(tok, messages, [TOOL])
    swift_ext.verify(tok, messages, [sample], [TOOL])
    return sample


@pytest.mark.parametrize("reasoning", REASONINGS)
@pytest.mark.parametrize("name", ["kimi_k2_5", "qwen3"])
def test_reasoning_the_call_also_holds_is_trained_once(name: str, reasoning: str) -> None:
    """Templates that render the turn's reasoning: the completion is the template's own text after the prompt."""
    tok = tokenizer(name)
    # JSON text with an escape, as an OpenAI client sends it; the server parses it before rendering
    written = [QUESTION, _turn(reasoning, json.dumps(ARGUMENTS))]
    sample = _encode_one(tok, written)
    served = [QUESTION, _turn(reasoning, ARGUMENTS)]
    prompt = oracle_render(tok, served[:1], [TOOL], add_generation_prompt=True)
    full = oracle_render(tok, served, [TOOL])
    assert full.startswith(prompt)
    expected = full[len(prompt):full.index("<|im_end|>", len(prompt)) + len("<|im_end|>")]
    (span,) = sample.turns
    assert span.completion_text == expected
    assert sample.input_ids[:span.label_start] == oracle_prompt_ids(tok, served[:1], [TOOL])
    assert sample.labels[span.label_start:span.label_end] == oracle_ids(tok, expected)


@pytest.mark.parametrize("reasoning", REASONINGS)
def test_reasoning_a_template_drops_is_restored_once(reasoning: str) -> None:
    """QwQ renders no reasoning and its prompt ends ``<think>\\n``: the model writes ``{reasoning}\\n</think>\\n\\n``
    and then the call, even where the call's name holds the reasoning's text (counting would call it rendered)."""
    tok = tokenizer("qwq")
    messages = [QUESTION, _turn(reasoning, ARGUMENTS)]
    sample = _encode_one(tok, messages)
    prompt = oracle_render(tok, messages[:1], [TOOL], add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    full = oracle_render(tok, messages, [TOOL])
    turn_start = len(prompt) - len("<think>\n")
    call = full[turn_start:full.index("<|im_end|>", turn_start) + len("<|im_end|>")]
    assert "</think>" not in call  # the template renders no reasoning block for the turn
    (span,) = sample.turns
    assert span.completion_text == f"{reasoning}\n</think>\n\n{call}"


@pytest.mark.parametrize("name", ["qwen3_6", "qwen3"])
def test_short_reasoning_on_the_fast_path_of_a_trajectory(name: str) -> None:
    """Tool rounds after one task take the fast path (one render for the stretch): a turn whose reasoning counting
    cannot decide is decided by the template there too, with the whole prompt (the fast path reads only the last
    4 KB of a prompt: the tool outputs are longer), and every turn is the template's."""
    tok = tokenizer(name)
    messages = [QUESTION]
    for k, reasoning in enumerate(["0", "w", "weather", "checking the forecast first"]):
        messages += [_turn(reasoning, ARGUMENTS), {"role": "tool", "tool_call_id": "functions.get_weather:0",
                                                   "content": f"sunny, {k}°C\n" + "x" * 3000}]
    messages.append({"role": "assistant", "content": "Sunny.", "reasoning_content": "1"})
    encoder = swift_ext.get_encoder(tok)
    encoder.prefix_checked = swift_ext.Encoder.PREFIX_CHECK_FIRST  # past the checked conversations: the fast path
    samples = encoder.encode(messages, [TOOL])
    swift_ext.verify(tok, messages, samples, [TOOL])
    full = oracle_render(tok, messages, [TOOL])
    turns = [(sample, span) for sample in samples for span in sample.turns]
    assert [span.message_index for _, span in turns] == [1, 3, 5, 7, 9]
    for sample, span in turns:
        prompt = oracle_render(tok, messages[:span.message_index], [TOOL], add_generation_prompt=True)
        assert full.startswith(prompt)
        expected = full[len(prompt):full.index("<|im_end|>", len(prompt)) + len("<|im_end|>")]
        assert span.completion_text == expected
        assert sample.input_ids[:span.label_start] == oracle_ids(tok, prompt)


def test_the_same_arguments_written_twice_in_two_escapes_are_not_foreign_text() -> None:
    """Two turns call with the same arguments, written ``{"city": "Å"}`` and ``{"city": "\\u00c5"}``: the second
    turn renders the text the first one wrote, and it is its own (DeepSeek-V3.1 writes arguments as JSON text).
    Found by the property tests: it was ``I3-foreign-text`` (only the written form counted as the turn's)."""
    tok = tokenizer("deepseek_v3_1")
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                                "parameters": {"type": "object",
                                                               "properties": {"city": {"type": "string"}}}}}

    def call_turn(n: int, arguments: str) -> dict:
        return {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"functions.get_weather:{n}", "type": "function",
             "function": {"name": "get_weather", "arguments": arguments}}]}

    def tool(n: int) -> dict:
        return {"role": "tool", "tool_call_id": f"functions.get_weather:{n}", "content": f"sunny {n}"}

    messages = [{"role": "user", "content": "Weather in Århus?"}, call_turn(0, '{"city": "Å"}'), tool(0),
                {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "And now?"},
                call_turn(1, '{"city": "\\u00c5"}'), tool(1), {"role": "assistant", "content": "Still sunny."}]
    samples = swift_ext.encode(tok, messages, [weather], {"thinking": True})
    swift_ext.verify(tok, messages, samples, [weather], {"thinking": True})
    # the oracle: the template given the arguments as the encoder hands them (parsed, written again)
    parsed = json.loads(json.dumps(messages))
    for m in parsed:
        for c in m.get("tool_calls", ()):
            c["function"]["arguments"] = json.dumps(json.loads(c["function"]["arguments"]), ensure_ascii=False)
    prompt = oracle_prompt_ids(tok, parsed[:5], [weather], thinking=True)
    sample = next(s for s in samples if s.input_ids[:len(prompt)] == prompt)
    labelled = [t for t, label in zip(sample.input_ids, sample.labels) if label != -100]
    assert '{"city": "Å"}' in tok.decode(labelled)
