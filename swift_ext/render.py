"""Render chat templates exactly as ``apply_chat_template`` does, only faster.

Templates come from model repositories and are untrusted code, so they are
compiled in jinja2's ``ImmutableSandboxedEnvironment`` with the same options,
filters and globals transformers gives them (trim_blocks, lstrip_blocks,
loopcontrols, a non-HTML-escaping ``tojson``, ``raise_exception``,
``strftime_now``, the ``{% generation %}`` tag). Compiled templates are
cached by their text, and a ``ChatRenderer`` holds the keyword arguments that
transformers adds from the tokenizer (its special tokens), so a render is a
single ``Template.render`` call. Tests compare every render against
``apply_chat_template`` of the real tokenizer.

The sandbox stops a template reaching Python internals, not a template that
loops forever or builds a terabyte string. So every render here is also
bounded (docs/sandbox.md): in time (``RenderLimits.timeout``), in the size of
what it prints and of every string or container it builds
(``RenderLimits.max_chars``), and in how much the process grows while it runs
(``RenderLimits.max_memory_mb``); compilation cannot constant-fold a huge
value either. A template past a bound, or raising anything at all, is a
``TemplateRenderError`` with a rule id, never a hang or a raw exception.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sys
import types
from collections import deque
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from itertools import chain
from operator import length_hint
from time import monotonic, thread_time
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext, Macro, markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Cycler, Namespace, _PassArg, generate_lorem_ipsum
from markupsafe import Markup, escape

from .errors import TemplateRenderError

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
    token = _LIMITS.set(dataclasses.replace(current_render_limits(), **changes))
    try:
        yield _LIMITS.get()
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
        if self.limits.max_memory_mb:
            rss = _rss_bytes()
            if rss is not None and self.rss_base is None:
                self.rss_base = rss
            elif rss is not None and rss - self.rss_base > self.limits.max_memory_mb << 20:
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


# ------------------------------------------------------------------------------------------- the size of values
def _children(value: Any) -> Any:
    """What ``str(value)`` / ``==`` / ``hash`` recurse into, or None for a leaf."""
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        return value
    if isinstance(value, Mapping):
        return chain.from_iterable(value.items())
    if isinstance(value, Namespace):
        return chain.from_iterable(value._Namespace__attrs.items())
    if isinstance(value, (KeysView, ValuesView, ItemsView)):
        mapping = getattr(value, "mapping", None)
        return (mapping,) if mapping is not None else tuple(value)
    return None


def _leaf_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, (bytes, bytearray)):
        return 4 * len(value)
    return 16  # numbers, None, jinja's own objects: short reprs


def _shape(value: Any, memo: dict, known: dict, max_size: int, max_depth: int) -> tuple[int, int, int]:
    """(depth, size as text, nodes) of a value, sharing the work for shared sub-values.

    Stops early, with a lower bound, once the size passes ``max_size`` or the
    depth passes ``max_depth``; a structure that shares sub-values (``[x, x]``
    nested 60 times) is measured in time linear in its distinct parts.
    """
    key = id(value)
    hit = known.get(key) or memo.get(key)
    if hit is not None:
        return hit[1]
    kind = type(value)
    if kind is dict:
        children: Any = chain.from_iterable(value.items())
    elif kind is list or kind is tuple:
        children = value
    else:
        children = _children(value)
        if children is None:
            return 0, _leaf_size(value), 1
    if max_depth <= 0:
        return 1, 2, 1
    memo[key] = (value, (1, 5, 1))  # a reference cycle prints as [...]
    depth, size, count = 0, 2, 1
    for child in children:
        kind = type(child)
        if kind is str:
            size += len(child) + 4
        elif kind is int:
            size += child.bit_length() // 3 + 4
        elif kind is float or kind is bool or child is None:
            size += 10
        else:
            child_depth, child_size, child_count = _shape(child, memo, known, max_size - size, max_depth - 1)
            depth = max(depth, child_depth)
            size += child_size + 2
            count += child_count - 1
            if depth >= max_depth:
                break
        count += 1
        if size > max_size:
            break
    shape = (depth + 1, size, count)
    memo[key] = (value, shape)
    return shape


def _text_size(value: Any, budget: _Budget) -> int:
    """About ``len(str(value))``, or more than ``max_chars`` once it is certain to be."""
    if isinstance(value, str):
        return len(value)
    if type(value) is int:
        return value.bit_length() // 3 + 2
    return _shape(value, {}, budget.shapes, budget.max_chars, sys.maxsize)[1]


def _check_text(value: Any, what: str = "converts a value to text") -> None:
    """Refuse to print a value whose text would pass ``max_chars`` (``[x, x]`` nested 40 times is 2**40 x's)."""
    if type(value) is not str and not isinstance(value, (int, float)):
        budget = _budget()
        budget.check_size(_text_size(value, budget), what)


def _built(value: Any) -> Any:
    """Check a container the template just built: not too deep, not too large as text (cached for reuse)."""
    budget = _budget()
    shape = _shape(value, {}, budget.shapes, budget.max_chars, _NESTING_LIMIT)
    if shape[0] > _NESTING_LIMIT:
        raise _BoundExceeded(
            "template-output-too-large",
            f"the chat template builds a value nested more than {_NESTING_LIMIT} levels deep (a fixed bound: "
            "deeper structures can crash the interpreter)",
        )
    budget.check_size(shape[1], "builds a container whose text is too long")
    budget.remember(value, shape)
    return value


# ------------------------------------------------------------------------------- what the compiled code calls
def _sx_iter(iterable: Any) -> Any:
    """The iterable of every ``{% for %}``: the deadline is checked every 32 loop starts (or calls), and every 16
    steps of a loop over more than 32 items (nested short loops are caught as the inner loops start)."""
    budget = _BUDGET.get()
    if budget is None:
        return iterable
    budget.ticks += 1
    if not budget.ticks & 31 and monotonic() > budget.next_check:
        budget.check()
    kind = type(iterable)
    if kind is list or kind is tuple or kind is dict or kind is str:
        if len(iterable) <= 32:
            return iterable
    elif kind is _GENERATOR and iterable.gi_code is _TICKING_CODE:  # |select, |reject...: ticking already
        return iterable
    elif length_hint(iterable, 33) <= 32:
        return iterable  # dict.items(), |items of a dict, ...: as short as what they iterate
    return _ticking(iterable, budget)


def _sx_mark(item: Any) -> None:
    """Called at the start of each step of a top-level ``{% for %}`` (``_ChatSandbox._parse``): during a marked render,
    records the step's item and how many output pieces precede it."""
    budget = _BUDGET.get()
    if budget is not None and budget.marks is not None and budget.parts is not None:
        budget.marks.append((item, len(budget.parts)))


def _ticking(iterable: Any, budget: _Budget) -> Iterator[Any]:
    for step, item in enumerate(iterable):
        if not step & 15 and monotonic() > budget.next_check:
            budget.check()
        yield item


_GENERATOR = types.GeneratorType
_TICKING_CODE = _ticking.__code__


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None and monotonic() > budget.next_check:
        budget.check()


def _sx_str(value: Any) -> str:
    """``{{ value }}`` when ``value`` is not a short str (the compiled code checks that inline)."""
    if type(value) is not str:
        _check_text(value, "prints a value")
        value = str(value)
    if len(value) > _SHORT:
        budget = _budget()
        budget.check_size(len(value), "prints a value")
        budget.printed(value)
    return value


def _sx_escape(value: Any) -> Markup:
    """``{{ value }}`` under ``{% autoescape true %}``."""
    text = escape(value if hasattr(value, "__html__") else _sx_str(value))
    if len(text) > _SHORT:
        budget = _budget()
        budget.check_size(len(text), "prints a value")
        budget.printed(text)
    return text


def _sx_join(items: Any) -> str:
    """``a ~ b``."""
    text = "".join([item if type(item) is str else _sx_str(item) for item in items])
    if len(text) > _SHORT:
        _budget().check_size(len(text), "joins strings with '~' into a string")
    return text


def _sx_markup_join(items: Any) -> str:
    text = markup_join([item if type(item) is str else _checked(item) for item in items])
    if len(text) > _SHORT:
        _budget().check_size(len(text), "joins strings with '~' into a string")
    return text


def _checked(value: Any) -> Any:
    _check_text(value)
    return value


def _sx_grown(result: Any, left: Any, right: Any) -> Any:
    """``a + b`` when the result is not a short str (the compiled code checks that inline): no doubling a string
    or a list into the gigabytes."""
    kind = type(result)
    if kind is list or kind is tuple:
        budget = _budget()
        memo: dict = {}
        shapes = [_shape(part, memo, budget.shapes, budget.max_chars, sys.maxsize) for part in (left, right)]
        shape = (max(shapes[0][0], shapes[1][0]), shapes[0][1] + shapes[1][1], shapes[0][2] + shapes[1][2])
        budget.check_size(shape[1], "adds containers into one whose text is too long")
        budget.remember(result, shape)
    elif isinstance(result, (str, bytes, bytearray)) and len(result) > _SHORT:
        _tick()
        _budget().check_size(len(result), "adds strings into a string")
    return result


def _bounded_concat(parts: Any) -> str:
    """The environment's ``concat``: the body of a macro, a ``{% set %}`` block, a filter block."""
    budget = _BUDGET.get()
    if budget is not None and type(parts) is list and len(parts) * _SHORT + budget.big <= budget.max_chars:
        text = "".join(parts)  # short pieces, and few
        return text if len(text) <= _SHORT else budget.printed(text)
    budget = budget or _budget()
    text = budget.join(parts if type(parts) is list else list(parts), "renders a block")
    return text if len(text) <= _SHORT else budget.printed(text)


# --------------------------------------------------------------------------------------------------- operators
def _is_sequence(value: Any) -> bool:
    return isinstance(value, (str, bytes, bytearray, list, tuple))


def _bounded_mul(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > _INT_BITS_LIMIT:
            raise _int_too_large()
        return left * right
    if isinstance(right, int) and _is_sequence(left):
        _charge_repeat(left, right)
    elif isinstance(left, int) and _is_sequence(right):
        _charge_repeat(right, left)
    return left * right


def _charge_repeat(sequence: Any, times: int) -> None:
    if times <= 1:
        return
    budget = _budget()
    if isinstance(sequence, (str, bytes, bytearray)):
        budget.charge(len(sequence) * times, "repeats a string with '*'")
        return
    size = _shape(sequence, {}, budget.shapes, budget.max_chars, sys.maxsize)[1]
    budget.charge(size * times, "repeats a container with '*'")


def _int_too_large() -> _BoundExceeded:
    return _BoundExceeded(
        "template-output-too-large",
        f"the chat template computes an integer wider than {_INT_BITS_LIMIT:,} bits (a fixed bound)",
    )


def _bounded_pow(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if left.bit_length() * right > _INT_BITS_LIMIT:
            raise _int_too_large()
    return left**right


_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template: Any, arguments: Any, what: str) -> None:
    """Bound ``template % arguments``: widths and precisions are made from numbers, the rest must fit."""
    budget = _budget()
    if isinstance(arguments, Mapping):
        values: Any = list(arguments.values())
    elif isinstance(arguments, tuple):
        values = arguments
    else:
        values = (arguments,)
    text = template.decode("latin-1") if isinstance(template, (bytes, bytearray)) else str(template)
    widths = 0
    stars = False
    for field in _PRINTF_FIELD.finditer(text):
        for number in field.groups():
            if number == "*":
                stars = True
            elif number:
                widths += int(number) if len(number) < 19 else sys.maxsize
    if stars:
        widths += sum(abs(value) for value in values if isinstance(value, int))
    budget.charge(widths, f"{what} with a width or precision")
    budget.check_size(len(text) + widths + sum(_text_size(value, budget) for value in values), f"{what} into a string")


def _bounded_mod(left: Any, right: Any) -> Any:
    if isinstance(left, (str, bytes, bytearray)):
        _check_printf(left, right, "formats a string with '%'")
    return left % right


_BINOPS = {"*": _bounded_mul, "**": _bounded_pow, "%": _bounded_mod}


# ------------------------------------------------------------------------------------------ str.format widths
_DIGITS = re.compile(r"\d+")


def _spec_width(spec: str) -> int:
    return sum(int(number) if len(number) < 19 else sys.maxsize for number in _DIGITS.findall(spec))


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing widths and precisions past the budget."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_text(value, "formats a value")
        if format_spec:
            _budget().charge(_spec_width(format_spec), "formats a string with a width or precision")
        return super().format_field(value, format_spec)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            _check_text(value, "formats a value")
        return super().convert_field(value, conversion)


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    pass


# ------------------------------------------------------------------------------------------ methods of values
# Each takes (owner, args, kwargs) of a call to a method of a str / bytes / int and returns the args to call with;
# arguments of the wrong type are left for the method itself to refuse.
_TEXT_TYPES = (str, bytes, bytearray)


def _argument(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _check_pad(owner: Any, args: tuple, kwargs: dict) -> tuple:
    width = _argument(args, kwargs, 0, "width", 0)
    if isinstance(owner, _TEXT_TYPES) and isinstance(width, int):
        _budget().charge(width - len(owner), "pads a string")
    return args


def _check_expandtabs(owner: Any, args: tuple, kwargs: dict) -> tuple:
    tabsize = _argument(args, kwargs, 0, "tabsize", 8)
    if isinstance(owner, _TEXT_TYPES) and isinstance(tabsize, int):
        _budget().charge(owner.count("\t" if isinstance(owner, str) else b"\t") * tabsize, "expands tabs")
    return args


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """An upper bound on ``len(text.replace(old, new, count))`` (0 when the types do not fit)."""
    if not isinstance(text, _TEXT_TYPES) or not isinstance(old, type(text)) or not isinstance(new, type(text)):
        return 0
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _check_replace_method(owner: Any, args: tuple, kwargs: dict) -> tuple:
    if len(args) >= 2:
        size = _replaced_size(owner, args[0], args[1], _argument(args, kwargs, 2, "count", -1))
        _budget().check_size(size, "replaces text into a string")
    return args


def _check_translate(owner: Any, args: tuple, kwargs: dict) -> tuple:
    table = _argument(args, kwargs, 0, "table", None)
    if isinstance(owner, str) and isinstance(table, Mapping):
        widest = max((len(v) if isinstance(v, str) else 1 for v in table.values()), default=1)
        _budget().check_size(len(owner) * widest, "translates text into a string")
    return args


def _check_to_bytes(owner: Any, args: tuple, kwargs: dict) -> tuple:
    length = _argument(args, kwargs, 0, "length", 1)
    if isinstance(owner, int) and isinstance(length, int):
        _budget().charge(length, "makes bytes of an integer")
    return args


def _check_join(owner: Any, args: tuple, kwargs: dict) -> tuple:
    """``sep.join(items)``: materialise the items once, then check the joined size."""
    if not isinstance(owner, _TEXT_TYPES) or len(args) != 1 or kwargs:
        return args
    items = list(args[0])
    size = sum(len(item) if isinstance(item, _TEXT_TYPES) else 0 for item in items)
    _budget().check_size(size + len(owner) * max(len(items) - 1, 0), "joins strings into a string")
    return (items,)


def _check_fromkeys(owner: Any, args: tuple, kwargs: dict) -> tuple:
    return args  # its result is checked like a literal: {}.fromkeys(keys, x) repeats x


_METHOD_CHECKS = {
    "fromkeys": _check_fromkeys, "center": _check_pad, "ljust": _check_pad, "rjust": _check_pad, "zfill": _check_pad,
    "expandtabs": _check_expandtabs, "replace": _check_replace_method, "translate": _check_translate,
    "to_bytes": _check_to_bytes, "join": _check_join,
}


# ------------------------------------------------------------------------------------------------- filters
def _guarded(original: Any, check: Any) -> Any:
    """``original`` with ``check(value, *args, **kwargs)`` run first (the filter's own arguments)."""
    if _PassArg.from_obj(original) is None:

        @functools.wraps(original)
        def filter_(value: Any, *args: Any, **kwargs: Any) -> Any:
            check(value, *args, **kwargs)
            return original(value, *args, **kwargs)

    else:  # the first argument is jinja's context / eval context / environment

        @functools.wraps(original)
        def filter_(passed: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
            check(value, *args, **kwargs)
            return original(passed, value, *args, **kwargs)

    return filter_


def _text_filter_check(value: Any = "", *args: Any, **kwargs: Any) -> None:
    if type(value) is not str:
        _check_text(value)


def _center_check(value: Any = "", width: Any = 80, *args: Any, **kwargs: Any) -> None:
    _text_filter_check(value)
    if isinstance(width, int):
        _budget().charge(width - len(str(value)), "pads a string with center")


def _indent_check(s: Any = "", width: Any = 4, *args: Any, **kwargs: Any) -> None:
    _text_filter_check(s)
    indent = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    budget = _budget()
    if isinstance(width, int):
        budget.charge(width, "indents with a width")
    text = str(s)
    budget.check_size(len(text) + (text.count("\n") + 2) * indent, "indents text into a string")


# textwrap and urlize walk their text in Python: this many characters a second, at the least.
_SLOW_FILTER_RATE = 1_000_000


def _check_slow(work: float, what: str) -> None:
    """Refuse, before it starts, work that cannot be interrupted and would run past the timeout (``work`` in
    characters, done at ``_SLOW_FILTER_RATE``)."""
    budget = _budget()
    seconds = work / _SLOW_FILTER_RATE
    if budget.used() + seconds > budget.limits.timeout:
        raise _BoundExceeded(
            "template-timeout",
            f"the chat template {what} (about {seconds:,.1f} s of work) and would run past the render timeout of "
            f"{budget.limits.timeout:g} s; if the template is legitimate, raise it with SWIFT_EXT_RENDER_TIMEOUT or "
            "swift_ext.render.set_render_limits(timeout=...)",
        )


_LONG_WORD = re.compile(r"\S{1000,}")


def _wordwrap_check(s: Any = "", width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                    *args: Any, **kwargs: Any) -> None:
    _text_filter_check(s)
    text = str(s)
    width = width if isinstance(width, int) and width > 0 else 1
    lines = len(text) // width + text.count("\n") + 1
    glue = len(wrapstring) if isinstance(wrapstring, str) else 1
    _budget().check_size(len(text) + lines * glue, "wraps text into a string")
    # breaking a long word copies the rest of it at every break: quadratic in the word
    work = len(text) + (sum(len(word) ** 2 for word in _LONG_WORD.findall(text)) / width if break_long_words else 0)
    _check_slow(work, "wraps text with wordwrap")


def _urlize_check(value: Any = "", *args: Any, **kwargs: Any) -> None:
    _text_filter_check(value)
    _check_slow(len(str(value)), "scans text with urlize")


def _format_check(value: Any = "", *args: Any, **kwargs: Any) -> None:
    _text_filter_check(value)
    _check_printf(str(value), kwargs or args, "formats a string with the format filter")


def _replace_check(s: Any = "", old: Any = "", new: Any = "", count: Any = None, *args: Any, **kw: Any) -> None:
    _text_filter_check(s)
    size = _replaced_size(str(s), str(old), str(new), -1 if count is None else count)
    _budget().check_size(size, "replaces text into a string")


def _batch_check(value: Any = (), linecount: Any = 0, fill_with: Any = None, *args: Any, **kwargs: Any) -> None:
    _items_check(value)
    if fill_with is not None and isinstance(linecount, int):
        budget = _budget()
        budget.charge(linecount * (_text_size(fill_with, budget) + 2), "pads a batch")


def _slice_check(value: Any = (), slices: Any = 0, fill_with: Any = None, *args: Any, **kwargs: Any) -> None:
    _items_check(value)
    if isinstance(slices, int):  # one list per slice, padded or not
        budget = _budget()
        budget.charge(slices * (_text_size(fill_with, budget) + 4), "slices into lists")


def _items_check(value: Any = (), *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _budget().charge(len(value), "splits a string into items")


def _ticking_filter(original: Any) -> Any:
    """A lazy filter (``map``, ``select``, ...) whose every step checks the deadline."""

    @functools.wraps(original)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        return _sx_iter(result) if isinstance(result, types.GeneratorType) else result

    return filter_


def _built_filter(original: Any) -> Any:
    """A filter that can nest or repeat its input (``groupby``, ``batch``): its result is checked like a literal."""

    @functools.wraps(original)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if isinstance(result, types.GeneratorType):
            return _sx_iter(_built(list(result)))
        return _built(result)

    return filter_


def _map_filter(original: Any) -> Any:
    """``map``: lazy like jinja's, but what it yields is measured as it goes (``map('default', x)`` on a long list
    yields ``x`` again and again: a list whose text is the size of ``x`` times its length)."""

    @functools.wraps(original)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        return _measured(original(*args, **kwargs), _budget())

    return filter_


def _measured(items: Iterator[Any], budget: _Budget) -> Iterator[Any]:
    total = 0
    for step, item in enumerate(items):
        total += len(item) if type(item) is str else _text_size(item, budget)
        budget.check_size(total, "maps items into a list whose text is too long")
        if not step & 15 and monotonic() > budget.next_check:
            budget.check()
        yield item


def _items_filter(original: Any) -> Any:
    """``|items`` of a plain dict: its items iterator (as long as the dict, so a loop over it needs no ticking
    wrapper) rather than jinja's generator; the same pairs in the same order."""

    @functools.wraps(original)
    def filter_(value: Any) -> Any:
        return iter(value.items()) if type(value) is dict else original(value)

    return filter_


def _join_filter(original: Any) -> Any:
    @functools.wraps(original)
    def filter_(eval_ctx: Any, value: Any = (), d: Any = "", attribute: Any = None) -> Any:
        if attribute is not None:  # what jinja's join does first
            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        items = list(value)
        _tick()
        budget = _budget()
        size = sum(len(item) if type(item) is str else _text_size(item, budget) for item in items)
        budget.check_size(size + _text_size(d, budget) * max(len(items) - 1, 0), "joins items into a string")
        return original(eval_ctx, items, d)

    return filter_


def _sum_filter(original: Any) -> Any:
    @functools.wraps(original)
    def filter_(environment: Any, iterable: Any = (), attribute: Any = None, start: Any = 0) -> Any:
        if isinstance(start, (int, float)):
            return original(environment, iterable, attribute, start)
        items = list(iterable)
        budget = _budget()
        size = sum(_text_size(item, budget) for item in items) + _text_size(start, budget)
        budget.check_size(size, "adds up containers with sum into one whose text is too long")
        # each addition copies what came before: quadratic, about a thousand times faster than text work
        _check_slow(size * len(items) / 1000, "adds up containers with sum")
        return original(environment, items, attribute, start)

    return filter_


_TEXT_FILTERS = ("capitalize", "e", "escape", "forceescape", "lower", "upper", "title", "trim", "striptags",
                 "string", "safe", "truncate", "wordcount", "urlencode", "xmlattr", "pprint")
_FILTER_CHECKS = {
    "center": _center_check, "indent": _indent_check, "wordwrap": _wordwrap_check, "urlize": _urlize_check,
    "format": _format_check, "replace": _replace_check, "batch": _batch_check, "slice": _slice_check,
    "list": _items_check, "sort": _items_check, "unique": _items_check, "map": _items_check,
    "select": _items_check, "reject": _items_check, "selectattr": _items_check, "rejectattr": _items_check,
    **{name: _text_filter_check for name in _TEXT_FILTERS},
}
_LAZY_FILTERS = ("select", "reject", "selectattr", "rejectattr", "unique", "batch", "slice")


def _bounded_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """jinja's filters, each refusing to build more than the render's bounds allow."""
    out = dict(filters)
    for name, check in _FILTER_CHECKS.items():
        out[name] = _guarded(out[name], check)
    for name in _LAZY_FILTERS:
        out[name] = _ticking_filter(out[name])
    out["map"] = _map_filter(out["map"])
    out["items"] = _items_filter(out["items"])
    out["groupby"] = _built_filter(out["groupby"])
    out["join"] = _join_filter(out["join"])
    out["sum"] = _sum_filter(out["sum"])
    out.update(_str_fast_paths(out))
    return out


def _str_fast_paths(filters: Mapping[str, Any]) -> dict[str, Any]:
    """``trim``, ``upper``, ``lower``, ``string``: on a plain str, what jinja computes (it only detours through
    ``soft_str``, which returns a str as it is); anything else through the guarded filter. Chat templates call
    these on every message."""
    guarded = {name: filters[name] for name in ("trim", "upper", "lower", "string")}

    def trim(value: Any, chars: Any = None) -> Any:
        return value.strip(chars) if type(value) is str else guarded["trim"](value, chars)

    def upper(s: Any) -> Any:
        return s.upper() if type(s) is str else guarded["upper"](s)

    def lower(s: Any) -> Any:
        return s.lower() if type(s) is str else guarded["lower"](s)

    def string(value: Any) -> Any:
        return value if type(value) is str else guarded["string"](value)

    return {"trim": trim, "upper": upper, "lower": lower, "string": string}


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 (jinja's names)
    """jinja's ``lipsum``, for at most the render's character budget."""
    if isinstance(n, int) and isinstance(max, int) and isinstance(min, int):
        _budget().charge(n * (abs(max) + abs(min)) * 16, "generates lorem ipsum")
    return generate_lorem_ipsum(n, html, min, max)


def _cycler(*items: Any) -> Cycler:
    """jinja's ``cycler``: its ``items`` is a tuple the template builds, checked like a literal."""
    _built(items)
    return Cycler(*items)


class _GenerationTag(jinja2.ext.Extension):
    """Accept ``{% generation %}...{% endgeneration %}`` blocks and render their body.

    transformers uses these marks to build assistant masks; here they only
    need to parse and render identically.
    """

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


_TOJSON_MEMO: ContextVar[dict | None] = ContextVar("swift_ext_tojson_memo", default=None)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """transformers' ``tojson``: no HTML escaping, optional indent/separators.

    Inside ``ChatRenderer.memo()`` the text of each dict/list object is kept by
    identity: the prefix renders of one conversation serialise the same tool
    schemas and arguments again and again, and nothing can change them in
    between (the immutable sandbox forbids it, and the memo ends with the
    conversation).
    """
    memo = _TOJSON_MEMO.get()
    if memo is None or not isinstance(value, (dict, list)):
        return _json_dumps(value, ensure_ascii, indent, separators, sort_keys)
    key = (id(value), ensure_ascii, indent, tuple(separators) if separators else None, sort_keys)
    hit = memo.get(key)
    if hit is not None and hit[0] is value:
        return hit[1]
    text = _json_dumps(value, ensure_ascii, indent, separators, sort_keys)
    memo[key] = (value, text)
    return text


def _json_dumps(value: Any, ensure_ascii: bool, indent: Any, separators: Any, sort_keys: bool) -> str:
    """``json.dumps``, within the render bounds.

    Without indentation json writes about as much as the value's own text,
    which the bounds on what a template builds already keep in check; the
    result is measured after. Indentation (and long separators) multiply it
    by the depth and number of items: then the text is joined piece by piece
    from the same encoder ``json.dumps`` uses there, and stops at ``max_chars``.
    """
    long_separators = separators is not None and sum(len(s) for s in separators if isinstance(s, str)) > 8
    if indent is None and not long_separators or isinstance(value, str):
        text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
        if len(text) > _SHORT:
            _budget().check_size(len(text), "writes JSON")
        return text
    budget = _budget()
    if isinstance(indent, int) and not isinstance(indent, bool):
        budget.charge(indent, "indents JSON")
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    parts = []
    size = 0
    for step, part in enumerate(encoder.iterencode(value, _one_shot=True)):
        size += len(part)
        if size > budget.max_chars:
            raise _too_large("writes JSON", size, budget.max_chars)
        if not step & 255:
            _tick()
        parts.append(part)
    return "".join(parts)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _SafeNamespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore attributes (no reach into internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _SafeNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _SafeNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")


class _DictFactory:
    """``dict(...)`` inside templates without exposing the ``dict`` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return _built(dict(*args, **kwargs))

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return _built(dict.fromkeys(*args, **kwargs))


_DICT_ATTRIBUTES = frozenset(dir(dict))
_DICT_READERS = frozenset({"get", "items", "keys", "values"})
_STR_METHODS = frozenset(name for name in dir(str) if not name.startswith("_")) - {"format", "format_map"}
_BUILTIN_METHOD = types.BuiltinMethodType


# -------------------------------------------------------------------------------------------- compiled code
def _short_constant(node: nodes.Node) -> bool:
    """A constant that ``+`` can only grow a value by a little: a short string, a number of at most 64 bits."""
    if not isinstance(node, nodes.Const):
        return False
    value = node.value
    if isinstance(value, str):
        return len(value) <= 256
    return isinstance(value, (int, float)) and -(2**64) < value < 2**64


# The filters every ``{% for %}`` iterable is wrapped in (``_ChatSandbox._parse``), names a template cannot write:
# a loop inside another loop counts a tick as it starts; an outer loop (it starts once per render, or per macro
# call, which ticks) is compiled inline, a short list / tuple / dict iterated as it is.
_ITER_FILTER = "sx:iter"
_OUTER_ITER_FILTER = "sx:outer-iter"


class _BoundedCodeGenerator(CodeGenerator):
    """jinja's code generator, with the bounded helpers in the places that can grow without limit.

    ``a + b``, ``a ~ b``, ``{{ value }}``, list/tuple/dict literals and the
    return of a macro's body are checked inline, calling the ``_sx_*``
    functions (bound into each template's module by
    ``_BoundedTemplate.from_code``) only off the common path; loop iterables
    go through the ``sx:iter`` / ``sx:outer-iter`` filters
    (``_ChatSandbox._parse``); ``*``, ``**`` and ``%`` are intercepted
    operators (``_ChatSandbox.call_binop``), which also stops the compiler
    folding ``10 ** (10 ** 9)`` ahead of time.
    """

    @staticmethod
    def _plain_output(frame: Any, finalize: Any) -> bool:
        return finalize.src is None and not frame.eval_ctx.volatile and not frame.eval_ctx.autoescape

    def _output_child_pre(self, node: nodes.Expr, frame: Any, finalize: Any) -> None:
        if self._plain_output(frame, finalize):
            # (_sx_o if type(_sx_o := EXPR) is str and len(_sx_o) <= _SHORT else _sx_str(_sx_o))
            self.write("(_sx_o if type(_sx_o := ")
        elif finalize.src is not None:  # the chat environment has no finalize
            super()._output_child_pre(node, frame, finalize)
        elif frame.eval_ctx.volatile:
            self.write("(_sx_escape if context.eval_ctx.autoescape else _sx_str)(")
        else:
            self.write("_sx_escape(")

    def _output_child_post(self, node: nodes.Expr, frame: Any, finalize: Any) -> None:
        if self._plain_output(frame, finalize):
            self.write(f") is str and len(_sx_o) <= {_SHORT} else _sx_str(_sx_o))")
        else:
            super()._output_child_post(node, frame, finalize)

    def visit_Filter(self, node: nodes.Filter, frame: Any) -> None:
        if node.name != _OUTER_ITER_FILTER:
            super().visit_Filter(node, frame)
            return
        # (i if type(i := ITERABLE) in _SX_SHORT_KINDS and len(i) <= 32 else _sx_iter(i))
        iterable = self.temporary_identifier()
        self.write(f"({iterable} if type({iterable} := ")
        self.visit(node.node, frame)
        self.write(f") in _SX_SHORT_KINDS and len({iterable}) <= 32 else _sx_iter({iterable}))")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        if frame.eval_ctx.volatile:
            self.write("(_sx_markup_join if context.eval_ctx.volatile else _sx_join)((")
        elif frame.eval_ctx.autoescape:
            self.write("_sx_markup_join((")
        else:
            self.write("_sx_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    @optimizeconst
    def visit_Add(self, node: nodes.Add, frame: Any) -> None:
        if _short_constant(node.left) or _short_constant(node.right):
            # '<|im_start|>' + role, loop.index0 + 1: grows by a few characters of the template's own text
            super().visit_Add(node, frame)
            return
        # (r if type(r := (a := A) + (b := B)) is str and len(r) <= _SHORT else _sx_grown(r, a, b)), names of its own
        result, left, right = (self.temporary_identifier() for _ in range(3))
        self.write(f"({result} if type({result} := ({left} := ")
        self.visit(node.left, frame)
        self.write(f") + ({right} := ")
        self.visit(node.right, frame)
        self.write(f")) is str and len({result}) <= {_SHORT} else _sx_grown({result}, {left}, {right}))")

    def return_buffer_contents(self, frame: Any, force_unescaped: bool = False) -> None:
        if frame.eval_ctx.volatile or (frame.eval_ctx.autoescape and not force_unescaped):
            super().return_buffer_contents(frame, force_unescaped)
            return
        # a macro's body: (t if not _SX_BIG[0] and len(b) <= 16 and len(t := "".join(b)) <= _SHORT else concat(b))
        text, buffer = self.temporary_identifier(), frame.buffer
        self.writeline(
            f"return ({text} if not _SX_BIG[0] and len({buffer}) <= 16 and len({text} := ''.join({buffer})) <= "
            f"{_SHORT} else concat({buffer}))"
        )

    def _output_const_repr(self, group: Any) -> str:
        text = super()._output_const_repr(group)
        return f"_sx_printed({text})" if len(text) > _SHORT else text

    def _built_literal(self, visit: Any, node: Any, frame: Any) -> None:
        if getattr(node, "ctx", "load") != "load":
            visit(node, frame)
            return
        self.write("_sx_built(")
        visit(node, frame)
        self.write(")")

    def visit_ExprStmt(self, node: nodes.ExprStmt, frame: Any) -> None:
        if not getattr(node, "sx_mark", False):
            super().visit_ExprStmt(node, frame)
            return
        # a loop mark (_ChatSandbox._parse): a direct call, not through the sandbox (jinja allows no node types of
        # our own, so it is an expression statement carrying a flag)
        self.writeline("_sx_mark(")
        self.visit(node.node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Any) -> None:
        self._built_literal(super().visit_List, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Any) -> None:
        self._built_literal(super().visit_Tuple, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Any) -> None:
        self._built_literal(super().visit_Dict, node, frame)


_CODE_HELPERS = {
    "_sx_iter": _sx_iter, "_SX_SHORT_KINDS": frozenset({list, tuple, dict}), "_SX_BIG": _ANY_BIG,
    "_sx_str": _sx_str, "_sx_escape": _sx_escape, "_sx_join": _sx_join, "_sx_markup_join": _sx_markup_join,
    "_sx_grown": _sx_grown, "_sx_built": _built, "_sx_printed": lambda text: _budget().printed(text),
    "_sx_mark": _sx_mark,
}


class _BoundedTemplate(jinja2.Template):
    """A compiled chat template whose ``render`` runs within the render bounds."""

    @classmethod
    def from_code(cls, environment: Any, code: Any, globals: Any, uptodate: Any = None) -> Any:  # noqa: A002
        # jinja's from_code, with the _sx_* helpers the generated code calls bound into its module
        namespace = {"environment": environment, "__file__": code.co_filename, **_CODE_HELPERS}
        exec(code, namespace)
        template = cls._from_namespace(environment, namespace, globals)
        template._uptodate = uptodate
        return template

    def render(self, *args: Any, **kwargs: Any) -> str:
        """Render within ``current_render_limits()``; a bound passed is a ``TemplateRenderError``."""
        budget = _Budget.for_render()
        token = _BUDGET.set(budget)
        try:
            return self.render_within(budget, dict(*args, **kwargs))
        finally:
            _BUDGET.reset(token)

    def render_within(self, budget: _Budget, variables: dict[str, Any]) -> str:
        """Render with ``budget`` (the active one: ``_BUDGET``)."""
        context = self.new_context(variables)
        try:
            return budget.collect(self.root_render_func(context))
        except _BoundExceeded as exc:
            raise TemplateRenderError(exc.detail, rule=exc.rule) from None
        except Exception:
            self.environment.handle_exception()


class _ChatSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with fast paths for what chat templates do most.

    jinja resolves ``obj.name`` by trying the Python attribute, then checking it
    (underscore, internal attribute, mutating method of a known mutable type),
    or falling back to the item; on a plain dict that costs an
    ``AttributeError`` per ``message.content``. These three cases get the
    answer the sandbox itself would give, without the detour:

    - a plain dict and a name that is not a dict attribute: the item (the
      sandbox returns ``obj[name]`` unchecked after the attribute lookup fails);
    - a plain dict and ``get``/``items``/``keys``/``values``: the bound method
      (read-only, allowed by the immutable sandbox);
    - a plain str and a public method other than ``format``/``format_map``
      (which the sandbox wraps): the bound method (str is immutable and its
      public methods are not internal attributes);
    - a ``namespace()`` or ``loop`` object and a public name: the attribute
      (neither is a known mutable type, so the sandbox allows every public name).

    Everything else goes through the sandbox unchanged, except that an unsafe
    attribute raises ``SecurityError`` where it is read (jinja returns an
    undefined value that prints as nothing) and that the render bounds apply
    (``_BoundedCodeGenerator``, ``call``, ``call_binop``).
    """

    code_generator_class = _BoundedCodeGenerator
    template_class = _BoundedTemplate
    intercepted_binops = frozenset(_BINOPS)
    concat = staticmethod(_bounded_concat)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        loops = list(tree.find_all(nodes.For))
        inner = {id(nested) for loop in loops for nested in loop.find_all(nodes.For)}
        buffered = {id(nested) for block in tree.find_all((nodes.Macro, nodes.CallBlock, nodes.FilterBlock,
                                                             nodes.AssignBlock))
                    for nested in block.find_all(nodes.For)}
        for loop in loops:
            name = _ITER_FILTER if id(loop) in inner else _OUTER_ITER_FILTER
            bounded = nodes.Filter(loop.iter, name, [], [], None, None, lineno=loop.iter.lineno)
            loop.iter = bounded.set_environment(self)
            if id(loop) not in inner and id(loop) not in buffered and isinstance(loop.target, nodes.Name):
                # where each step's output starts, for ChatRenderer.render_marked (one call, nothing printed)
                mark = nodes.ExprStmt(nodes.Name(loop.target.name, "load", lineno=loop.lineno), lineno=loop.lineno)
                mark.sx_mark = True
                loop.body.insert(0, mark.set_environment(self))
        return tree

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict:
            if attribute not in _DICT_ATTRIBUTES:
                try:
                    return obj[attribute]
                except KeyError:
                    return self.undefined(obj=obj, name=attribute)
            if attribute in _DICT_READERS:
                return getattr(obj, attribute)
        elif kind is str and attribute in _STR_METHODS:
            return getattr(obj, attribute)
        elif (kind is _SafeNamespace or kind is LoopContext) and not attribute.startswith("_"):
            try:
                return getattr(obj, attribute)
            except AttributeError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # jinja returns an undefined that prints as '' and only raises when used: a template reaching for
        # ''.__class__ or self._TemplateReference__context is refused outright instead.
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe."
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return _BINOPS[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's names)
        """Every call a template makes.

        A builtin method (``str.strip``, ``dict.get``) is called directly: it cannot carry jinja's unsafe markers
        or take the context, so the sandbox's checks always pass it; the methods that pad, repeat or join text
        are bounded first. Any other call (a macro, ``loop()``, ``caller()``) counts a tick: a macro calling
        itself twice is caught by the deadline.
        """
        kind = type(__obj)
        if kind is _BUILTIN_METHOD:
            if kwargs:
                kwargs.pop("_loop_vars", None)
                kwargs.pop("_block_vars", None)
            check = _METHOD_CHECKS.get(__obj.__name__)
            if check is not None:
                args = check(__obj.__self__, args, kwargs)
            try:
                result = __obj(*args, **kwargs)
            except StopIteration:
                return __self.undefined("value was undefined because a callable raised a StopIteration exception")
            return result if check is not _check_fromkeys else _built(result)
        budget = _BUDGET.get()
        if budget is not None:
            budget.ticks += 1
            if not budget.ticks & 31 and monotonic() > budget.next_check:
                budget.check()
        if kind is Macro:
            # a template's own macro (or caller): jinja's Context.call pops the loop/block variables and calls it
            # (a Macro takes no context, and cannot be marked unsafe: the sandbox's checks always pass it)
            if kwargs:
                kwargs.pop("_loop_vars", None)
                kwargs.pop("_block_vars", None)
            if __obj.catch_varargs or __obj.catch_kwargs:
                _built(args)
                _built(kwargs)
            try:
                return __obj(*args, **kwargs)
            except StopIteration:
                return __self.undefined("value was undefined because a callable raised a StopIteration exception")
        if kind is types.MethodType and isinstance(__obj.__self__, str) and __obj.__name__ in _METHOD_CHECKS:
            args = _METHOD_CHECKS[__obj.__name__](__obj.__self__, args, kwargs)  # Markup's methods
        # the sandbox's own call
        if not __self.is_safe_callable(__obj):
            raise jinja2.exceptions.SecurityError(f"{__obj!r} is not safely callable")
        return __context.call(__obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        # jinja's wrap_str_format, with formatters that bound widths and precisions
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in (
            "format", "format_map"
        ):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        is_format_map = value.__name__ == "format_map"
        if isinstance(owner, Markup):
            formatter: SandboxedFormatter = _BoundedEscapeFormatter(self, escape=owner.escape)
        else:
            formatter = _BoundedFormatter(self)
        kind = type(owner)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs = args[0]
                args = ()
            return kind(formatter.vformat(owner, args, kwargs))

        return functools.update_wrapper(wrapper, value)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = _ChatSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters.update(_bounded_filters(env.filters))
    env.filters["tojson"] = _tojson
    env.filters[_ITER_FILTER] = env.filters[_OUTER_ITER_FILTER] = _sx_iter
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _DictFactory()
    env.globals["namespace"] = _SafeNamespace
    env.globals["lipsum"] = _lipsum
    env.globals["cycler"] = _cycler
    return env


@lru_cache(maxsize=64)
def compile_template(template: str) -> jinja2.Template:
    """Compile once per distinct template text (constant folding is bounded too)."""
    token = _BUDGET.set(_Budget(current_render_limits(), _COMPILE_FOLD_CHARS, monotonic()))
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(f"chat template does not compile: {exc}", rule="template-syntax") from None
    except Exception as exc:  # a template nested past Python's parser (RecursionError, SyntaxError), ...
        raise TemplateRenderError(
            f"chat template does not compile: {type(exc).__name__}: {exc}", rule="template-syntax"
        ) from None
    finally:
        _BUDGET.reset(token)


def tokenizer_template_kwargs(tokenizer: Any) -> dict[str, Any]:
    """The special-token names transformers passes to every template render."""
    mapping = getattr(tokenizer, "special_tokens_map", None) or {}
    return {k: (str(v) if not isinstance(v, (list, tuple)) else [str(x) for x in v]) for k, v in mapping.items()}


def template_of(tokenizer: Any, chat_template: str | None = None, tools: Any = None) -> str:
    """The template text ``apply_chat_template`` would use for this tokenizer.

    ``chat_template`` may be a template text or the name of one of the
    tokenizer's named templates.
    """
    named = getattr(tokenizer, "chat_template", None)
    if isinstance(named, Mapping) and chat_template in named:
        return named[chat_template]
    template = chat_template if chat_template is not None else named
    if isinstance(template, Mapping):
        template = template.get("tool_use" if tools and "tool_use" in template else "default")
    if not template:
        raise TemplateRenderError("the tokenizer has no chat template; pass chat_template=...", rule="template-missing")
    return template


_RENDER_ARGUMENTS = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


class ChatRenderer:
    """Renders one chat template with fixed tokenizer kwargs."""

    def __init__(self, template: str, base_kwargs: Mapping[str, Any] | None = None) -> None:
        self.template_text = template
        self._compiled = compile_template(template)
        self._base_kwargs = dict(base_kwargs or {})

    @contextmanager
    def memo(self) -> Iterator[None]:
        """Share ``tojson`` results, and one render budget (restarted by each render), across the renders of one
        conversation."""
        token = _TOJSON_MEMO.set({})
        budget_token = _BUDGET.set(_Budget.for_render())
        try:
            yield
        finally:
            _BUDGET.reset(budget_token)
            _TOJSON_MEMO.reset(token)

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """The template's text for these messages, within the render bounds.

        Whatever goes wrong is a ``TemplateRenderError``: ``template-timeout``,
        ``template-output-too-large`` and ``template-memory`` for a bound passed,
        ``template-sandbox`` for a reach outside the sandbox, ``template-render``
        for anything the template raises (``raise_exception``, an undefined
        value, ``ZeroDivisionError``, ``RecursionError``, ``MemoryError``, ...).
        """
        budget = _BUDGET.get()
        try:
            variables = {**self._base_kwargs, **kwargs} if kwargs else self._base_kwargs.copy()
            if not _RENDER_ARGUMENTS.isdisjoint(variables):  # a TypeError, as in apply_chat_template
                clash = sorted(_RENDER_ARGUMENTS.intersection(variables))[0]
                raise TypeError(f"render() got multiple values for keyword argument {clash!r}")
            variables.update(
                messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt
            )
            if budget is None:
                return self._compiled.render(variables)
            budget.restart()
            return self._compiled.render_within(budget, variables)
        except TemplateRenderError:
            raise
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateRenderError(f"the chat template broke the sandbox: {exc}", rule="template-sandbox") from None
        except jinja2.exceptions.TemplateError as exc:
            raise TemplateRenderError(f"the chat template raised: {exc}") from None
        except Exception as exc:
            raise TemplateRenderError(f"the chat template failed: {type(exc).__name__}: {exc}") from None

    def render_marked(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> tuple[str, dict[int, int]]:
        """``render(messages)`` (no generation prompt), and for each message a top-level loop stepped over, the
        offset in the text where the last such step started (the main message loop runs last in chat templates;
        ``swift_ext.core`` uses these offsets only for families whose description states it, tested against
        ``apply_chat_template``). Messages are told apart by identity."""
        budget = _BUDGET.get()
        outer = None
        if budget is None:  # outside ChatRenderer.memo(): a budget of its own, as render() makes
            budget = _Budget.for_render()
            outer = _BUDGET.set(budget)
        budget.marks, budget.parts = [], None
        try:
            text = self.render(messages, tools=tools, kwargs=kwargs)
            marks, parts = budget.marks, budget.parts or []
        finally:
            budget.marks = budget.parts = None
            if outer is not None:
                _BUDGET.reset(outer)
        index = {id(message): k for k, message in enumerate(messages)}
        offsets: dict[int, int] = {}
        at = done = 0  # characters in parts[:done]; marks come in output order
        for item, count in marks:
            if count > done:
                at += sum(map(len, parts[done:count]))
                done = count
            k = index.get(id(item))
            if k is not None and messages[k] is item:
                offsets[k] = at
        return text, offsets
