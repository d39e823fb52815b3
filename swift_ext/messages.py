"""Parse Hugging Face / OpenAI style message dicts into typed ``Message`` values.

All input validation lives here, so the encoder can assume a well-formed
conversation. Each error names the rule it enforces (``input-...``) and the
message index; the caller adds the dataset row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import InputError
from .types import ROLES, Message, ToolCall

REASONING_ALIASES = ("reasoning_content", "thinking", "reasoning")
"""Keys a message may carry its reasoning under (first non-empty wins)."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

_KNOWN_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name", "loss", *REASONING_ALIASES}


def parse_messages(raw: Sequence[Mapping[str, Any]], *, require_assistant: bool = True,
                   check_tool_order: bool = True) -> list[Message]:
    """Validate and normalise a conversation. Raises ``InputError`` naming the rule.

    ``require_assistant=False``: an inference prompt, with no turn to train yet. ``check_tool_order=False``: a
    rollout, whose generated turns are known only by their ids (no ``tool_calls``) yet are followed by results."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise InputError("messages must be a list of dicts", rule="input-not-a-list")
    if not raw:
        raise InputError("the conversation is empty", rule="input-empty")
    messages = [parse_message(i, m) for i, m in enumerate(raw)]
    _check_order(messages, require_assistant=require_assistant, check_tool_order=check_tool_order)
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
    reasoning = field_reasoning = _parse_reasoning(index, raw)
    if reasoning is not None and role != "assistant":
        raise InputError(
            f"a {role} message carries reasoning; only assistant turns can", rule="input-reasoning-role",
            message_index=index,
        )
    if role == "assistant":
        _check_assistant_parts(index, content)
        if reasoning is None and isinstance(content, str):
            reasoning, content = split_inline_reasoning(content)
        _check_reasoning_markup(index, content, reasoning, inline=field_reasoning is None)
    tool_calls = _parse_tool_calls(index, raw.get("tool_calls")) if role == "assistant" else ()
    if role != "assistant" and raw.get("tool_calls"):
        raise InputError(f"a {role} message carries tool_calls", rule="input-tool-calls-role", message_index=index)
    loss = raw.get("loss", True)
    if loss is None:
        loss = True
    if not isinstance(loss, bool):
        raise InputError(f"'loss' must be true or false, got {loss!r}", rule="input-bad-loss", message_index=index)
    extra = {k: v for k, v in raw.items() if k not in _KNOWN_KEYS}
    for text in (content_text(content), reasoning, raw.get("name"), raw.get("tool_call_id")):
        check_text(text, index)
    for key, value in extra.items():
        if isinstance(value, (dict, list)):
            check_value(value, f"message key {key!r}", index, rule="input-bad-value")
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


def content_text(content: str | list[Any] | None) -> str:
    """The text of a message's content: the string, or its text parts joined by a newline (what vLLM's chat
    endpoint renders for a template that reads content as a string), or ``""``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if part.get("type") == "text")
    return ""


def _check_assistant_parts(index: int, content: Any) -> None:
    """An assistant turn is text the model generates: image, audio or video parts cannot be trained."""
    if isinstance(content, list):
        kinds = sorted({str(part.get("type")) for part in content if part.get("type") != "text"})
        if kinds:
            raise InputError(
                f"an assistant turn holds {', '.join(kinds)} parts; a model generates text only, so they cannot be "
                "trained (move media to a user or tool message)", rule="input-assistant-media", message_index=index)


def _check_reasoning_markup(index: int, content: Any, reasoning: str | None, *, inline: bool) -> None:
    """Reasoning tags left in an answer would be trained as literal markup the model never writes that way.

    ``<think>R</think>answer`` at the start of content is read as reasoning (``split_inline_reasoning``); any other
    ``<think>``/``</think>`` in the answer or inside the reasoning contradicts itself: an unclosed block, a second
    close, a nested block, text before the block, or a reasoning field beside an inline block."""
    answer = content_text(content)
    tags = [tag for tag in (THINK_OPEN, THINK_CLOSE) if tag in answer]
    if tags and not inline:
        raise InputError(
            f"the turn has a reasoning field and also {' and '.join(tags)} in its content: give the reasoning once "
            "(the field, or an inline <think>...</think> block)", rule="input-reasoning-twice", message_index=index)
    if tags:
        why = "an unclosed <think> block" if THINK_CLOSE not in answer else "reasoning tags outside one leading block"
        raise InputError(
            f"the content holds {why} ({answer[:60]!r}...): write reasoning as one leading <think>...</think> block "
            "or in reasoning_content", rule="input-reasoning-markup", message_index=index)
    if reasoning is not None and (THINK_OPEN in reasoning or THINK_CLOSE in reasoning):
        raise InputError(
            f"the reasoning itself holds <think> or </think> ({reasoning[:60]!r}...): nested or repeated blocks",
            rule="input-reasoning-markup", message_index=index)


