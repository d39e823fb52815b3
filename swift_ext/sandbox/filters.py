"""The filters and globals a chat template is given, as transformers gives them, within the render bounds.

``_bounded_filters``: jinja's own filters, each checked before it runs (the ones that pad, indent, wrap, format,
replace, join or sum), the lazy ones ticking the deadline, and fast paths for the str filters chat templates call
on every message. Then what transformers adds: ``tojson`` (no HTML escaping; memoised per conversation inside
``ChatRenderer.memo()``), ``raise_exception``, ``strftime_now`` and the ``{% generation %}`` tag, and jinja's
``lipsum``, ``cycler``, ``namespace`` and ``dict``, bounded. ``compiler._environment`` installs them.
"""

from __future__ import annotations

import functools
import json
import re
import types
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from time import monotonic
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.filters import make_attrgetter
from jinja2.utils import Cycler, _PassArg, generate_lorem_ipsum

from .limits import _SHORT, _BoundExceeded, _Budget, _budget, _too_large
from .operators import _check_printf, _replaced_size
from .sizes import _built, _check_text, _sx_iter, _text_size, _tick


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


# ----------------------------------------------------------------------- globals, tojson and the generation tag
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
