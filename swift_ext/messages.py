"""Parse Hugging Face / OpenAI style message dicts into typed ``Message`` values.

All input validation lives here, so the encoder can assume a well-formed
conversation. Each error names the rule it enforces (``input-...``) and the
message index; the caller adds the dataset row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InputError
from .types import ROLES, Message, ToolCall

REASONING_ALIASES = ("reasoning_content", "thinking", "reasoning")
"""Keys a message may carry its reasoning under (first non-empty wins)."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

_KNOWN_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name", "loss", *REASONING_ALIASES}


def parse_messages(raw: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Validate and normalise a conversation. Raises ``InputError`` naming the rule."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise InputError("messages must be a list of dicts", rule="input-not-a-list")
    if not raw:
        raise InputError("the conversation is empty", rule="input-empty")
    messages = [parse_message(i, m) for i, m in enumerate(raw)]
    _check_order(messages)
    return messages


def parse_message(index: int, raw: Any) -> Message:
    """Validate and normalise one message (no conversation-level rules); ``index`` is named in errors."""
    if not isinstance(raw, Mapping):
        raise InputError(f"expected a dict, got {type(raw).__name__}", rule="input-not-a-dict", message_index=index)
    if "role" not in raw:
        raise InputError("message has no 'role'", rule="input-missing-role", message_index=index)
    role = raw["role"]
    if role not in ROLES:
        raise InputError(
            f"unknown role {role!r}; expected one of {', '.join(ROLES)}", rule="input-unknown-role", message_index=index
        )
    content = _parse_content(index, raw.get("content"))
    reasoning = _parse_reasoning(index, raw)
    if reasoning is not None and role != "assistant":
        raise InputError(
            f"a {role} message carries reasoning; only assistant turns can", rule="input-reasoning-role",
            message_index=index,
        )
    if role == "assistant" and reasoning is None and isinstance(content, str):
        reasoning, content = split_inline_reasoning(content)
    tool_calls = _parse_tool_calls(index, raw.get("tool_calls")) if role == "assistant" else ()
    if role != "assistant" and raw.get("tool_calls"):
        raise InputError(f"a {role} message carries tool_calls", rule="input-tool-calls-role", message_index=index)
    loss = raw.get("loss", True)
    if loss is None:
        loss = True
    if not isinstance(loss, bool):
        raise InputError(f"'loss' must be true or false, got {loss!r}", rule="input-bad-loss", message_index=index)
    extra = {k: v for k, v in raw.items() if k not in _KNOWN_KEYS}
    return Message(
        role=role,
        content=content,
        reasoning=reasoning,
        tool_calls=tool_calls,
        tool_call_id=raw.get("tool_call_id"),
        name=raw.get("name"),
        train=loss,
        extra=extra,
    )


def _parse_content(index: int, content: Any) -> str | list[Any] | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, Mapping) and "type" in part for part in content):
        for part in content:
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise InputError("a text part has no string 'text'", rule="input-content-type", message_index=index)
        return [dict(part) for part in content]
    raise InputError(
        f"content must be a string, null or a list of typed parts, got {type(content).__name__}",
        rule="input-content-type",
        message_index=index,
    )


def _parse_reasoning(index: int, raw: Mapping[str, Any]) -> str | None:
    for key in REASONING_ALIASES:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(f"'{key}' must be a string", rule="input-reasoning-type", message_index=index)
        return value
    return None


def split_inline_reasoning(content: str) -> tuple[str | None, str]:
    """Split ``<think>R</think>C`` (or ``R</think>C``) written inline in content.

    The newlines around the reasoning and before the answer are the template
    family's formatting, not part of either, so they are stripped the way the
    Qwen3/QwQ templates strip them when they parse the same string.
    """
    if THINK_CLOSE not in content:
        return None, content
    head, _, tail = content.partition(THINK_CLOSE)
    stripped = head.lstrip()
    if stripped.startswith(THINK_OPEN):
        stripped = stripped[len(THINK_OPEN):]
    elif THINK_OPEN in head:
        return None, content  # text before <think>: not an inline reasoning block
    return stripped.strip("\n"), tail.lstrip("\n")


def _parse_tool_calls(index: int, raw_calls: Any) -> tuple[ToolCall, ...]:
    if raw_calls is None:
        return ()
    if not isinstance(raw_calls, Sequence) or isinstance(raw_calls, (str, bytes)):
        raise InputError("tool_calls must be a list", rule="input-tool-calls-type", message_index=index)
    return tuple(_parse_tool_call(index, call) for call in raw_calls)


def _parse_tool_call(index: int, call: Any) -> ToolCall:
    if not isinstance(call, Mapping):
        raise InputError("each tool call must be a dict", rule="input-tool-calls-type", message_index=index)
    function = call.get("function", call)
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
        raise InputError("a tool call has no function name", rule="input-tool-call-name", message_index=index)
    arguments = function.get("arguments", {})
    if arguments is None:
        arguments = {}
    arguments_json = None
    if isinstance(arguments, str):
        arguments_json = arguments
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise InputError(
                f"tool call {function['name']!r} has malformed JSON arguments ({exc.msg} at char {exc.pos}): "
                f"{arguments[:80]!r}",
                rule="input-bad-arguments",
                message_index=index,
            ) from None
    if not isinstance(arguments, Mapping):
        raise InputError(
            f"tool call {function['name']!r} arguments must be a JSON object", rule="input-bad-arguments",
            message_index=index,
        )
    return ToolCall(
        name=function["name"],
        arguments=dict(arguments),
        arguments_json=arguments_json,
        id=call.get("id"),
        type=call.get("type", "function"),
    )


def _check_order(messages: list[Message]) -> None:
    """Conversation-level rules: who may speak when."""
    first = next((i for i, m in enumerate(messages) if m.role != "system"), None)
    if first is None:
        raise InputError("the conversation has only system messages", rule="input-no-turns")
    if messages[first].role == "assistant":
        raise InputError(
            "the first non-system message is an assistant turn: there is no prompt to answer",
            rule="input-assistant-first",
            message_index=first,
        )
    open_calls = 0
    for i, message in enumerate(messages):
        if message.role == "assistant":
            open_calls = len(message.tool_calls)
        elif message.role == "tool":
            if open_calls == 0:
                raise InputError(
                    "tool result without a pending tool call (more results than calls, or no call)",
                    rule="input-orphan-tool-result",
                    message_index=i,
                )
            open_calls -= 1
        elif message.role == "user":
            open_calls = 0
    if not any(m.role == "assistant" for m in messages):
        raise InputError("the conversation has no assistant turn to train", rule="I5-no-assistant-turn")
