"""Rollout records: a conversation whose generated assistant turns carry the sampled ids and logprobs.

A record is a dict (every key but ``messages`` optional)::

    {
      "messages": [
        {"role": "user", "content": "..."},
        {"role": "assistant", "content": "...", "reasoning_content": "...", "tool_calls": [...],
         "token_ids": [...], "logprobs": [...],            # what the engine sampled, one logprob per id
         "prompt_token_ids": [...], "prompt_tokens": 812,  # optional: what the engine says it was fed
         "finish_reason": "stop"},
        {"role": "tool", "content": "..."},
        ...
      ],
      "tools": [...],
      "chat_template_kwargs": {"enable_thinking": true},
      "engine_history": "keep" | "strip" | "auto"          # optional (or "history_reasoning"), see swift_ext.rollout
    }

An assistant message with ``token_ids`` is a *generated* turn; one without is context (rendered by the template,
never labelled). Accepted spellings, as the engines return them:

- ids: ``token_ids`` (vLLM ``return_token_ids``), ``output_ids`` (SGLang ``/generate``);
- logprobs: a list of floats; vLLM / OpenAI ``{"content": [{"logprob": -0.1, "token": "token_id:42"}, ...]}``
  (or the list inside it); SGLang ``output_token_logprobs`` ``[[logprob, token_id, text], ...]`` (also under
  that key). When the entries carry token ids they are checked against ``token_ids``;
- engine prompt evidence (optional, used to detect the history policy and to check the rebuilt prompt):
  ``prompt_token_ids`` (vLLM) or ``prompt_tokens`` (a count: OpenAI ``usage.prompt_tokens``, SGLang
  ``meta_info.prompt_tokens``).

The turn's text (``content``, ``reasoning_content``/``reasoning``/``thinking``, ``tool_calls``) is what the
engine's parsers returned; it is used to render later prompts under the ``strip`` policy and to check the ids
against. When a generated turn has no text at all it is decoded from its ids (trailing stop string removed,
an inline ``<think>...</think>`` split off as reasoning).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..messages import REASONING_ALIASES, split_inline_reasoning

ID_KEYS = ("token_ids", "output_ids")
LOGPROB_KEYS = ("logprobs", "output_token_logprobs")
ROLLOUT_KEYS = (*ID_KEYS, *LOGPROB_KEYS, "prompt_token_ids", "prompt_tokens", "finish_reason", "loss_mask")
_TOKEN_ID_TEXT = re.compile(r"^token_id:(\d+)$")

ToolCallParser = Callable[[str], "list[dict[str, Any]]"]
"""Turns a generated turn's decoded text into OpenAI ``tool_calls`` (for turns given as ids only)."""

MessageParser = Callable[[str], "dict[str, Any]"]
"""Turns a generated turn's decoded text (stop string removed) into message fields (``content``,
``reasoning_content``, ``tool_calls``), for formats the default ``<think>`` split does not cover (``parse_harmony``)."""


@dataclass(frozen=True)
class GeneratedTurn:
    """One assistant turn the engine sampled."""

    message_index: int
    ordinal: int
    """0-based number among the generated turns ("turn #ordinal" in diagnostics)."""
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None
    """One per id; None when the record has none (then nothing logprob-related is checked or emitted)."""
    logprob_token_ids: tuple[int, ...] | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    train: bool = True
    text_from_ids: bool = False
    """True when the record gave no text for the turn and it was decoded from the ids."""


@dataclass
class RolloutRecord:
    """A parsed record: template-ready text messages plus the generated turns."""

    messages: list[dict[str, Any]]
    """HF/OpenAI messages without the rollout keys (text of generated turns as the engine returned it)."""
    tools: list[dict[str, Any]] | None
    chat_template_kwargs: dict[str, Any]
    turns: list[GeneratedTurn]
    engine_history: str | None = None
    """The record's own ``engine_history`` (or ``history_reasoning``, its earlier name), if it says."""
    extra: dict[str, Any] = field(default_factory=dict)

    def turn_at(self, message_index: int) -> GeneratedTurn | None:
        for turn in self.turns:
            if turn.message_index == message_index:
                return turn
        return None