def check_text(text: Any, index: int | None) -> None:
    """Text must be encodable (a lone surrogate, e.g. from a broken JSON escape, makes the tokenizer raise)."""
    if isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"the text holds a character that is not valid Unicode ({exc.object[exc.start:exc.end]!r} at "
                f"{exc.start}: a lone surrogate); fix the data's encoding", rule="input-invalid-text",
                message_index=index) from None


MAX_NESTING = 64
"""Deepest nesting of tool arguments, tool schemas and other structured values. Real ones stay under ten levels;
templates serialise them recursively (``tojson``), and about a thousand levels exhaust Python's stack."""


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of dicts / lists, counted without recursion; stops counting past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, Mapping):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_value(value: Any, what: str, index: int | None, *, rule: str) -> str:
    """A structured value must nest at most ``MAX_NESTING`` levels and serialise as strict JSON (no NaN or
    Infinity, which no parser reads back) with valid Unicode. Returns its JSON text (``ensure_ascii=False``)."""
    if _depth(value, MAX_NESTING) > MAX_NESTING:
        raise InputError(f"{what} nest deeper than {MAX_NESTING} levels", rule=rule, message_index=index)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} are not strict JSON ({exc})", rule=rule, message_index=index) from None
    check_text(text, index)
    return text


def parse_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Validate the tool schemas handed to the template: a list of objects, each a function with a name."""
    if tools is None:
        return None
    if not isinstance(tools, (list, tuple)) or not all(isinstance(tool, Mapping) for tool in tools):
        raise InputError(f"tools must be a list of tool objects, got {_describe(tools)}", rule="input-bad-tools")
    for number, tool in enumerate(tools):
        function = tool.get("function", tool)
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
            raise InputError(f"tool {number} has no function name ({json.dumps(tool, default=str)[:80]})",
                             rule="input-bad-tools")
    check_value(list(tools), "the tool schemas", None, rule="input-bad-tools")
    return [dict(tool) for tool in tools]  # [] stays []: Llama-3.1 renders a tools block for it, as for any list


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


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
    name = function["name"]
    check_text(name, index)
    if isinstance(arguments, str):
        arguments_json = arguments
        check_text(arguments, index)
        try:
            arguments = json.loads(arguments, parse_constant=_reject_constant) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise InputError(
                f"tool call {name!r} has malformed JSON arguments ({exc.msg} at char {exc.pos}): {arguments[:80]!r}",
                rule="input-bad-arguments",
                message_index=index,
            ) from None
        except (ValueError, RecursionError) as exc:
            raise InputError(f"tool call {name!r} arguments are not strict JSON ({type(exc).__name__}: {exc})",
                             rule="input-bad-arguments", message_index=index) from None
    if not isinstance(arguments, Mapping):
        raise InputError(
            f"tool call {name!r} arguments must be a JSON object", rule="input-bad-arguments",
            message_index=index,
        )
    check_value(arguments, f"tool call {name!r} arguments", index, rule="input-bad-arguments")
    return ToolCall(
        name=function["name"],
        arguments=dict(arguments),
        arguments_json=arguments_json,
        id=call.get("id"),
        type=call.get("type", "function"),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (a template would render it as is)")


def _check_order(messages: list[Message], *, require_assistant: bool, check_tool_order: bool) -> None:
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
    for i, message in enumerate(messages if check_tool_order else ()):
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
    if require_assistant and not any(m.role == "assistant" for m in messages):
        raise InputError("the conversation has no assistant turn to train", rule="I5-no-assistant-turn")
