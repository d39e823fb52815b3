"""The rule catalogue (``swift_ext.rules``) is complete, has no stale entry, and ``docs/rules.md`` is its text.

Rule ids are found in the source with ``ast``, never by importing the modules that raise them. A rule id is
*produced* where a string reaches a ``rule``:

- a ``rule=`` keyword argument (any call: ``InputError(..., rule="input-empty")``, ``Row(..., rule=...)``);
- a positional argument in the place of a parameter named ``rule`` of a function or class defined in the package
  (``RowFormatError(detail, "input-bad-json")``, ``_failed(result, "input-too-deep", ...)``);
- an assignment to ``rule`` or ``x.rule`` (class defaults such as ``InputError.rule = "input"``, locals);
- the default of a parameter named ``rule`` (``SourceError(detail, *, rule="source")``).

A default (class attribute or parameter default) is produced where the class or function is called without a
rule (``TemplateRenderError(detail)`` in ``render.py`` raises ``template-render``), including through a subclass
that sets none; a default that no call leaves in place is still a rule id (a caller outside the package can raise
it), attributed to the module that defines it when nothing else produces it.

An f-string is resolved where its placeholders are parameters of the function that builds it and every call of
that function passes string constants for them: ``_check_choice("train_turns", ...)`` builds
``f"policy-{name}"``, so ``policy-train_turns`` is produced. An f-string that cannot be resolved must start with
one of the documented dynamic prefixes (``swift_ext.rules.DYNAMIC_PREFIXES``).

A rule id is *read* where code compares ``x.rule`` with a constant or keeps constants in a ``*_RULES`` set: those
must name catalogued rules too (a check of a rule that no longer exists is silently never true).
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from swift_ext import rules
from swift_ext.rules import Rule

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "swift_ext"
DOCS = ROOT / "docs" / "rules.md"
REGENERATE = "python -m swift_ext.rules > docs/rules.md"

NOT_SEEN_BY_THE_SCAN: dict[str, str] = {
    # Catalogued rule ids that the package produces in a way this scan cannot follow (an id assembled from
    # pieces at run time), each with where it is built. None today: every catalogued id is found in the source.
}


@dataclass(frozen=True)
class Use:
    rule: str
    module: str
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _trees() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


# ------------------------------------------------------------------ signatures
def _positional(function: ast.FunctionDef | ast.AsyncFunctionDef, bound: bool) -> list[str]:
    names = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
    return names[1:] if bound and names else names


def _signatures(trees: dict[str, ast.Module]) -> dict[str, list[list[str]]]:
    """Callable name -> the positional parameter lists of every definition of that name in the package (methods
    without ``self``, classes as their ``__init__`` or, for dataclasses, their fields in order)."""
    found: dict[str, list[list[str]]] = defaultdict(list)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
                if init is not None:
                    found[node.name].append(_positional(init, bound=True))
                elif any("dataclass" in ast.unparse(d) for d in node.decorator_list):
                    found[node.name].append([s.target.id for s in node.body
                                             if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)])
                for method in node.body:
                    if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) and method.name != "__init__":
                        static = any(ast.unparse(d) == "staticmethod" for d in method.decorator_list)
                        found[method.name].append(_positional(method, bound=not static))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[node.name].append(_positional(node, bound=False))
    return found


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _rule_position(name: str | None, signatures: dict[str, list[list[str]]]) -> int | None:
    """Where ``rule`` sits among the positional parameters of the callable ``name``, if every definition agrees."""
    places = {params.index("rule") if "rule" in params else None for params in signatures.get(name or "", [])}
    return places.pop() if len(places) == 1 else None


# ------------------------------------------------------------------ f-strings
def _pattern(node: ast.JoinedStr) -> str:
    return "".join(part.value if isinstance(part, ast.Constant) else "{" + ast.unparse(part.value) + "}"
                   for part in node.values)


def _argument(call: ast.Call, params: list[str], name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    index = params.index(name)
    return call.args[index] if index < len(call.args) else None


def _expand(node: ast.JoinedStr, function: ast.FunctionDef | None, trees: dict[str, ast.Module],
            signatures: dict[str, list[list[str]]]) -> list[str] | None:
    """The concrete strings an f-string takes, from the constants every caller of its function passes; None when
    they cannot all be known."""
    holes = [part.value for part in node.values if isinstance(part, ast.FormattedValue)]
    if function is None or not all(isinstance(h, ast.Name) for h in holes):
        return None
    params = _positional(function, bound=False)
    names = [h.id for h in holes]
    if not set(names) <= set(params) or len(signatures.get(function.name, [])) != 1:
        return None
    choices: dict[str, list[str]] = {name: [] for name in names}
    calls = [c for tree in trees.values() for c in ast.walk(tree)
             if isinstance(c, ast.Call) and _callee(c) == function.name]
    for call, name in itertools.product(calls, names):
        value = _argument(call, params, name)
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            return None
        choices[name].append(value.value)
    if not calls:
        return None
    out = []
    for combo in itertools.product(*(dict.fromkeys(choices[n]) for n in names)):
        values = dict(zip(names, combo))
        out.append("".join(part.value if isinstance(part, ast.Constant) else values[part.value.id]
                           for part in node.values))
    return out


# ------------------------------------------------------------------ the scan
class _Scan(ast.NodeVisitor):
    def __init__(self, module: str, trees: dict[str, ast.Module], signatures: dict[str, list[list[str]]]) -> None:
        self.module, self.trees, self.signatures = module, trees, signatures
        self.function: ast.FunctionDef | None = None
        self.cls: str | None = None
        self.produced: list[Use] = []
        self.defaults: list[tuple[str, Use]] = []
        """(class or function name, its default rule)."""
        self.bases: dict[str, list[str]] = {}
        self.dynamic: list[tuple[str, Use]] = []
        self.read: list[Use] = []
        self.prefixes: list[Use] = []

    # where a string becomes a rule
    def _value(self, node: ast.expr | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.produced.append(Use(node.value, self.module, node.lineno))
        elif isinstance(node, ast.JoinedStr):
            expanded = _expand(node, self.function, self.trees, self.signatures)
            if expanded is None:
                self.dynamic.append((_pattern(node), Use(_pattern(node), self.module, node.lineno)))
            else:
                self.produced.extend(Use(rule, self.module, node.lineno) for rule in expanded)
        elif isinstance(node, ast.IfExp):
            self._value(node.body)
            self._value(node.orelse)

    def _default(self, owner: str, node: ast.expr | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.defaults.append((owner, Use(node.value, self.module, node.lineno)))
        else:
            self._value(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.bases[node.name] = [_name(base) for base in node.bases]
        outer = self.cls, self.function
        self.cls, self.function = node.name, None
        self.generic_visit(node)
        self.cls, self.function = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        owner = self.cls if node.name == "__init__" and self.cls and self.function is None else node.name
        positional = [*node.args.posonlyargs, *node.args.args]
        pairs = [*zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults),
                 *zip(node.args.kwonlyargs, node.args.kw_defaults)]
        for arg, default in pairs:
            if arg.arg == "rule":
                self._default(owner, default)
        outer, self.function = self.function, node
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        for keyword in node.keywords:
            if keyword.arg == "rule":
                self._value(keyword.value)
        index = _rule_position(_callee(node), self.signatures)
        if index is not None and index < len(node.args) and not any(
                isinstance(a, ast.Starred) for a in node.args[: index + 1]):
            self._value(node.args[index])
        if isinstance(node.func, ast.Attribute) and node.func.attr == "startswith" and _is_rule(node.func.value):
            for arg in node.args:
                for text in _constants(arg):
                    self.prefixes.append(Use(text, self.module, node.lineno))
        self.generic_visit(node)

    def _assign(self, target: ast.expr, value: ast.expr | None) -> None:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts):
                self._assign(t, v)
        elif isinstance(target, ast.Name) and target.id == "rule" and self.cls and self.function is None:
            self._default(self.cls, value)  # a class attribute: the class's default rule
        elif _is_rule(target):
            self._value(value)
        elif isinstance(target, ast.Name) and target.id.endswith("_RULES") and value is not None:
            self.read.extend(Use(text, self.module, value.lineno) for text in _constants(value))

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._assign(target, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assign(node.target, node.value)
        self.generic_visit(node)

    # where a rule is read
    def visit_Compare(self, node: ast.Compare) -> None:
        sides = [node.left, *node.comparators]
        if any(_is_rule(side) for side in sides):
            for side in sides:
                self.read.extend(Use(text, self.module, node.lineno) for text in _constants(side))
        self.generic_visit(node)


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _is_rule(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "rule") or (isinstance(node, ast.Attribute)
                                                                  and node.attr == "rule")


def _constants(node: ast.expr) -> list[str]:
    """String constants of a constant, a tuple/list/set display, or ``frozenset({...})`` / ``set(...)``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [text for element in node.elts for text in _constants(element)]
    if isinstance(node, ast.Call) and _callee(node) in ("frozenset", "set", "tuple") and node.args:
        return _constants(node.args[0])
    return []


