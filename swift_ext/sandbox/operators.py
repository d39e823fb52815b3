"""Operators and methods that make text out of numbers or repeat it, bounded before they run.

``_BINOPS``: ``*``, ``**`` and ``%``, the sandbox's intercepted operators (``compiler._ChatSandbox.call_binop``);
``_BoundedFormatter``: ``str.format`` refusing widths and precisions past the budget; ``_METHOD_CHECKS``: the
methods of str / bytes / int / dict that pad, repeat, replace, translate or join, checked by
``compiler._ChatSandbox.call`` before it calls them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

from .limits import _INT_BITS_LIMIT, _BoundExceeded, _budget
from .sizes import _check_text, _shape, _text_size


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
        tab: Any = "\t" if isinstance(owner, str) else b"\t"  # the owner's own type (mypy cannot pair the two)
        _budget().charge(owner.count(tab) * tabsize, "expands tabs")
    return args


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """An upper bound on ``len(text.replace(old, new, count))`` (0 when the types do not fit)."""
    if not isinstance(text, _TEXT_TYPES) or not isinstance(old, type(text)) or not isinstance(new, type(text)):
        return 0
    hits = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]  # old: the same type, checked above
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
