"""The ``<family>_parity`` agent templates render tools, tool calls and tool responses byte for byte as the
family's Hugging Face chat template does, and ``get_toolcall`` parses back exactly what they rendered."""

from __future__ import annotations

import copy
import json
from functools import cache

import pytest
from swift_helpers import load_tokenizer, require_swift

require_swift()

from swift.agent_template import agent_template_map  # noqa: E402

from swift_ext.dev.fixtures import FIXTURES  # noqa: E402
from swift_ext.ms_swift import agent as parity_agent  # noqa: E402
from swift_ext.ms_swift import register  # noqa: E402

register()

# family -> fixture directory whose chat template the agent template must reproduce
CHECKED = {family: FIXTURES[family] for family in (
    "qwen3", "qwen3_thinking", "qwq", "qwen3_coder", "qwen3_5", "qwen3_6", "glm4_7", "deepseek_v3_1", "gpt_oss")}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city.  ",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "days": {"type": "integer"},
                    "options": {"type": "object", "description": "Nested options"},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web (unicode: café ✓)",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "tags": {"type": "array"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_trip",
            "description": "Book a trip.",
            "parameters": {
                "type": "object",
                "properties": {
                    "mode": {"type": "string", "enum": ["train", "plane"], "description": "How to travel"},
                    "seats": {"type": "number", "default": 1},
                    "refundable": {"type": "boolean"},
                    "note": {"type": "string", "nullable": True},
                    "stops": {"type": "array", "items": {"type": "string"}},
                    "legs": {
                        "type": "array",
                        "items": {"type": "object", "required": ["from"],
                                  "properties": {"from": {"type": "string"}, "day": {"type": "integer"}}},
                    },
                    "traveller": {
                        "type": "object",
                        "properties": {"name": {"type": "string"},
                                       "age": {"type": "integer", "description": "not rendered by every template"},
                                       "prefs": {"type": "object", "properties": {"window": {"type": "boolean"}}}},
                        "required": ["name"],
                    },
                    "id": {"type": ["string", "integer"]},
                    "when": {"oneOf": [{"type": "string", "description": "ISO date"}, {"type": "integer"}]},
                },
                "required": ["mode", "traveller"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "Current time.",
                     "parameters": {"type": "object", "properties": {}}},
    },
]

CALL_SETS = {
    "single_dict": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    "parallel": [
        {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}},
        {"name": "search", "arguments": {"query": "café prices", "tags": ["a", "b"]}},
    ],
    "nested_json": [
        {
            "name": "get_weather",
            "arguments": {"city": "Rome", "options": {"units": "metric", "hours": [1, 2], "x": None}},
        }
    ],
    "string_args": [{"name": "get_weather", "arguments": '{"city": "Oslo", "days": 2}'}],
    "trailing_ws": [{"name": "search", "arguments": {"query": "trailing space  ", "tags": []}}],
}

RESPONSES = {
    "one": ["22 degrees"],
    "two": ['{"temp": 22, "sky": "clear"}', "results: none  "],
}


# What each template needs in `arguments` to render at all (or as its model was trained):
# JSON text for DeepSeek (it concatenates), a mapping where the template iterates them or applies tojson.
NEEDS_TEXT = {"deepseek_v3_1"}
NEEDS_DICT = {"qwq", "glm4_7", "qwen3_5", "qwen3_6", "qwen3_coder", "gpt_oss"}

# gpt-oss (harmony) differs in shape, not in strictness (see agent_templates/README.md):
# - the tools slot is the whole prefix before the first user turn (system + developer messages);
# - a plain assistant `content` is wrapped in the final channel, so the check is that the generation prompt
#   (`<|start|>assistant`) followed by the agent text is the template's rendering of the tool-call turn;
# - the template renders one call per assistant message (tool_calls[0]), so parallel calls are one assistant
#   message per call on the template side;
# - text before a call is the analysis channel; ms-swift's gpt-oss convention gives it as
#   `<|channel|>analysis<|message|>TEXT` in the assistant content.
HARMONY = {"gpt_oss"}


def _openai_calls(calls, family):
    out = []
    for call in calls:
        args = call["arguments"]
        if family in NEEDS_TEXT and not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        elif family in NEEDS_DICT and isinstance(args, str):
            args = json.loads(args)
        out.append({"type": "function", "function": {"name": call["name"], "arguments": args}})
    return out


def _agent(family):
    return agent_template_map[f"{family}_parity"]()


@cache
def _tokenizer(family):
    return load_tokenizer(family if family in HARMONY else CHECKED[family])


def _render(tok, messages, **kwargs):
    return tok.apply_chat_template(messages, tokenize=False, **kwargs)


def _swift_content(family, content):
    """The assistant text before the calls as a swift dataset gives it."""
    if family in HARMONY and content:
        return "<|channel|>analysis<|message|>" + content
    return content


