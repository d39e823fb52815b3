"""Loss weights on exact tokens: a weight per character of each completion, then a weight per token.

The tokens of a sample never depend on its weights. A strategy that weighs text (ms-swift's ``--loss_scale
hermes``: ``<tool_call>...</tool_call>`` at 2.0; ``parity_spans``: a weight per part kind) says how much each
*character* of a completion counts; each token then gets the weight of the characters it covers, by the tokenizer's
own offsets. **Straddle rule:** a token that covers characters of different weights gets the largest of them, so a
trained character is never zeroed by the span next to it (a token that is half ``</think>`` and half answer text is
trained). Prompt tokens weigh 0, except when the user asks to train every token (``train_prompt``). A weight a row
gives one message (ms-swift's per-message ``loss_scale``) wins over any strategy, as in ms-swift.

Pure: the ms-swift adapter plugs its ``LossScale`` strategies in as a ``Split``; LLaMA-Factory and ``swift-ext
inspect`` use the kind weights alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PolicyError
from .spans import KINDS
from .types import IGNORE_INDEX, Part, Sample

Split = Callable[[str, "str | None"], tuple[Sequence[str], Sequence[float]]]
"""A text strategy: (completion, the last user query before it) -> pieces that concatenate to the completion, and a
weight per piece (ms-swift's ``LossScale.get_loss_scale``)."""

Offsets = Callable[[str], Sequence[tuple[int, int]]]
"""The character span of each token of a text (``SegmentTokenizer.offsets``)."""


def kind_weights(given: Mapping[str, Any] | str | None, *, source: str = "span weights") -> dict[str, float]:
    """A weight for every part kind (``swift_ext.spans.KINDS``) from a mapping, JSON text or a JSON file's path;
    kinds not named weigh 1. ``PolicyError`` (``policy-span-weights``) names ``source`` and what is wrong."""
    if isinstance(given, str):
        text = given
        if text.strip() and not text.lstrip().startswith("{") and Path(text).is_file():
            text = Path(text).read_text(encoding="utf-8")
        try:
            given = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{source} is not JSON ({exc.msg}) nor a file: {text[:80]!r}",
                              rule="policy-span-weights") from None
    given = {} if given is None else given
    if not isinstance(given, Mapping):
        raise PolicyError(f"{source} must be a JSON object of kind: weight, e.g. {{\"reasoning\": 0.5}}",
                          rule="policy-span-weights")
    unknown = sorted(str(k) for k in given if k not in KINDS)
    bad = sorted(str(k) for k, v in given.items() if isinstance(v, bool) or not isinstance(v, (int, float))
                 or not v >= 0 or v == float("inf"))
    if unknown or bad:
        raise PolicyError(f"{source}: unknown kinds {unknown} / not a finite number >= 0: {bad}; kinds: "
                          f"{', '.join(KINDS)}", rule="policy-span-weights")
    return {kind: float(given.get(kind, 1.0)) for kind in KINDS}


def token_weights(offsets: Sequence[tuple[int, int]], char_weights: Sequence[float]) -> list[float]:
    """Per-token weights from per-character weights, by the straddle rule (the largest weight a token covers)."""
    out = []
    for start, end in offsets:
        if end > start:
            out.append(max(char_weights[start:end]))
        else:  # a token with no characters of its own (a piece of a multi-byte character): its character's
            out.append(char_weights[start] if start < len(char_weights) else 0.0)
    return out


