"""Errors raised by swift-ext.

Every error names the conversation (its index in the dataset when the caller
passes one), the rule that was broken, and, where it applies, the message/turn
index. Nothing in the core falls back silently: a sample that cannot be made
exact is an exception, never a sample trained on the wrong tokens.
"""

from __future__ import annotations


class ParityError(ValueError):
    """Base class: a conversation cannot be turned into inference-exact samples.

    ``rule`` is a short stable identifier (``"I1-inference-prefix"``,
    ``"input-unknown-role"``, ...) that tools group failures by.
    """

    rule: str = "parity"

    def __init__(
        self,
        detail: str,
        *,
        rule: str | None = None,
        conversation_index: int | None = None,
        message_index: int | None = None,
    ) -> None:
        if rule is not None:
            self.rule = rule
        self.detail = detail
        self.conversation_index = conversation_index
        self.message_index = message_index
        super().__init__(self._format())

    def __reduce__(self):
        # Exceptions pickle as ``cls(*args)``, and ``args`` here is the formatted message: rebuilt that way an
        # error read ``[input] [input-unknown-role] ...`` (datasets' num_proc, process pools) and a subclass with
        # required keywords (RolloutAlignmentError) failed to load at all. Restore the attributes instead.
        return _restore, (type(self), self.args, self.__dict__.copy())

    def _format(self) -> str:
        where = []
        if self.conversation_index is not None:
            where.append(f"conversation {self.conversation_index}")
        if self.message_index is not None:
            where.append(f"message {self.message_index}")
        prefix = f"[{self.rule}] " + (", ".join(where) + ": " if where else "")
        return prefix + self.detail

    def with_conversation(self, conversation_index: int | None) -> ParityError:
        """Return the same error re-labelled with the dataset row it came from."""
        if conversation_index is None or self.conversation_index is not None:
            return self
        self.conversation_index = conversation_index
        self.args = (self._format(),)
        return self


def _restore(cls: type[ParityError], args: tuple, state: dict) -> ParityError:
    """Unpickle a ``ParityError`` (any subclass) without calling its ``__init__``."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InputError(ParityError):
    """The conversation itself is malformed (roles, content types, tool calls)."""

    rule = "input"


class TemplateRenderError(ParityError):
    """The model's chat template raised while rendering the conversation."""

    rule = "template-render"


class ReasoningDroppedError(ParityError):
    """A message carries reasoning that the template does not render and the
    family gives no format for: training without it would be silent loss."""

    rule = "reasoning-dropped"


class UnknownFamilyError(ParityError):
    """Strict mode was asked for and no family description matches the template."""

    rule = "unknown-family"


class PolicyError(ParityError):
    """A requested policy cannot be honoured by this template (for example
    ``history_reasoning="keep"`` on a template without a preserve switch)."""

    rule = "policy"


class VerificationError(ParityError):
    """A produced sample breaks one of the invariants I1-I5."""

    rule = "verify"


class InternalError(ParityError):
    """An exception no rule foresaw, raised while encoding one conversation. It stays one row's error (a dataset
    pass goes on); the original exception is chained as ``__cause__``. Please report it."""

    rule = "internal-error"


def unexpected(exc: BaseException, conversation_index: int | None = None) -> InternalError:
    """Wrap an exception that is not a ``ParityError`` so no raw exception leaves the public API."""
    detail = f"unexpected {type(exc).__name__}: {str(exc)[:300]} (a swift-ext bug or an unforeseen input; please " \
             "report it with the row)"
    return InternalError(detail, conversation_index=conversation_index)