@pytest.mark.parametrize("family", sorted(CHECKED))
@pytest.mark.parametrize("system", [None, "You are helpful."])
def test_tools_block_byte_identical(family, system):
    tok = _tokenizer(family)
    agent = _agent(family)
    if not agent.spec.get("tools_rendered", True):
        assert agent._format_tools(TOOLS, system) == (system or "")
        return
    head = [] if system is None else [{"role": "system", "content": system}]
    user = [{"role": "user", "content": "What's the weather?"}]
    expected = _render(tok, head + user, tools=TOOLS, add_generation_prompt=True)
    slot = agent._format_tools(copy.deepcopy(TOOLS), system)
    if family in HARMONY:
        # the slot is everything before the user turn (ms-swift's gpt-oss prefix is `{{SYSTEM}}`)
        bare = _render(tok, user, add_generation_prompt=True)
        got = slot + bare[bare.index("<|start|>user"):]
    else:
        got = _render(tok, [{"role": "system", "content": slot}] + user, add_generation_prompt=True)
    assert got == expected


def _tool_conversation(family, calls, content, responses):
    tool_calls = _openai_calls(calls, family)
    if family in HARMONY:  # one call per assistant message
        assistants = [{"role": "assistant", "content": content if i == 0 else "", "tool_calls": [tc]}
                      for i, tc in enumerate(tool_calls)]
    else:
        assistants = [{"role": "assistant", "content": content, "tool_calls": tool_calls}]
    return [
        {"role": "user", "content": "What's the weather?"},
        *assistants,
        *({"role": "tool", "content": r} for r in responses),
    ]


@pytest.mark.parametrize("family", sorted(CHECKED))
@pytest.mark.parametrize("calls", sorted(CALL_SETS))
@pytest.mark.parametrize("content", ["", "Let me check."])
def test_tool_calls_and_responses_byte_identical(family, calls, content):
    if family == "deepseek_v3_1" and content == "":
        content = None  # DeepSeek-V3.1's template tests `content is none`
    tok = _tokenizer(family)
    agent = _agent(family)
    call_list = CALL_SETS[calls]
    for responses in RESPONSES.values():
        conv = _tool_conversation(family, call_list, content, responses)
        swift_calls = [{"role": "tool_call", "content": json.dumps(c, ensure_ascii=False)} for c in call_list]
        block = agent._format_tool_calls(swift_calls)
        swift_content = _swift_content(family, content)
        pre = {"role": "assistant", "content": swift_content or ""}
        text = (swift_content or "") + agent._add_tool_call_prefix(block, pre)

        # 1. the assistant turn: tool_calls rendered by the template == agent text as plain content
        full = _render(tok, conv[:-len(responses)], tools=TOOLS)
        if family in HARMONY:
            prompt = _render(tok, conv[:1], tools=TOOLS, add_generation_prompt=True)
            assert full == prompt + text
        else:
            plain = _render(tok, [conv[0], {"role": "assistant", "content": text}], tools=TOOLS)
            assert plain == full

        # 2. the tool responses: what follows the call block up to the next generation prompt
        gen = _render(tok, conv, tools=TOOLS, add_generation_prompt=True)
        at = gen.rfind(block)
        assert at >= 0, "tool-call block not found in the template's rendering"
        tail = gen[at + len(block):]
        _, contexts = agent._format_tool_responses(text, [{"role": "tool", "content": r} for r in responses])
        assert tail == "".join(contexts) + agent.spec.get("generation_extra", "")


@pytest.mark.parametrize("family", sorted(CHECKED))
@pytest.mark.parametrize("calls", sorted(CALL_SETS))
def test_get_toolcall_round_trip(family, calls):
    agent = _agent(family)
    call_list = CALL_SETS[calls]
    swift_calls = [{"role": "tool_call", "content": json.dumps(c, ensure_ascii=False)} for c in call_list]
    rendered = agent._format_tool_calls(swift_calls)
    parsed = agent.get_toolcall(rendered, tools=TOOLS)
    assert [f.name for f in parsed] == [c["name"] for c in call_list]
    for function, call in zip(parsed, call_list):
        want = call["arguments"]
        want = json.loads(want) if isinstance(want, str) else want
        assert json.loads(function.arguments) == want


def test_every_family_has_an_agent_template_file():
    from swift_ext.families import list_families

    specs = parity_agent.load_specs()
    missing = [f.name for f in list_families() if f.name not in specs]
    # Families whose templates render no tools at all need no agent template.
    assert set(missing) <= {"deepseek_r1", "gemma3", "phi4_reasoning"}, missing


def test_gpt_oss_get_toolcall_reads_the_models_own_header():
    # The model often writes the recipient inside the channel header, with a constraint token.
    response = ("<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
                'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>')
    parsed = _agent("gpt_oss").get_toolcall(response, tools=TOOLS)
    assert [(f.name, json.loads(f.arguments)) for f in parsed] == [("get_weather", {"city": "Paris"})]
