"""An ms-swift row (``StdTemplateInputs``) as the Hugging Face / OpenAI conversation the core takes.

ms-swift's dataset loader and ``StdTemplateInputs.from_dict`` rewrite a conversation: the system message moves
to ``inputs.system``, an assistant turn with OpenAI ``tool_calls`` becomes an assistant message (its text) plus
one ``tool_call`` message per call (JSON ``{"name", "arguments"}``), ``tool_response`` becomes ``tool``, and
every key but role/content/loss/loss_scale is dropped. This module undoes that. When the row still carries the
original conversation (the ``swift_ext_messages`` column the data hook adds), that is used instead, so
``reasoning_content``, tool-call ids and argument text arrive exactly as written.

``row_conversation`` is the whole conversion of a row: its system prompt, the side channel (or ms-swift's form
turned back), ``--loss_scale last_round``, and ms-swift's media tags as content parts. ``normalise_tools`` is
ms-swift's normalisation of a row's tools, for families with no agent template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..weights import apply_last_round
from .columns import SIDE_CHANNEL

_MEDIA_TAG = re.compile(r"(<image>|<video>|<audio>)")


@dataclass
class Converted:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    loss_scales: dict[int, float] = field(default_factory=dict)
    """HF message index -> the row's per-message ``loss_scale`` (assistant turns only)."""
    from_side_channel: bool = False


def _tool_call_from_swift(content: Any) -> dict[str, Any]:
    obj = content
    if isinstance(content, str):
        try:
            obj = json.loads(content)
        except json.JSONDecodeError as exc:
            raise InputError(f"a tool_call message is not JSON: {content[:80]!r}", rule="input-tool-call") from exc
    if not isinstance(obj, dict) or "name" not in obj:
        raise InputError(f"a tool_call message has no name: {content!r}", rule="input-tool-call")
    arguments = obj.get("arguments", obj.get("parameters", {}))
    return {"type": "function", "function": {"name": obj["name"], "arguments": {} if arguments is None else arguments}}


def from_swift_messages(messages: list[dict[str, Any]], system: str | None) -> Converted:
    """ms-swift messages (+ system) -> HF messages, re-joining split assistant turns with their tool calls."""
    out: list[dict[str, Any]] = []
    loss_scales: dict[int, float] = {}
    if system is not None:
        out.append({"role": "system", "content": system})
    for index, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        if role == "tool_call":
            call = _tool_call_from_swift(content)
            last = out[-1] if out else None
            # The assistant text ms-swift split off this turn, or an earlier call of the same turn.
            if last is not None and last["role"] == "assistant" and (
                    last.get("tool_calls") or index > 0 and messages[index - 1].get("role") == "assistant"):
                last.setdefault("tool_calls", []).append(call)
                continue
            new = {"role": "assistant", "content": None, "tool_calls": [call]}
            for key in ("loss",):
                if message.get(key) is not None:
                    new[key] = message[key]
            if message.get("loss_scale") is not None:
                loss_scales[len(out)] = float(message["loss_scale"])
            out.append(new)
            continue
        if role == "tool_response":
            role = "tool"
        if role not in ("system", "user", "assistant", "tool"):
            raise InputError(f"unknown role {role!r} in an ms-swift row", rule="input-unknown-role",
                             message_index=index)
        new = {"role": role, "content": content}
        # Keys ms-swift kept (a direct Template.encode call keeps reasoning_content on plain turns).
        for key, value in message.items():
            if key not in ("role", "content", "loss", "loss_scale") and value is not None:
                new[key] = value
        if role == "assistant":
            if message.get("loss") is not None:
                new["loss"] = bool(message["loss"])
            if message.get("loss_scale") is not None:
                loss_scales[len(out)] = float(message["loss_scale"])
        out.append(new)
    return Converted(out, None, loss_scales)


def from_side_channel(raw: str | list, system: str | None) -> Converted:
    """The row's original HF messages, as the data hook stored them."""
    messages = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(messages, list):
        raise InputError(f"{SIDE_CHANNEL} is not a list of messages", rule="input-not-a-list")
    messages = [dict(m) for m in messages]
    loss_scales = {}
    for i, m in enumerate(messages):
        if m.get("role") == "tool_response":
            m["role"] = "tool"
        if m.get("role") == "assistant" and m.get("loss_scale") is not None:
            loss_scales[i] = float(m.pop("loss_scale"))
        else:
            m.pop("loss_scale", None)
    if system is not None and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return Converted(messages, None, loss_scales, from_side_channel=True)


def _as_tagged_text(content: Any) -> Any:
    """Content parts as ms-swift's loader writes them (text joined, each media part its ``<kind>`` tag)."""
    if not isinstance(content, list):
        return content
    return "".join(f"<{media_kind(p)}>" if media_kind(p) else str(p.get("text", "")) if isinstance(p, dict)
                   else str(p) for p in content)


def check_same_conversation(side: Converted, swift: Converted) -> None:
    """Guard against a side channel that does not belong to this row: user texts must agree."""
    a = [_as_tagged_text(m.get("content")) for m in side.messages if m.get("role") == "user"]
    b = [_as_tagged_text(m.get("content")) for m in swift.messages if m.get("role") == "user"]
    if a != b:
        raise InputError(
            f"the row's {SIDE_CHANNEL} column does not match its messages (user turns differ); "
            "was the dataset transformed after loading?",
            rule="input-side-channel",
        )


