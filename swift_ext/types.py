"""Typed values of the core: messages going in, samples coming out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100
"""Label value of a position that is not trained (the PyTorch/HF convention)."""

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """One function call made by an assistant turn.

    ``arguments`` is kept as the caller gave it after validation: a dict, or the
    JSON text it was written as. The family description decides which form the
    template receives.
    """

    name: str
    arguments: dict[str, Any]
    arguments_json: str | None = None
    id: str | None = None
    type: str = "function"


@dataclass(frozen=True)
class Message:
    """One conversation message in normalised Hugging Face / OpenAI form."""

    role: str
    content: str | list[Any] | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    train: bool = True
    """For assistant messages: False when the row says ``loss: false``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other keys of the original message, passed to the template untouched."""


@dataclass(frozen=True)
class Part:
    """Characters ``completion_text[start:end]`` of a turn are of kind ``kind`` (``swift_ext.spans.KINDS``:
    reasoning, empty_reasoning, answer, tool_call, stop, other)."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class TurnSpan:
    """Where one trained assistant turn sits inside a sample.

    ``prompt_end`` is the number of tokens before the turn's first label: the
    tokens an inference server was fed for this turn. ``label_start`` ..
    ``label_end`` (exclusive) are the turn's own tokens (labelled unless the turn
    is context only, ``trained=False``, which happens in rollouts).
    """

    message_index: int
    prompt_end: int
    label_start: int
    label_end: int
    completion_text: str = ""
    """The text the labels decode to (empty for a rollout turn known only by its sampled ids)."""
    spliced: bool = False
    """True when the template's own rendering of the turn did not start with its
    generation prompt and the completion was placed after the generation prompt."""
    reasoning_formatted: bool = False
    """True when reasoning the template drops was added from the family format."""
    ordinal: int | None = None
    """Rollouts: the turn's number among the record's generated turns."""
    logprob_start: int | None = None
    """Rollouts: index of the turn's first logprob in ``Sample.logprobs`` (None: not trained / no logprobs)."""
    trained: bool = True
    canonical: bool | None = None
    """Rollouts: whether the sampled ids are the tokenizer's own tokenization of their text (None: not checked)."""
    parts: tuple[Part, ...] = ()
    """Where the completion's reasoning, answer, tool calls and stop string are (``swift_ext.spans``)."""

    @property
    def turn(self) -> int | None:
        """The rollout ordinal (the name ``RolloutTurnSpan`` used)."""
        return self.ordinal


@dataclass
class Sample:
    """One training sequence: ``input_ids`` with ``labels`` (-100 = not trained).

    Rollout samples also carry ``logprobs``: the engine's logprob of each labelled position, in order
    (``len(logprobs) == num_labels``); ``logprobs[k]`` is ``log p(input_ids[t] | input_ids[:t])`` at the k-th
    labelled position ``t``. Token-id turns of ms-swift GRPO carry a ``loss_scale`` per token.
    """

    input_ids: list[int]
    labels: list[int]
    turns: list[TurnSpan]
    logprobs: list[float] | None = None
    loss_scale: list[float] | None = None
    """A weight per token, where the sample carries its own (ms-swift GRPO's token-id turns); None: 1 on labels."""

    @property
    def num_labels(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def loss_mask(self) -> list[int]:
        """1 on labelled positions, 0 elsewhere."""
        return [0 if label == IGNORE_INDEX else 1 for label in self.labels]

    def position_logprobs(self, fill: float = 0.0) -> list[float]:
        """Logprobs laid out over ``input_ids`` (``fill`` where nothing was sampled)."""
        if self.logprobs is None:
            raise ValueError("this sample has no logprobs (the record carried none)")
        out = [fill] * len(self.input_ids)
        values = iter(self.logprobs)
        for t, label in enumerate(self.labels):
            if label != IGNORE_INDEX:
                out[t] = next(values)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "labels": self.labels, "loss_mask": self.loss_mask,
                "logprobs": self.logprobs}

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodeStats:
    """Counters a caller can pass to ``encode`` to accumulate over a dataset."""

    conversations: int = 0
    samples: int = 0
    emitted_tokens: int = 0
    full_render_tokens: int = 0
    trained_tokens: int = 0
    trained_turns: int = 0
    spliced_turns: int = 0
    reasoning_dropped: int = 0
    reasoning_formatted: int = 0

    @property
    def emitted_ratio(self) -> float:
        """Tokens emitted over tokens of one render of each whole conversation."""
        return self.emitted_tokens / self.full_render_tokens if self.full_render_tokens else 0.0

    def merge(self, other: EncodeStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
