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

This module is the public entry: ``compile_template``, ``ChatRenderer``,
``template_of``, ``tokenizer_template_kwargs``, and the bounds
(``RenderLimits``, ``current_render_limits``, ``set_render_limits``,
``render_limits``). The sandbox itself (the bounds, the bounded operators and
filters, the code generator) lives in the private package
``swift_ext.sandbox``, one module per job (its ``__init__`` says which).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from time import monotonic
from typing import Any, cast

import jinja2

from .errors import TemplateRenderError
from .sandbox.compiler import _BoundedTemplate, _environment
from .sandbox.filters import _TOJSON_MEMO
from .sandbox.filters import _GenerationTag as _GenerationTag  # template_facts parses templates with the same tag
from .sandbox.limits import (
    _BUDGET,
    _COMPILE_FOLD_CHARS,
    RenderLimits,
    _Budget,
    current_render_limits,
    render_limits,
    set_render_limits,
)

__all__ = [
    "ChatRenderer", "RenderLimits", "compile_template", "current_render_limits", "render_limits", "set_render_limits",
    "template_of", "tokenizer_template_kwargs",
]


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
        self._compiled = cast(_BoundedTemplate, compile_template(template))  # _environment()'s template class
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
            marks: list[tuple[Any, int]] = budget.marks
            parts: list[str] = budget.parts or []
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
