"""What ``encode`` may be asked besides the conversation: the policies, as one typed value.

Each policy is a ``str`` enum, so the plain strings users write (``reasoning_policy="drop"``) keep working and
compare equal to the members. ``EncodeOptions`` validates them once; the framework adapters and the CLI compose
it instead of repeating ``encode``'s keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from .errors import PolicyError


class ReasoningPolicy(str, Enum):
    """Reasoning the template does not render and the family gives no format for."""

    ERROR = "error"
    """Refuse the turn (``reasoning-dropped``): training without the reasoning would be silent."""
    DROP = "drop"
    """Train the turn without it, counted in ``EncodeStats.reasoning_dropped``."""


class HistoryReasoning(str, Enum):
    """Reasoning of earlier turns in later prompts (the core's policy; rollouts have ``EngineHistory``)."""

    TEMPLATE = "template"
    """Whatever the template keeps (Qwen3 drops it before the last query)."""
    KEEP = "keep"
    """The template's own keep switch (Qwen3.6 ``preserve_thinking``, GLM-4.7 ``clear_thinking=False``)."""


class TrainTurns(str, Enum):
    """Which assistant turns are trained (``loss: false`` turns never are)."""

    ALL = "all"
    LAST = "last"


class ArgumentsPolicy(str, Enum):
    """How JSON-text tool-call arguments reach the template."""

    PARSE = "parse"
    """Parsed into an object first, as vLLM's chat endpoint does (templates that need text get it re-serialised)."""
    VERBATIM = "verbatim"
    """The text as written, wherever the template accepts text."""


def _choice(enum: type[Enum], name: str, value: Any, *, rule: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = tuple(member.value for member in enum)
        raise PolicyError(f"{name} must be one of {choices}, got {value!r}", rule=rule) from None


@dataclass(frozen=True)
class EncodeOptions:
    """The policies of one encode (the conversation, its tools and template kwargs come with it)."""

    reasoning_policy: ReasoningPolicy = ReasoningPolicy.ERROR
    history_reasoning: HistoryReasoning = HistoryReasoning.TEMPLATE
    train_turns: TrainTurns = TrainTurns.ALL
    arguments_policy: ArgumentsPolicy = ArgumentsPolicy.PARSE

    def __post_init__(self) -> None:
        checked = {
            "reasoning_policy": _choice(ReasoningPolicy, "reasoning_policy", self.reasoning_policy,
                                        rule="policy-reasoning_policy"),
            "history_reasoning": _choice(HistoryReasoning, "history_reasoning", self.history_reasoning,
                                         rule="policy-history_reasoning"),
            "train_turns": _choice(TrainTurns, "train_turns", self.train_turns, rule="policy-train_turns"),
            "arguments_policy": _choice(ArgumentsPolicy, "arguments_policy", self.arguments_policy,
                                        rule="policy-arguments_policy"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, options: EncodeOptions | None = None, **values: Any) -> EncodeOptions:
        """``options`` with the given fields replaced (``None`` values are ignored)."""
        base = {spec.name: getattr(options, spec.name) for spec in fields(cls)} if options is not None else {}
        base.update({key: value for key, value in values.items() if value is not None})
        return cls(**base)

    def as_kwargs(self) -> dict[str, str]:
        """The keyword arguments ``swift_ext.encode`` takes, as plain strings (JSON- and pickle-friendly)."""
        return {spec.name: getattr(self, spec.name).value for spec in fields(self)}


REASONING_POLICIES = tuple(member.value for member in ReasoningPolicy)
HISTORY_POLICIES = tuple(member.value for member in HistoryReasoning)
TRAIN_TURNS = tuple(member.value for member in TrainTurns)
ARGUMENTS_POLICIES = tuple(member.value for member in ArgumentsPolicy)

__all__ = [
    "ARGUMENTS_POLICIES",
    "HISTORY_POLICIES",
    "REASONING_POLICIES",
    "TRAIN_TURNS",
    "ArgumentsPolicy",
    "EncodeOptions",
    "HistoryReasoning",
    "ReasoningPolicy",
    "TrainTurns",
]