@dataclass(frozen=True)
class LossWeights:
    """How much each token of a sample counts in the loss."""

    kinds: Mapping[str, float] | None = None
    """A weight per part kind (``kind_weights``), or None: every kind 1."""
    split: Split | None = None
    """A text strategy whose weights multiply the kinds'."""
    train_prompt: bool = False
    """Prompt tokens weigh 1 (ms-swift's ``--loss_scale all``) instead of 0."""
    last_round: bool = False
    """Only the turns after the last user message are trained (``--loss_scale last_round``): a choice of turns,
    made on the messages before encoding (``apply_last_round``)."""
    name: str = "default"
    """What the user called it, for messages."""

    @property
    def plain(self) -> bool:
        """The weights are the labels: 1 on every label, 0 elsewhere."""
        return self.kinds is None and self.split is None and not self.train_prompt

    @property
    def binary(self) -> bool | None:
        """True when every weight is 0 or 1 as far as the kinds tell (None: the split decides)."""
        if self.split is not None:
            return None
        return all(w in (0.0, 1.0) for w in (self.kinds or {}).values())

    def char_weights(self, text: str, parts: Sequence[Part], query: str | None = None) -> list[float]:
        """A weight per character of a completion: its part's kind weight times the split's weight."""
        weights = [1.0] * len(text)
        if self.kinds is not None:
            for part in parts:
                weights[part.start:part.end] = [self.kinds[part.kind]] * (part.end - part.start)
        if self.split is not None:
            pieces, scales = self.split(text, query)
            if "".join(pieces) != text or len(pieces) != len(scales):
                raise PolicyError(f"--loss_scale {self.name} split a completion into pieces that do not add up to "
                                  f"it ({text[:60]!r}...): a strategy may only cut the text", rule="policy-loss-scale")
            at = 0
            for piece, scale in zip(pieces, scales):
                for k in range(at, at + len(piece)):
                    weights[k] *= float(scale)
                at += len(piece)
        return weights

    def sample(self, sample: Sample, offsets: Offsets, message_scales: Mapping[int, float] | None = None,
               queries: Mapping[int, str | None] | None = None) -> list[float]:
        """The weight of each token of ``sample``. ``message_scales``: a row's own weight per message index;
        ``queries``: the last user text before each message (some ms-swift strategies read it)."""
        prompt = 1.0 if self.train_prompt else 0.0
        out = [prompt if label == IGNORE_INDEX else 1.0 for label in sample.labels]
        for turn in sample.turns:
            span = range(turn.label_start, turn.label_end)
            fixed = (message_scales or {}).get(turn.message_index)
            if fixed is not None:
                weights = [float(fixed)] * len(span)
            elif self.kinds is None and self.split is None:
                continue
            else:
                weights = self.turn(turn.completion_text, turn.parts, len(span), offsets,
                                    (queries or {}).get(turn.message_index), turn.message_index)
            for k, weight in zip(span, weights):
                out[k] = weight
        return out

    def turn(self, completion: str, parts: Sequence[Part], num_tokens: int, offsets: Offsets,
             query: str | None = None, message_index: int | None = None) -> list[float]:
        """The weights of one turn's ``num_tokens`` label tokens (the whole tokenization of ``completion``, which
        ``verify`` checks they are)."""
        try:
            spans = offsets(completion)
        except NotImplementedError:  # a slow (Python) tokenizer has no offsets
            raise PolicyError(f"--loss_scale {self.name} weighs tokens by the characters they cover and this "
                              "tokenizer gives no character offsets: load a fast tokenizer",
                              rule="policy-loss-scale") from None
        if len(spans) != num_tokens:
            raise PolicyError(f"the completion tokenizes to {len(spans)} tokens but the turn has {num_tokens} labels",
                              rule="policy-loss-scale", message_index=message_index)
        return token_weights(spans, self.char_weights(completion, parts, query))


def apply_last_round(messages: list[dict[str, Any]]) -> None:
    """ms-swift's ``--loss_scale last_round``: train only the assistant turns after the last user message (the
    others get ``loss: false``)."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    for i, m in enumerate(messages):
        if m.get("role") == "assistant" and i < last_user:
            m["loss"] = False


def last_queries(messages: Sequence[Mapping[str, Any]]) -> dict[int, str | None]:
    """For each message index, the text of the last user message before it: ms-swift's ``query`` of a response,
    which some of its loss scales read (``agentflan``)."""
    out: dict[int, str | None] = {}
    query = None
    for i, message in enumerate(messages):
        out[i] = query
        if message.get("role") == "user":
            content = message.get("content")
            query = content if isinstance(content, str) else None
    return out


def masked(sample: Sample, weights: Sequence[float]) -> Sample:
    """``sample`` trained only where its weight is above 0: a weight that is 0 or 1 for every kind, for a trainer
    without per-token weights (LLaMA-Factory). The tokens do not change."""
    labels = [IGNORE_INDEX if weight == 0 else label for label, weight in zip(sample.labels, weights)]
    return dataclasses.replace(sample, labels=labels)


__all__ = ["LossWeights", "Offsets", "Split", "apply_last_round", "kind_weights", "last_queries", "masked",
           "token_weights"]
