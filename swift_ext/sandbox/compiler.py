"""The environment chat templates compile in, and the code it generates.

``_BoundedCodeGenerator``: jinja's code generator with the size and time checks written inline where templates
spend their time; ``_BoundedTemplate``: a compiled template whose ``render`` runs within the render bounds and
turns a bound passed into a ``TemplateRenderError``; ``_ChatSandbox``: jinja's ``ImmutableSandboxedEnvironment``
with fast paths for what chat templates do most, bounded calls and operators, and unsafe attributes refused where
they are read; ``_environment()``: the one environment, with transformers' options, filters and globals.
"""

from __future__ import annotations

import functools
import types
from functools import lru_cache
from time import monotonic
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import Markup

from ..errors import TemplateRenderError
from .filters import (
    _bounded_filters,
    _cycler,
    _DictFactory,
    _GenerationTag,
    _lipsum,
    _raise_exception,
    _SafeNamespace,
    _strftime_now,
    _tojson,
)
from .limits import _ANY_BIG, _BUDGET, _SHORT, _BoundExceeded, _Budget, _budget
from .operators import _BINOPS, _METHOD_CHECKS, _BoundedEscapeFormatter, _BoundedFormatter, _check_fromkeys
from .sizes import (
    _bounded_concat,
    _built,
    _sx_escape,
    _sx_grown,
    _sx_iter,
    _sx_join,
    _sx_mark,
    _sx_markup_join,
    _sx_str,
)

# the names _ChatSandbox.getattr answers without the sandbox's detour, and the type .call calls directly
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
        self.visit(node.node, frame)  # type: ignore[arg-type]  # a loop's iterable, never None
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
    def visit_Add(self, node: nodes.BinExpr, frame: Any) -> None:
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
        finally:
            # The template's macros close over the context, and the context holds them: a reference cycle that
            # keeps each render's variables (the messages as rendered, namespaces) alive until the garbage
            # collector runs. encode renders a conversation several times: a one-round gpt-oss encode left 42 KB
            # of such garbage, and clearing it took its peak from 87 KB to 74 KB (benchmarks/trajectory.py, where
            # the floor's is 40 KB). The output is a string: nothing of the context is needed after it.
            context.vars.clear()
            context.exported_vars.clear()
            context.parent = {}


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
                mark.sx_mark = True  # type: ignore[attr-defined]
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
