"""The render bounds, and what one render has used of them.

``RenderLimits`` (``timeout``, ``max_chars``, ``max_memory_mb``), their defaults from the
``SWIFT_EXT_RENDER_*`` environment variables, the process-wide value and the per-context override
(``current_render_limits``, ``set_render_limits``, ``render_limits``: ``swift_ext.render`` re-exports them, and
users import them from there), the fixed bounds no setting changes, and ``_Budget``: the time, characters and
memory the render in progress (``_BUDGET``) has used. A bound passed raises ``_BoundExceeded``, which
``compiler._BoundedTemplate`` turns into a ``TemplateRenderError``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from time import monotonic, thread_time
from typing import Any

# ------------------------------------------------------------------------------------------------------- bounds


@dataclasses.dataclass(frozen=True)
class RenderLimits:
    """Bounds on one render of a chat template (docs/sandbox.md).

    - ``timeout``: seconds of CPU time one render may use (its thread's);
    - ``max_chars``: characters a render may print, and the size (as text) of
      any one string or container it builds; also the budget of characters it
      may make from numbers (``'x' * n``, padding widths, format widths);
    - ``max_memory_mb``: how much the process may grow while one render runs
      (checked every 50 ms of a render, so only long renders pay for it);
      0 turns the check off.
    """

    timeout: float = 60.0
    max_chars: int = 16_000_000
    max_memory_mb: int = 2048

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"render timeout must be positive, got {self.timeout!r}")
        if self.max_chars < _SHORT:
            raise ValueError(f"render max_chars must be at least {_SHORT}, got {self.max_chars!r}")
        if self.max_memory_mb < 0:
            raise ValueError(f"render max_memory_mb must be >= 0, got {self.max_memory_mb!r}")


# Strings shorter than this are never measured against max_chars (they are most of what templates handle).
_SHORT = 1 << 16
# Fixed bounds, far beyond any real template: a structure nested deeper than this can crash CPython (hashing a
# tuple recurses in C without a depth check), and an integer this wide cannot even be printed (4300 digits).
_NESTING_LIMIT = 200
_INT_BITS_LIMIT = 1 << 20
# While compiling, jinja evaluates filters and operators on constants ahead of time; anything larger than this
# is left for the render, where the render's own bounds apply.
_COMPILE_FOLD_CHARS = 1 << 16
_CHECK_INTERVAL = 0.05
_ENV_VARS = {
    "timeout": ("SWIFT_EXT_RENDER_TIMEOUT", float),
    "max_chars": ("SWIFT_EXT_RENDER_MAX_CHARS", int),
    "max_memory_mb": ("SWIFT_EXT_RENDER_MAX_MEMORY_MB", int),
}


def _limits_from_env(environ: Mapping[str, str] = os.environ) -> RenderLimits:
    values = {}
    for field, (var, kind) in _ENV_VARS.items():
        if environ.get(var, "").strip():
            try:
                values[field] = kind(environ[var])
            except ValueError:
                raise ValueError(f"{var}={environ[var]!r} is not a valid {kind.__name__}") from None
    return RenderLimits(**values)


_PROCESS_LIMITS = [_limits_from_env()]
_LIMITS: ContextVar[RenderLimits | None] = ContextVar("swift_ext_render_limits", default=None)


def current_render_limits() -> RenderLimits:
    """The bounds the next render in this thread will use."""
    return _LIMITS.get() or _PROCESS_LIMITS[0]


def set_render_limits(**changes: Any) -> RenderLimits:
    """Change the process-wide render bounds (``timeout=``, ``max_chars=``, ``max_memory_mb=``); returns them.

    The defaults come from ``SWIFT_EXT_RENDER_TIMEOUT``, ``SWIFT_EXT_RENDER_MAX_CHARS`` and
    ``SWIFT_EXT_RENDER_MAX_MEMORY_MB`` when set, else from ``RenderLimits``.
    """
    _PROCESS_LIMITS[0] = dataclasses.replace(_PROCESS_LIMITS[0], **changes)
    return _PROCESS_LIMITS[0]


@contextmanager
def render_limits(**changes: Any) -> Iterator[RenderLimits]:
    """Render with other bounds inside the ``with`` block (this thread / context only)."""
    limits = dataclasses.replace(current_render_limits(), **changes)
    token = _LIMITS.set(limits)
    try:
        yield limits
    finally:
        _LIMITS.reset(token)


class _BoundExceeded(Exception):
    """A render went past a bound. Not a ``ValueError``: jinja's filters catch those."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


def _too_large(what: str, size: int, limit: int) -> _BoundExceeded:
    return _BoundExceeded(
        "template-output-too-large",
        f"the chat template {what} ({size:,} characters), more than the render bound max_chars={limit:,}; "
        "if the template is legitimate, raise it with SWIFT_EXT_RENDER_MAX_CHARS or "
        "swift_ext.render.set_render_limits(max_chars=...)",
    )


def _rss_bytes() -> int | None:
    """Resident memory of this process (Linux), else its peak (other Unixes), else None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class _Budget:
    """What one render (or one compilation) has used of its bounds.

    Time is the rendering thread's CPU time, so a busy machine or other threads holding the GIL never make a
    legitimate render time out. The clock is read only every ``_CHECK_INTERVAL`` seconds of wall time, and the
    CPU clock only then: until the first check the render is assumed to have used all of its wall time.
    """

    __slots__ = ("limits", "max_chars", "started", "next_check", "cpu_start", "ticks", "synthesized", "big",
                 "rss_base", "shapes", "marks", "parts")

    def __init__(self, limits: RenderLimits, max_chars: int, now: float) -> None:
        self.limits = limits
        self.max_chars = max_chars
        self.started = now
        self.next_check = now + _CHECK_INTERVAL
        self.cpu_start: float | None = None
        # ticks: loop starts and calls (the clock is read every 32nd); big: characters in printed pieces longer
        # than _SHORT (every other piece is shorter, so n pieces join into at most n * _SHORT + big characters)
        self.ticks = self.synthesized = self.big = 0
        self.rss_base: int | None = None
        # id -> (container, shape) of containers this render built; holding them keeps their ids unique
        self.shapes: dict[int, tuple[Any, tuple[int, int, int]]] = {}
        # marks: while a marked render runs (ChatRenderer.render_marked), (item, output pieces so far) at the start
        # of each step of a top-level loop; parts: that render's output pieces, as they are gathered
        self.marks: list[tuple[Any, int]] | None = None
        self.parts: list[str] | None = None

    @classmethod
    def for_render(cls) -> _Budget:
        limits = _LIMITS.get() or _PROCESS_LIMITS[0]
        return cls(limits, limits.max_chars, monotonic())

    def restart(self) -> None:
        """Start the next render of a conversation (``ChatRenderer.memo``) on this budget."""
        now = monotonic()
        self.started = now
        self.next_check = now + _CHECK_INTERVAL
        self.cpu_start = self.rss_base = None
        self.synthesized = self.big = 0

    def used(self) -> float:
        """Seconds of the render so far (CPU time once the first check has run)."""
        if self.cpu_start is None:
            return monotonic() - self.started
        return thread_time() - self.cpu_start

    def check(self) -> None:
        """Called about every ``_CHECK_INTERVAL`` seconds: the time used, then the process's growth."""
        now = monotonic()
        if self.cpu_start is None:
            self.cpu_start = thread_time() - (now - self.started)
        if self.used() > self.limits.timeout:
            raise _BoundExceeded(
                "template-timeout",
                f"the chat template ran past the render timeout of {self.limits.timeout:g} s of CPU time; if the "
                "template is legitimate, raise it with SWIFT_EXT_RENDER_TIMEOUT or "
                "swift_ext.render.set_render_limits(timeout=...)",
            )
        if self.limits.max_memory_mb and (rss := _rss_bytes()) is not None:
            if self.rss_base is None:
                self.rss_base = rss
            elif rss - self.rss_base > self.limits.max_memory_mb << 20:
                raise _BoundExceeded(
                    "template-memory",
                    f"the process grew by {(rss - self.rss_base) >> 20:,} MB while the chat template rendered, more "
                    f"than the render bound max_memory_mb={self.limits.max_memory_mb:,}; if the template is "
                    "legitimate, raise it with SWIFT_EXT_RENDER_MAX_MEMORY_MB or "
                    "swift_ext.render.set_render_limits(max_memory_mb=...)",
                )
        self.next_check = now + _CHECK_INTERVAL

    def charge(self, chars: int, what: str) -> None:
        """Count characters the template makes out of a number (repetition, padding, format widths)."""
        self.synthesized += max(chars, 0)
        if self.synthesized > self.max_chars:
            raise _too_large(
                f"{what}, making text out of numbers (repetition, padding, widths) in this render",
                self.synthesized, self.max_chars,
            )

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_chars:
            raise _too_large(what, size, self.max_chars)

    def remember(self, value: Any, shape: tuple[int, int, int]) -> None:
        if len(self.shapes) >= 256:
            self.shapes.clear()
        self.shapes[id(value)] = (value, shape)

    def printed(self, text: str) -> str:
        """Count a piece of output longer than ``_SHORT``."""
        self.big += len(text)
        _ANY_BIG[0] = True
        return text

    def join(self, parts: list[str], what: str) -> str:
        """``"".join(parts)``, refusing to make more than ``max_chars`` characters."""
        if len(parts) * _SHORT + self.big > self.max_chars:  # measure the pieces before joining them
            self.check_size(sum(map(len, parts)), what)
        text = "".join(parts)
        if len(text) > _SHORT:
            self.check_size(len(text), what)
        return text

    def collect(self, chunks: Iterator[str]) -> str:
        """Join a template's output, refusing more than ``max_chars`` characters.

        The pieces are gathered first (references only: a loop printing the same text a billion times is
        stopped by the timeout or the memory bound while it runs), then measured before they are joined.
        """
        if self.marks is None:
            parts = list(chunks)
        else:  # a marked render: _sx_mark reads how many pieces are gathered so far (list.extend appends one by one)
            parts = self.parts = []
            parts.extend(chunks)
        if len(parts) * _SHORT + self.big > self.max_chars:  # short pieces, and few: no need to measure them
            self.check_size(sum(map(len, parts)), "prints its output")
        return "".join(parts)


_BUDGET: ContextVar[_Budget | None] = ContextVar("swift_ext_render_budget", default=None)
# Set (for good, in any thread) once a piece of output longer than _SHORT is printed: until then every piece is
# short, and a macro's body of at most 16 pieces joins without looking at the render's budget.
_ANY_BIG = [False]


def _budget() -> _Budget:
    """The budget of the render in progress, or a fresh one (a filter called outside a render)."""
    return _BUDGET.get() or _Budget.for_render()
