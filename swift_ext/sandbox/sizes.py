"""How large a value is as text, and the checks the compiled template code calls.

``_shape`` measures a container (depth, size as text, nodes) in time linear in its distinct parts; ``_built``
refuses a container the template builds that is nested too deep or too large as text, ``_check_text`` a value
too large to print. The ``_sx_*`` functions are what ``compiler._BoundedCodeGenerator`` writes into a template's
code off its inline fast paths (``{{ value }}``, ``~``, ``+``, literals, the iterable of a ``{% for %}``, which
ticks the deadline), and ``_bounded_concat`` is the environment's ``concat``.
"""

from __future__ import annotations

import sys
import types
from collections import deque
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from itertools import chain
from operator import length_hint
from time import monotonic
from typing import Any

from jinja2.runtime import markup_join
from jinja2.utils import Namespace
from markupsafe import Markup, escape

from .limits import _BUDGET, _NESTING_LIMIT, _SHORT, _BoundExceeded, _Budget, _budget


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
        _charge_printed(value)
    return value


def _sx_escape(value: Any) -> Markup:
    """``{{ value }}`` under ``{% autoescape true %}``."""
    text = escape(value if hasattr(value, "__html__") else _sx_str(value))
    if len(text) > _SHORT:
        _charge_printed(text)
    return text


def _charge_printed(text: str) -> None:
    """A long printed value (the callers test the length first: short ones, nearly all, cost no call)."""
    budget = _budget()
    budget.check_size(len(text), "prints a value")
    budget.printed(text)


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
