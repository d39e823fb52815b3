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
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TemplateRenderError


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
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    key = (id(value), ensure_ascii, indent, tuple(separators) if separators else None, sort_keys)
    hit = memo.get(key)
    if hit is not None and hit[0] is value:
        return hit[1]
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    memo[key] = (value, text)
    return text


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
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


_DICT_ATTRIBUTES = frozenset(dir(dict))
_DICT_READERS = frozenset({"get", "items", "keys", "values"})
_STR_METHODS = frozenset(name for name in dir(str) if not name.startswith("_")) - {"format", "format_map"}


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

    Everything else goes through the sandbox unchanged.
    """

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


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = _ChatSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _DictFactory()
    env.globals["namespace"] = _SafeNamespace
    return env


@lru_cache(maxsize=64)
def compile_template(template: str) -> jinja2.Template:
    """Compile once per distinct template text."""
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(f"chat template does not compile: {exc}", rule="template-syntax") from None


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


class ChatRenderer:
    """Renders one chat template with fixed tokenizer kwargs."""

    def __init__(self, template: str, base_kwargs: Mapping[str, Any] | None = None) -> None:
        self.template_text = template
        self._compiled = compile_template(template)
        self._base_kwargs = dict(base_kwargs or {})

    @contextmanager
    def memo(self) -> Iterator[None]:
        """Share ``tojson`` results across the renders of one conversation."""
        token = _TOJSON_MEMO.set({})
        try:
            yield
        finally:
            _TOJSON_MEMO.reset(token)

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        context = {**self._base_kwargs, **(kwargs or {})}
        try:
            return self._compiled.render(
                messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt, **context
            )
        except jinja2.exceptions.TemplateError as exc:
            raise TemplateRenderError(f"the chat template raised: {exc}") from None
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            raise TemplateRenderError(f"the chat template failed: {type(exc).__name__}: {exc}") from None