@dataclass
class Found:
    produced: dict[str, set[str]]
    """rule id -> modules that produce it."""
    dynamic: list[tuple[str, Use]]
    read: list[Use]
    prefixes: list[Use]
    lines: dict[str, list[Use]]


def _bare_calls(trees: dict[str, ast.Module], defaults: dict[str, Use], signatures: dict[str, list[list[str]]]):
    """``(module, line, default rule)`` of every call that leaves a class's or function's default rule in place."""
    for module, tree in trees.items():
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call) or _callee(call) not in defaults:
                continue
            if any(k.arg in ("rule", None) for k in call.keywords):  # named, or maybe inside **kwargs
                continue
            index = _rule_position(_callee(call), signatures)
            if index is not None and (index < len(call.args) or any(isinstance(a, ast.Starred) for a in call.args)):
                continue
            yield Use(defaults[_callee(call)].rule, module, call.lineno)


def _inherited(own: dict[str, Use], bases: dict[str, list[str]]) -> dict[str, Use]:
    """Each class's default rule, its own or its nearest base's (by name, within the package)."""
    out = dict(own)
    changed = True
    while changed:
        changed = False
        for cls, parents in bases.items():
            inherited = next((out[p] for p in parents if p in out), None)
            if cls not in out and inherited is not None:
                out[cls], changed = inherited, True
    return out


