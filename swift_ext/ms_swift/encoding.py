"""The token ids a parity template hands ms-swift for a row, in ms-swift's form.

``Template._jinja_encode`` returns ``(context_list, loss_scale_list, answer_len)``; the parity template returns
token-id contexts, one per run of equal loss scale, so ms-swift tokenizes nothing again (``contexts``). The ids
are the core's training samples, weighted by ``--loss_scale`` (``loss_scale.loss_weights``), or, for inference,
the model's own generation prompt (``prompt_ids``). ``SampleCache`` keeps the samples of the last rows: the data
hook encodes a row to expand it, then ms-swift encodes it again.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ..options import EncodeOptions
from ..types import Sample

Scored = tuple[Sample, list[float]]
"""A sample and the loss scale of each of its tokens."""


def contexts(input_ids: Sequence[int], scales: Sequence[float]) -> tuple[list[list[int]], list[float]]:
    """Token ids as ms-swift's ``(context_list, loss_scale_list)``: one context per run of equal scale."""
    out: list[list[int]] = []
    loss_scales: list[float] = []
    for token, scale in zip(input_ids, scales):
        if loss_scales and loss_scales[-1] == scale:
            out[-1].append(token)
        else:
            out.append([token])
            loss_scales.append(scale)
    return out, loss_scales


def prompt_ids(encoder: Any, messages: list[dict[str, Any]], tools: list | None, kwargs: dict[str, Any],
               history: str) -> list[int]:
    """Inference: exactly what a server feeds the model, the generation prompt of the conversation so far (or
    the rendering itself when it ends with an assistant turn). ms-swift's placeholder for the reply to come (an
    assistant message with no content) is left out."""
    messages = [m for m in messages if not (m.get("role") == "assistant" and m.get("content") is None
                                            and not m.get("tool_calls"))]
    conversation = encoder.conversation(messages, tools, kwargs, EncodeOptions(history_reasoning=history),
                                        require_assistant=False, check_tool_order=False)
    return encoder.tokens.encode_whole(conversation.inference_prompt())


class SampleCache:
    """The scored samples of the last ``size`` conversations, keyed by everything that decides them."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[str, list[Scored]] = OrderedDict()

    @staticmethod
    def key(messages: list[dict[str, Any]], tools: list | None, kwargs: dict[str, Any], history: str) -> str:
        blob = json.dumps([messages, tools, kwargs, history], sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> list[Scored] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: str, value: list[Scored]) -> list[Scored]:
        self._entries[key] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value
