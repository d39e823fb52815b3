"""Token-level parity on every fixture family, against apply_chat_template.

For each family and a few conversations (plain, with reasoning, with tools),
every trained turn's prompt must be exactly the tokenized inference prompt
(I1), and where the template's own rendering extends its generation prompt
the labels must be exactly the generated tokens that rendering implies (I2).
Spliced turns (rendering disagrees with the generation prompt) have their exact
expectations in ``test_seeds.py``.
"""

from __future__ import annotations

import pytest
from conftest import ALL_FIXTURES, oracle_ids, oracle_prompt_ids, oracle_render, tokenizer

import swift_ext
from swift_ext.dev.fixtures import expected_family

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]

# R1-Distill templates render a turn's tool calls only when its content is null and then add null to a string:
# no server can show them a call (swift-ext refuses such a turn: template-drops-tool-calls / template-render).
NO_TOOL_ROLE = {"gemma3", "mistral_small", "phi4_reasoning", "deepseek_r1_distill_qwen", "deepseek_r1_distill_llama"}
# llama.cpp's R1-Distill-Qwen copy opens <think> in its prompt and never renders reasoning, and no family describes
# it: the generic path refuses reasoning there (test_generic_open_block_is_refused), it never guesses a format.
NO_REASONING = {"llama3", "gemma3", "qwen3_coder", "mistral_small", "deepseek_r1_distill_qwen_llamacpp"}
REASONING_KWARGS = {"deepseek_v3_2": {"thinking": True}}
"""Templates no family describes: the switch under which they render reasoning (the family knows it elsewhere)."""


def _arguments(family: swift_ext.Family, args: dict):
    import json

    return json.dumps(args) if family.tool_arguments == "json" else args


def conversations(family: swift_ext.Family, name: str) -> dict[str, list[dict]]:
    convs = {
        "plain": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "Seven."},
            {"role": "user", "content": "Another one, please."},
            {"role": "assistant", "content": "Eleven is prime too."},
        ],
    }
    if name not in NO_REASONING:
        # The oracle gets reasoning under the field the template reads (gpt-oss: `thinking`); transformers
        # >= 5.2x aliases the names itself, older versions do not. swift_ext accepts every alias.
        field = family.reasoning_field or "reasoning_content"
        convs["reasoning"] = [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", field: "Two plus two is four."},
            {"role": "user", "content": "Times three?"},
            {"role": "assistant", "content": "12", field: "Four times three is twelve."},
        ]
    if name not in NO_TOOL_ROLE:
        # Kimi-K2 renders the call id ("functions.<name>:<n>" by its convention) instead of the name.
        call = {"type": "function", "id": "functions.get_weather:0",
                "function": {"name": "get_weather", "arguments": _arguments(family, {"city": "Oslo"})}}
        convs["tools"] = [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": '{"temp": -3}'},
            {"role": "assistant", "content": "It is -3 degrees in Oslo."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "Any time."},
        ]
    return convs


def kwarg_variants(family: swift_ext.Family, conv_name: str, name: str) -> list[dict]:
    if conv_name == "reasoning" and name in REASONING_KWARGS:
        return [REASONING_KWARGS[name]]
    if conv_name == "reasoning" and family.thinking_default is False:
        return [{family.thinking_kwarg: True}]  # reasoning is only generated with thinking on
    variants = [{}]
    if family.thinking_kwarg and conv_name != "reasoning":
        variants.append({family.thinking_kwarg: not family.thinking_default})
    return variants