def scan() -> Found:
    trees = _trees()
    signatures = _signatures(trees)
    found = Found(defaultdict(set), [], [], [], defaultdict(list))
    defaults: dict[str, Use] = {}
    bases: dict[str, list[str]] = {}

    def produce(use: Use) -> None:
        found.produced[use.rule].add(use.module)
        found.lines[use.rule].append(use)

    for module, tree in trees.items():
        visitor = _Scan(module, trees, signatures)
        visitor.visit(tree)
        for use in visitor.produced:
            produce(use)
        defaults.update(visitor.defaults)
        bases.update(visitor.bases)
        found.dynamic += visitor.dynamic
        found.read += visitor.read
        found.prefixes += visitor.prefixes
    for use in _bare_calls(trees, _inherited(defaults, bases), signatures):
        produce(use)
    for use in defaults.values():  # a default nothing raises as it stands: the module that defines it
        if use.rule not in found.produced:
            produce(use)
    found.produced, found.lines = dict(found.produced), dict(found.lines)
    return found


FOUND = scan()


def _where(uses: list[Use]) -> str:
    return ", ".join(f"{u.module.replace('.', '/')}.py:{u.line}" for u in uses[:3])


_GROUP_BY_PREFIX = {"input-": "INPUT", "template-": "TEMPLATE", "reasoning-": "REASONING", "I": "INVARIANTS",
                    "policy-": "POLICY", "rollout-": "ROLLOUT", "lf-": "ADAPTERS", "source-": "CLI", "audit-": "CLI"}


def _entry(rule: str, modules: set[str]) -> str:
    """The ``Rule`` member to add for ``rule``, ready to paste but for its meaning."""
    group = next((g for prefix, g in _GROUP_BY_PREFIX.items() if rule.startswith(prefix)), "<GROUP>")
    return (f'    {rule.upper().replace("-", "_")} = ("{rule}", Group.{group},\n'
            f'        "<what broke, and what the user can do>",\n'
            f"        {tuple(sorted(modules))!r})")


