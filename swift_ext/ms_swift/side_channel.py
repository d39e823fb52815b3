"""When and how a row keeps its original messages beside ms-swift's rewritten form (the ``SIDE_CHANNEL`` column).

ms-swift's dataset loader and ``StdTemplateInputs.from_dict`` keep only role/content/loss/loss_scale on a
message: ``reasoning_content``, tool-call ids and argument text would be lost. Both the data hook (dataset rows)
and ``Template.encode`` (rows given directly: ``swift infer``, GRPO requests) keep the original messages, as JSON
text, for the rows where that rewrite loses something; ``conversion.row_conversation`` reads them back.
"""

from __future__ import annotations

import json
from typing import Any

from .columns import SIDE_CHANNEL
from .conversion import media_kind, media_kinds_only

_SWIFT_KEYS = frozenset({"role", "content", "loss", "loss_scale"})


def needs_side_channel(messages: Any) -> bool:
    """True when ms-swift's rewrite of these messages (HF form) would drop something the template renders."""
    if not isinstance(messages, list):
        return False
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            return False  # sharegpt or another form: ms-swift's conversion is the only one
    for m in messages:
        extra = set(m) - _SWIFT_KEYS - ({"name"} if m.get("role") in ("tool", "tool_response") else set())
        if any(m.get(k) is not None for k in extra):
            return True
    return False


def _without_media_values(message: dict[str, Any]) -> dict[str, Any]:
    """The message with each media content part as ``{"type": kind}``: the template renders only its kind (the
    item itself goes to ms-swift's ``images`` / ``videos``, ``conversion.add_media_parts``), and an item given as
    an object (PIL frames of a video) is not JSON."""
    content = message.get("content")
    if not isinstance(content, list) or not any(media_kind(p) for p in content):
        return message
    return {**message, "content": media_kinds_only(content)}


def side_channel_text(messages: Any) -> str | None:
    """The ``SIDE_CHANNEL`` value for these messages, or None when they need none (or are not JSON)."""
    if not needs_side_channel(messages):
        return None
    try:
        return json.dumps([_without_media_values(m) for m in messages], ensure_ascii=False)
    except (TypeError, ValueError):
        return None


def with_side_channel(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``SIDE_CHANNEL`` added when its messages need it and it has none yet."""
    if SIDE_CHANNEL in row:
        return row
    text = side_channel_text(row.get("messages"))
    return row if text is None else {**row, SIDE_CHANNEL: text}
