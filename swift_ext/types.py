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
class TurnSpan:
    """Where one trained assistant turn sits inside a sample.

    ``prompt_end`` is the number of tokens before the turn's first label: the
    tokens an inference server was fed for this turn. ``label_start`` ..
    ``label_end`` (exclusive) are the labelled positions.
    """

    message_index: int
    prompt_end: int
    label_start: int
    label_end: int
    completion_text: str
    spliced: bool = False
    """True when the template's own rendering of the turn did not start with its
    generation prompt and the completion was placed after the generation prompt."""
    reasoning_formatted: bool = False
    """True when reasoning the template drops was added from the family format."""


@dataclass
class Sample:
    """One training sequence: ``input_ids`` with ``labels`` (-100 = not trained)."""

    input_ids: list[int]
    labels: list[int]
    turns: list[TurnSpan]

    @property
    def num_labels(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

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