# ------------------------------------------------------------------ tests
def test_the_scan_finds_rules() -> None:
    """Not vacuous: the scan sees each way a rule is produced today."""
    def produced(rule: str) -> set[str]:
        return FOUND.produced.get(rule, set())

    assert "swift_ext.messages" in produced("input-empty")                    # rule= keyword
    assert "swift_ext.diagnostics.rows" in produced("input-bad-messages")     # positional rule parameter
    assert "swift_ext.render" in produced("template-render")                  # class default, raised bare
    assert "swift_ext.errors" in produced("internal-error")                   # class default, raised bare
    assert "swift_ext.diagnostics.source" in produced("source")               # parameter default, never bare
    assert "swift_ext.diagnostics.auditing" in produced("audit-worker-died")  # assignment to a local
    assert "swift_ext.options" in produced("policy-train_turns")              # rule= passed to a helper
    assert "I5-zero-label" in {u.rule for u in FOUND.read}


def test_every_rule_the_package_produces_is_catalogued() -> None:
    catalogued = {rule.value for rule in Rule}
    missing = sorted(set(FOUND.produced) - catalogued)
    assert not missing, (
        f"rule ids produced in swift_ext but not in swift_ext/rules.py ({len(missing)}); add to class Rule, in "
        "its group (then run `" + REGENERATE + "`):\n\n"
        + "\n".join(f"    # produced at {_where(FOUND.lines[r])}\n{_entry(r, FOUND.produced[r])}" for r in missing))


def test_every_dynamic_rule_has_a_documented_prefix() -> None:
    undocumented = [f"{pattern!r} at {_where([use])}" for pattern, use in FOUND.dynamic
                    if not any(pattern.startswith(prefix) for prefix in rules.DYNAMIC_PREFIXES)]
    assert not undocumented, (
        "rule ids built at run time from values the scan cannot list; build them from a fixed set of constants "
        "(then each becomes a Rule member), or document the prefix in swift_ext.rules.DYNAMIC_PREFIXES:\n"
        + "\n".join(undocumented))


def test_every_rule_the_package_reads_is_catalogued() -> None:
    catalogued = {rule.value for rule in Rule}
    unknown = [f"{u.rule!r} at {_where([u])}" for u in FOUND.read if u.rule not in catalogued]
    unknown += [f"prefix {u.rule!r} at {_where([u])}" for u in FOUND.prefixes
                if not any(rule.startswith(u.rule) for rule in catalogued)]
    assert not unknown, "code compares rules with ids that are not in swift_ext.rules.Rule:\n" + "\n".join(unknown)


def test_no_catalogue_entry_is_stale() -> None:
    stale = sorted(rule.value for rule in Rule if rule.value not in FOUND.produced
                   and rule.value not in NOT_SEEN_BY_THE_SCAN)
    assert not stale, ("catalogued rule ids that nothing in swift_ext produces any more; remove them from "
                       "swift_ext/rules.py (then run `" + REGENERATE + "`): " + ", ".join(stale))
    exempt_but_seen = sorted(set(NOT_SEEN_BY_THE_SCAN) & set(FOUND.produced))
    assert not exempt_but_seen, f"the scan now sees these; remove them from NOT_SEEN_BY_THE_SCAN: {exempt_but_seen}"


def test_raised_by_names_the_modules_that_produce_each_rule() -> None:
    wrong = [(rule, tuple(sorted(FOUND.produced[rule.value]))) for rule in Rule
             if rule.value in FOUND.produced and tuple(sorted(rule.raised_by)) != tuple(sorted(
                 FOUND.produced[rule.value]))]
    assert not wrong, ("swift_ext/rules.py: raised_by differs from the modules that produce the rule; set (then run `"
                       + REGENERATE + "`):\n" + "\n".join(f"    Rule.{r.name}: {m!r}" for r, m in wrong))


def test_every_member_is_documented() -> None:
    for rule in Rule:
        assert isinstance(rule.group, rules.Group), f"Rule.{rule.name}: {rule.group!r} is not a Group"
        assert rule.meaning.strip() and not rule.meaning.startswith("<"), f"Rule.{rule.name} has no meaning"
        assert rule.name == rule.value.upper().replace("-", "_"), f"Rule.{rule.name} should be named after its id"


def test_docs_rules_md_is_the_catalogue() -> None:
    assert DOCS.is_file(), f"docs/rules.md is missing; run `{REGENERATE}`"
    assert DOCS.read_text(encoding="utf-8") == rules.markdown(), (
        f"docs/rules.md is not the text of swift_ext/rules.py; run `{REGENERATE}`")
