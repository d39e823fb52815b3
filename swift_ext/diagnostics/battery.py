"""The doctor's battery: small generated conversations, each exercising one feature.

Cases are kept as small as the feature allows and listed smallest first, so the
first failing case of a property is its smallest example. Each case names the
features it uses; the doctor reports a feature as unsupported when the template
itself refuses or drops it, and judges trainability on the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..families import Family

FEATURES = {
    "chat": "plain chat",
    "system": "system prompt",
    "multi-turn": "multi-turn",
    "reasoning-last": "reasoning on the last turn",
    "reasoning-past": "reasoning on past turns",
    "tools": "tool calls",
    "tool-args-dict": "tool arguments as a dict",
    "tool-args-string": "tool arguments as a JSON string",
    "parallel-calls": "parallel tool calls",
    "consecutive-tool-results": "consecutive tool results",
    "tool-call-no-id": "tool calls without an id",
    "whitespace": "trailing whitespace and newlines",
    "empty-content": "empty assistant content",
}

CORE_FEATURES = frozenset({"chat", "system", "multi-turn"})
"""A template that cannot train conversations made only of these is not trainable."""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]

SYSTEM = "You are a concise assistant."
Q1, A1, R1 = "What is the capital of France?", "Paris.", "The user asks for the capital of France."
Q2, A2, R2 = "And of Italy?", "Rome.", "Now the capital of Italy."
Q3, A3 = "Thanks!", "You're welcome."


@dataclass(frozen=True)
class Mode:
    """One way of running the template: its thinking switch on, off, or untouched."""

    name: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One generated conversation."""

    name: str
    messages: list[dict[str, Any]]
    features: frozenset[str]
    tools: list[dict[str, Any]] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """Ordering key for "smallest": message count, then characters."""
        return len(self.messages), len(json.dumps(self.messages))

    def assistant_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant"]


def thinking_modes(family: Family, template: str) -> list[Mode]:
    """Thinking on and off when the template has a switch, else its default behaviour only.

    A generic template has no family description; ``enable_thinking`` is the
    switch transformers and vLLM pass, so it is tried when the template reads it.
    """
    kwarg = family.thinking_kwarg
    if kwarg is None and "enable_thinking" in template:
        kwarg = "enable_thinking"
    if kwarg is None:
        return [Mode("default", {})]
    return [Mode("thinking on", {kwarg: True}), Mode("thinking off", {kwarg: False})]


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _assistant(content: str | None, reasoning: str | None = None, calls: list | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return message


def _call(name: str, city: str, index: int, *, string_args: bool = False, with_id: bool = True) -> dict[str, Any]:
    arguments: Any = {"city": city}
    if string_args:
        arguments = json.dumps(arguments)
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if with_id:
        call["id"] = f"functions.{name}:{index}"  # the id form Kimi-K2 needs; any string is valid OpenAI
    return call


def _tool(content: str, call: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "tool", "content": content, "name": call["function"]["name"]}
    if "id" in call:
        message["tool_call_id"] = call["id"]
    return message


def _tool_case(name: str, features: set[str], *, string_args: bool = False, with_id: bool = True,
               reasoning: bool = False) -> Case:
    call = _call("get_weather", "Paris", 0, string_args=string_args, with_id=with_id)
    messages = [
        _user("What's the weather in Paris?"),
        _assistant("", "I should call the weather tool." if reasoning else None, [call]),
        _tool('{"temp_c": 21, "sky": "clear"}', call),
        _assistant("It is 21°C and clear in Paris.", "The tool says 21°C, clear." if reasoning else None),
    ]
    return Case(name, messages, frozenset({"tools", *features}), TOOLS)


def _parallel_case() -> Case:
    calls = [_call("get_weather", "Paris", 0), _call("get_time", "Paris", 1)]
    messages = [
        _user("Weather and time in Paris?"),
        _assistant("", None, calls),
        _tool('{"temp_c": 21}', calls[0]),
        _tool('{"time": "14:05"}', calls[1]),
        _assistant("21°C, and it is 14:05."),
    ]
    features = {"tools", "tool-args-dict", "parallel-calls", "consecutive-tool-results"}
    return Case("tool-parallel", messages, frozenset(features), TOOLS)


def build_battery() -> list[Case]:
    """All cases, smallest first."""
    cases = [
        Case("single", [_user(Q1), _assistant(A1)], frozenset({"chat"})),
        Case("reasoning-last", [_user(Q1), _assistant(A1, R1)], frozenset({"reasoning-last"})),
        Case("empty-content", [_user(Q1), _assistant("")], frozenset({"empty-content"})),
        Case("whitespace", [_user(Q1 + "  \n"), _assistant("Paris.\n\n  ")], frozenset({"whitespace"})),
        Case("single-system", [{"role": "system", "content": SYSTEM}, _user(Q1), _assistant(A1)],
             frozenset({"chat", "system"})),
        Case("multi", [_user(Q1), _assistant(A1), _user(Q2), _assistant(A2)], frozenset({"chat", "multi-turn"})),
        Case("multi-empty-content", [_user(Q1), _assistant(""), _user(Q2), _assistant(A2)],
             frozenset({"multi-turn", "empty-content"})),
        Case("reasoning-past", [_user(Q1), _assistant(A1, R1), _user(Q2), _assistant(A2, R2)],
             frozenset({"multi-turn", "reasoning-past", "reasoning-last"})),
        Case("multi-system", [{"role": "system", "content": SYSTEM}, _user(Q1), _assistant(A1), _user(Q2),
                              _assistant(A2), _user(Q3), _assistant(A3)], frozenset({"chat", "system", "multi-turn"})),
        _tool_case("tool-dict", {"tool-args-dict"}),
        _tool_case("tool-string", {"tool-args-string"}, string_args=True),
        _tool_case("tool-no-id", {"tool-args-dict", "tool-call-no-id"}, with_id=False),
        _tool_case("tool-reasoning", {"tool-args-dict", "reasoning-past", "reasoning-last"}, reasoning=True),
        _parallel_case(),
    ]
    return sorted(cases, key=lambda case: case.size)