def parse_record(
    record: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    decode: Callable[[list[int]], str],
    stop_length: Callable[[list[int]], int] | None = None,
    stop_strings: Sequence[str],
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    tool_call_parser: ToolCallParser | None = None,
    message_parser: MessageParser | None = None,
) -> RolloutRecord:
    """Validate a rollout record (a dict, or just its message list) and split it into text and sampled ids."""
    if isinstance(record, Mapping):
        raw_messages = record.get("messages")
        tools = record.get("tools", tools)
        kwargs = dict(chat_template_kwargs or {})
        kwargs.update(record.get("chat_template_kwargs") or {})
        policy = record.get("engine_history", record.get("history_reasoning"))
        extra = {k: v for k, v in record.items()
                 if k not in ("messages", "tools", "chat_template_kwargs", "engine_history", "history_reasoning")}
    else:
        raw_messages, kwargs, policy, extra = record, dict(chat_template_kwargs or {}), None, {}
    if not isinstance(raw_messages, Sequence) or isinstance(raw_messages, (str, bytes)) or not raw_messages:
        raise InputError("a rollout record needs a non-empty 'messages' list", rule="rollout-input")
    if isinstance(tools, str):
        import json

        tools = json.loads(tools)
    messages: list[dict[str, Any]] = []
    turns: list[GeneratedTurn] = []
    for index, raw in enumerate(raw_messages):
        if not isinstance(raw, Mapping):
            raise InputError(f"expected a dict, got {type(raw).__name__}", rule="rollout-input", message_index=index)
        text = {k: v for k, v in raw.items() if k not in ROLLOUT_KEYS}
        ids = _first(raw, ID_KEYS)
        if ids is None:
            if any(raw.get(k) is not None for k in LOGPROB_KEYS):
                raise InputError("the message has logprobs but no token_ids", rule="rollout-input",
                                 message_index=index)
            messages.append(text)
            continue
        if raw.get("role") != "assistant":
            raise InputError(f"a {raw.get('role')!r} message carries token_ids; only assistant turns are generated",
                             rule="rollout-input", message_index=index)
        turn = _parse_turn(index, len(turns), raw, ids)
        if not _has_text(text):
            text = dict(text)
            ids = list(turn.token_ids)
            text.update(text_from_ids(ids, decode, stop_strings, tool_call_parser, message_parser,
                                      stop_tokens=stop_length(ids) if stop_length else None))
            turn = GeneratedTurn(**{**turn.__dict__, "text_from_ids": True})
        messages.append(text)
        turns.append(turn)
    if not turns:
        raise InputError("the record has no generated assistant turn (no message carries token_ids)",
                         rule="rollout-no-generated-turn")
    return RolloutRecord(messages, tools or None, kwargs, turns, policy, extra)


def text_from_ids(ids: list[int], decode: Callable[[list[int]], str], stop_strings: Sequence[str],
                  tool_call_parser: ToolCallParser | None = None,
                  message_parser: MessageParser | None = None, *, stop_tokens: int | None = None) -> dict[str, Any]:
    """Message text fields for a turn known only by its ids. ``stop_tokens``: how many trailing ids are the stop
    string, when the caller matched it as tokens (else it is cut from the decoded text)."""
    if stop_tokens:
        text = decode(ids[:-stop_tokens])
    else:
        text = decode(ids)
        for stop in sorted(stop_strings, key=len, reverse=True):
            if text.endswith(stop):
                text = text[: -len(stop)]
                break
    if message_parser is not None:
        return dict(message_parser(text))
    out: dict[str, Any] = {}
    if tool_call_parser is not None:
        calls = tool_call_parser(text)
        if calls:
            out["tool_calls"] = list(calls)
    reasoning, content = split_inline_reasoning(text)
    if reasoning is not None:
        out["reasoning_content"] = reasoning
    out["content"] = content
    return out


_HARMONY_MESSAGE = re.compile(
    r"(?:<\|start\|>assistant)?(?P<header>.*?)<\|message\|>(?P<body>.*?)(?:<\|end\|>|<\|call\|>|<\|return\|>|$)",
    re.S)