MEDIA_KINDS = ("image", "video", "audio")
"""ms-swift's media kinds, in the order of its ``images`` / ``videos`` / ``audios`` columns."""


def media_kind(part: Any) -> str | None:
    """``image`` / ``video`` / ``audio`` for a media content part (``{"type": "image"}``, OpenAI's
    ``{"type": "image_url", "image_url": {...}}``, ...), None for anything else."""
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if isinstance(kind, str) and kind.endswith("_url"):
        kind = kind[:-len("_url")]
    return kind if kind in MEDIA_KINDS else None


def media_kinds_only(content: list[Any]) -> list[Any]:
    """Content parts with each media part as ``{"type": kind}`` (its item dropped): what the chat template is
    handed for it (an OpenAI-compatible server replaces the URL part by a placeholder part; the item itself goes
    to the processor, never into the template)."""
    return [{"type": media_kind(p)} if media_kind(p) else p for p in content]


def add_media_parts(messages: list[dict[str, Any]]) -> None:
    """``<image>`` tags (ms-swift's media form) -> HF content parts, so the template renders its vision tokens.

    Media parts already there (OpenAI ``image_url``, a side channel's original parts) become ``{"type": kind}``:
    what an OpenAI-compatible server hands the chat template (vLLM replaces the URL part by a placeholder part;
    the media itself goes to the processor, never into the template)."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = media_kinds_only(content)
            continue
        if not isinstance(content, str) or not _MEDIA_TAG.search(content):
            continue
        parts = []
        for piece in _MEDIA_TAG.split(content):
            if piece in ("<image>", "<video>", "<audio>"):
                parts.append({"type": piece[1:-1]})
            elif piece:
                parts.append({"type": "text", "text": piece})
        message["content"] = parts


def media_counts(messages: list[dict[str, Any]]) -> dict[str, int]:
    """How many media parts of each kind these messages hold (after ``add_media_parts``)."""
    counts = dict.fromkeys(MEDIA_KINDS, 0)
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            kind = media_kind(part)
            if kind:
                counts[kind] += 1
    return counts


def check_media_count(messages: list[dict[str, Any]], inputs: Any) -> None:
    """Every media tag / part of the row has its item in the row's ``images`` / ``videos`` / ``audios`` and
    every item its tag: ms-swift would otherwise put untagged items in front of the first message, or keep a
    tag without an item as a bare placeholder (a warning, then a sample whose media does not match its tokens)."""
    counts = media_counts(messages)
    for kind in MEDIA_KINDS:
        given = len(getattr(inputs, f"{kind}s", None) or [])
        if counts[kind] == given:
            continue
        seen, where = 0, None
        for index, message in enumerate(messages):
            content = message.get("content")
            seen += sum(media_kind(p) == kind for p in content) if isinstance(content, list) else 0
            if where is None and seen > given:
                where = index
        raise InputError(
            f"the row has {counts[kind]} <{kind}> tag(s) or {kind} part(s) but {given} item(s) in its "
            f"'{kind}s' column: each {kind} needs exactly one <{kind}> where it goes in the conversation",
            rule="input-media-count", message_index=where)


def row_conversation(inputs: Any, default_system: str | None, *, last_round: bool = False,
                     side_channel: bool = True) -> tuple[Converted, list[dict[str, Any]] | None]:
    """The HF conversation and tools of an ms-swift row (``StdTemplateInputs``).

    ``side_channel``: read the row's original messages from ``SIDE_CHANNEL`` when it has them (they must be the
    same conversation); ``last_round``: ``--loss_scale last_round``."""
    system = inputs.system if inputs.system is not None else default_system
    converted = from_swift_messages(inputs.messages, system)
    side = inputs.extra_kwargs.get(SIDE_CHANNEL) if side_channel else None
    if side:
        original = from_side_channel(side, system)
        check_same_conversation(original, converted)
        converted = original
    if last_round:
        apply_last_round(converted.messages)
    if inputs.is_multimodal:
        add_media_parts(converted.messages)
        check_media_count(converted.messages, inputs)
    return converted, inputs.tools or None


def normalise_tools(tools: Any) -> list[Any]:
    """A row's tools as ms-swift's ``Template._preprocess_tools`` normalises them (JSON text parsed, OpenAI
    wrapping), without rendering them with an agent template."""
    from swift.agent_template.base import BaseAgentTemplate
    from swift.utils import remove_arrow_padding

    if isinstance(tools, str):
        tools = BaseAgentTemplate._parse_json(tools)
        tools = tools if isinstance(tools, (list, tuple)) else [tools]
    elif not isinstance(tools, (list, tuple)):
        raise ValueError(f"inputs.tools: {tools}")
    tools = [BaseAgentTemplate._parse_json(tool) for tool in tools]
    return [BaseAgentTemplate.wrap_tool(remove_arrow_padding(tool) if isinstance(tool, dict) else tool)
            for tool in tools]