def _expected_completion(family, stops, rendering: str, prompt: str, message: dict) -> str | None:
    """What the model generates when the turn's rendering extends the prompt (None if it does not)."""
    if not rendering.startswith(prompt):
        return None
    tail = rendering[len(prompt):]
    cuts = [tail.find(s) + len(s) for s in stops if s in tail]
    if cuts:
        return tail[: min(cuts)]
    extra = family.stop_after_tool_calls if message.get("tool_calls") else None
    return tail + (extra or family.stop_after_turn)


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_trained_turn_matches_inference(name):
    tok = tokenizer(name)
    encoder = swift_ext.get_encoder(tok)
    family = encoder.family
    assert family.name == expected_family(name)  # the fixture table's family ("hf": no description matches)
    checked = 0
    for conv_name, messages in conversations(family, name).items():
        tools = TOOLS if conv_name == "tools" else None
        for kwargs in kwarg_variants(family, conv_name, name):
            samples = swift_ext.encode(tok, messages, tools=tools, chat_template_kwargs=kwargs)
            swift_ext.verify(tok, messages, samples, tools=tools, chat_template_kwargs=kwargs)
            spans = [(s, t) for s in samples for t in s.turns]
            assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            assert [t.message_index for _, t in spans] == assistant_turns
            for sample, span in spans:
                i = span.message_index
                prompt_ids = oracle_prompt_ids(tok, messages[:i], tools, **kwargs)
                assert sample.input_ids[: span.label_start] == prompt_ids, (name, conv_name, kwargs, i)
                labels = sample.labels[span.label_start: span.label_end]
                assert labels == sample.input_ids[span.label_start: span.label_end]
                previous_end = max([t.label_end for t in sample.turns if t.label_end <= span.label_start], default=0)
                assert all(x == -100 for x in sample.labels[previous_end: span.label_start])  # I3
                prompt = oracle_render(tok, messages[:i], tools, add_generation_prompt=True, **kwargs)
                rendering = oracle_render(tok, messages[: i + 1], tools, **kwargs)
                expected = _expected_completion(family, encoder.stop_strings, rendering, prompt, messages[i])
                if expected is not None and not span.reasoning_formatted:
                    assert span.completion_text == expected, (name, conv_name, kwargs, i)
                    assert labels == oracle_ids(tok, expected)
                else:
                    assert span.spliced or span.reasoning_formatted
                checked += 1
    assert checked >= 2


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_samples_merge_exactly_when_the_next_prompt_extends(name):
    """I4 against the oracle: a new sample starts iff the next prompt does not extend the current one."""
    tok = tokenizer(name)
    family = swift_ext.get_encoder(tok).family
    messages = conversations(family, name)["plain"]
    samples = swift_ext.encode(tok, messages)
    turns = [(k, t) for k, s in enumerate(samples) for t in s.turns]
    for (k_prev, prev), (k_next, nxt) in zip(turns, turns[1:]):
        prompt_ids = oracle_prompt_ids(tok, messages[: nxt.message_index])
        built = samples[k_prev].input_ids[: prev.label_end]
        extends = prompt_ids[: len(built)] == built
        assert (k_next == k_prev) == extends, (name, prev.message_index, nxt.message_index)


@pytest.mark.parametrize("name", ["qwen3", "qwen3_5", "llama3", "gpt_oss", "glm4_7"])
def test_loss_false_turn_is_context_only(name):
    tok = tokenizer(name)
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there.", "loss": False},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    samples = swift_ext.encode(tok, messages)
    assert [t.message_index for s in samples for t in s.turns] == [3]
    (sample,) = samples
    assert sample.input_ids[: sample.turns[0].label_start] == oracle_prompt_ids(tok, messages[:3])
    assert "Hello there." not in tok.decode([x for x in sample.labels if x != -100])


def test_emitted_token_ratio_is_recorded():
    tok = tokenizer("qwen3")
    messages = conversations(swift_ext.load_family("qwen3"), "qwen3")["reasoning"]
    stats = swift_ext.EncodeStats()
    samples = swift_ext.encode(tok, messages, stats=stats)
    full = oracle_ids(tok, oracle_render(tok, messages))
    assert stats.full_render_tokens == len(full)
    assert stats.emitted_tokens == sum(len(s) for s in samples)
    assert stats.emitted_ratio == pytest.approx(stats.emitted_tokens / len(full))
    assert len(samples) == 2 and stats.emitted_ratio > 1.0  # Qwen3 strips past reasoning: one sample per query