def parse_harmony(text: str) -> dict[str, Any]:
    """Message fields of a gpt-oss (harmony) turn as sampled: ``analysis`` -> reasoning, ``final`` -> content,
    ``commentary to=functions.NAME`` -> a tool call (arguments kept as the JSON text the model wrote)."""
    reasoning, content, calls = [], [], []
    for match in _HARMONY_MESSAGE.finditer(text):
        header, body = match.group("header"), match.group("body")
        recipient = re.search(r"to=functions\.([^\s<]+)", header)
        if recipient:
            calls.append({"type": "function", "function": {"name": recipient.group(1), "arguments": body}})
        elif "<|channel|>analysis" in header:
            reasoning.append(body)
        else:
            content.append(body)
    out: dict[str, Any] = {"content": "".join(content)}
    if reasoning:
        out["thinking"] = "".join(reasoning)
    if calls:
        out["tool_calls"] = calls
    return out


def _first(raw: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if raw.get(key) is not None:
            return raw[key]
    return None


def _has_text(message: Mapping[str, Any]) -> bool:
    if message.get("tool_calls"):
        return True
    if any(message.get(k) for k in REASONING_ALIASES):
        return True
    return message.get("content") is not None


def _ints(value: Any, what: str, index: int) -> tuple[int, ...]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise InputError(f"{what} must be a list of ints", rule="rollout-input", message_index=index)
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise InputError(f"{what} must be a list of ints, found {item!r}", rule="rollout-input",
                             message_index=index)
        out.append(item)
    return tuple(out)


def _parse_turn(index: int, ordinal: int, raw: Mapping[str, Any], ids: Any) -> GeneratedTurn:
    token_ids = _ints(ids, "token_ids", index)
    if not token_ids:
        raise InputError("a generated turn has no token_ids", rule="rollout-input", message_index=index)
    logprobs, lp_ids = parse_logprobs(_first(raw, LOGPROB_KEYS), index)
    prompt_ids = raw.get("prompt_token_ids")
    prompt_ids = _ints(prompt_ids, "prompt_token_ids", index) if prompt_ids is not None else None
    prompt_tokens = raw.get("prompt_tokens")
    if prompt_tokens is not None and (isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int)):
        raise InputError("prompt_tokens must be an int", rule="rollout-input", message_index=index)
    loss = raw.get("loss", True)
    return GeneratedTurn(
        message_index=index,
        ordinal=ordinal,
        token_ids=token_ids,
        logprobs=logprobs,
        logprob_token_ids=lp_ids,
        prompt_token_ids=prompt_ids,
        prompt_tokens=prompt_tokens,
        finish_reason=raw.get("finish_reason"),
        train=bool(True if loss is None else loss),
    )


def parse_logprobs(value: Any, index: int) -> tuple[tuple[float, ...] | None, tuple[int, ...] | None]:
    """Logprobs in any of the accepted forms -> (values, token ids carried by the entries or None)."""
    if value is None:
        return None, None
    if isinstance(value, Mapping):
        value = value.get("content")
        if value is None:
            raise InputError("logprobs dict has no 'content' list", rule="rollout-input", message_index=index)
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise InputError("logprobs must be a list", rule="rollout-input", message_index=index)
    values: list[float] = []
    ids: list[int] = []
    for k, entry in enumerate(value):
        token_id = None
        if isinstance(entry, (int, float)) and not isinstance(entry, bool):
            lp = float(entry)
        elif isinstance(entry, Mapping):
            lp = entry.get("logprob")
            token_id = entry.get("token_id")
            if token_id is None and isinstance(entry.get("token"), str):
                match = _TOKEN_ID_TEXT.match(entry["token"])
                token_id = int(match.group(1)) if match else None
        elif isinstance(entry, Sequence) and not isinstance(entry, (str, bytes)) and len(entry) >= 2:
            lp, token_id = entry[0], entry[1]
        else:
            lp = None
        if lp is None or isinstance(lp, bool) or not isinstance(lp, (int, float)):
            raise InputError(f"logprob entry {k} has no number: {entry!r}", rule="rollout-input",
                             message_index=index)
        values.append(float(lp))
        if token_id is not None:
            ids.append(int(token_id))
    carried = tuple(ids) if ids and len(ids) == len(values) else None
    return tuple(values), carried
