"""The import graph of ``swift_ext``: no cycles, and each layer imports only the layers below it.

The graph is read from the source with ``ast`` (never by importing it). An edge is every import of a ``swift_ext``
module, at module level or inside a function (a function-level import runs the first time the function does, and
a cycle through it fails then, not at import time), plus:

- ``importlib.import_module("swift_ext....")`` with a constant name;
- a module-level tuple or list whose items are all names of ``swift_ext`` modules (``cli.COMMAND_MODULES``: the
  commands imported by name so that a missing optional dependency of one command breaks none of the others).

``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``. Importing
``swift_ext.a.b`` also runs ``swift_ext/__init__.py`` and ``swift_ext/a/__init__.py``; those implicit parent imports
are not edges (every module would otherwise be in a cycle with its package). Imports under ``if TYPE_CHECKING:``
never run: they count for the layer rules but not for cycles.

LAYERS: the one place they are defined (``docs/architecture.md`` states them, checked by the last test here).

==============  =======================================================================  ======================
layer           modules                                                                  may import
==============  =======================================================================  ======================
core            everything not listed below: ``swift_ext`` (the public API), ``types``,  core
                ``errors``, ``messages``, ``families``, ``render``, ``sandbox.*``, ``tokens``,
                ``text``, ``template_facts``, ``core``, ``verify``, ``rules``
rollout         ``swift_ext.rollout.*``                                                  core, rollout
diagnostics     ``swift_ext.diagnostics.*``                                              core, rollout,
                                                                                         diagnostics (and dev
                                                                                         through the one gate)
ms_swift        ``swift_ext.ms_swift.*``, ``swift_ext.rollout_swift``,                   core, rollout, ms_swift
                ``swift_ext.plugin`` (the ms-swift adapter)
llamafactory    ``swift_ext.llamafactory.*`` (the LLaMA-Factory adapter)                 core, rollout,
                                                                                         llamafactory
cli             ``swift_ext.cli``, ``swift_ext.commands.*``                              all but dev
dev             ``swift_ext.dev.*`` (fixtures; not the product)                          core, dev
==============  =======================================================================  ======================

An adapter never imports the other adapter (each has its own environment: LLaMA-Factory and ms-swift pin
conflicting transformers). The one edge into ``dev`` from the product is the gate ``DEV_GATE`` of
``test_imports.py``: the CLI's model resolver, inside the function serving ``fixture:NAME``.

Inside the core, the template sandbox (``swift_ext.sandbox``) is a chain: each of its modules imports only the ones
before it in ``SANDBOX`` and, outside the sandbox, only ``SANDBOX_MAY_IMPORT``; nothing but ``swift_ext.render``
(its public entry) imports it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from test_imports import DEV_GATE, all_modules

PACKAGE = Path(__file__).resolve().parents[2] / "swift_ext"
ARCHITECTURE_MD = PACKAGE.parent / "docs" / "architecture.md"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (layer, module names: a name covers itself and its submodules); the first match wins; "core" is the rest
    ("rollout", ("swift_ext.rollout",)),
    ("diagnostics", ("swift_ext.diagnostics",)),
    ("ms_swift", ("swift_ext.ms_swift", "swift_ext.rollout_swift", "swift_ext.plugin")),
    ("llamafactory", ("swift_ext.llamafactory",)),
    ("cli", ("swift_ext.cli", "swift_ext.commands")),
    ("dev", ("swift_ext.dev",)),
)
CORE = "core"

MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "rollout": frozenset({"core", "rollout"}),
    "diagnostics": frozenset({"core", "rollout", "diagnostics"}),
    "ms_swift": frozenset({"core", "rollout", "ms_swift"}),
    "llamafactory": frozenset({"core", "rollout", "llamafactory"}),
    "cli": frozenset({"core", "rollout", "diagnostics", "ms_swift", "llamafactory", "cli"}),
    "dev": frozenset({"core", "dev"}),
}
ADAPTERS = frozenset({"ms_swift", "llamafactory"})

SANDBOX = ("swift_ext.sandbox.limits", "swift_ext.sandbox.sizes", "swift_ext.sandbox.operators",
           "swift_ext.sandbox.filters", "swift_ext.sandbox.compiler")
"""The sandbox's modules in import order: each may import those before it, never one after it."""
SANDBOX_MAY_IMPORT = frozenset({"swift_ext.errors"})
SANDBOX_ENTRY = "swift_ext.render"

KNOWN_CYCLES: tuple[frozenset[str], ...] = ()
"""Cycles accepted for now (none: the ms-swift adapter's data <-> template cycle is gone)."""


def layer_of(module: str) -> str:
    for layer, names in LAYERS:
        if any(module == name or module.startswith(name + ".") for name in names):
            return layer
    return CORE


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    function: str | None
    line: int
    type_checking: bool = False

    def where(self) -> str:
        return f"{self.source.replace('.', '/')}.py:{self.line} ({self.function or 'module level'})"


def _resolve(name: str, modules: set[str]) -> str | None:
    """The ``swift_ext`` module ``name`` is, or is in (``swift_ext.core.encode`` -> ``swift_ext.core``)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in modules:
            return ".".join(parts[:k])
    return None


def edges_of(module: str, path: Path, modules: set[str]) -> list[Edge]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[Edge] = []

    def add(name: str, node: ast.AST, function: str | None, type_checking: bool) -> None:
        target = _resolve(name, modules)
        if target is not None and target != module:
            found.append(Edge(module, target, function, node.lineno, type_checking))

    def visit(node: ast.AST, function: str | None, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name, type_checking)
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, function, True)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, function, type_checking)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    name = f"{base}.{alias.name}"
                    add(name if name in modules else base, child, function, type_checking)
            elif isinstance(child, ast.Call) and ast.unparse(child.func).endswith("import_module") and child.args:
                arg = child.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    add(arg.value, child, function, type_checking)
            elif isinstance(child, ast.Assign) and function is None and isinstance(child.value, (ast.Tuple, ast.List)):
                names = [e.value for e in child.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if names and len(names) == len(child.value.elts) and all(n in modules for n in names):
                    for name in names:  # modules imported by name, kept as data
                        add(name, child, function, type_checking)
            visit(child, function, type_checking)

    visit(tree, None, False)
    return found


def build_graph() -> list[Edge]:
    paths = all_modules()
    modules = set(paths)
    edges = [edge for name, path in sorted(paths.items()) for edge in edges_of(name, path, modules)]
    return list(dict.fromkeys(edges))  # one edge per import statement (``from x import a, b`` is one)


EDGES = build_graph()


def strongly_connected(edges: list[Edge]) -> list[frozenset[str]]:
    """The cycles' module sets (strongly connected components of two or more modules), Tarjan's algorithm."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def describe_cycle(component: frozenset[str], edges: list[Edge]) -> str:
    """One cycle through the component, each step with the import that makes it."""
    inside = [e for e in edges if e.source in component and e.target in component]
    start = min(component)
    path, seen = [start], {start}
    while True:
        step = next(e for e in inside if e.source == path[-1] and (e.target == start or e.target not in seen))
        if step.target == start:
            path.append(start)
            break
        path.append(step.target)
        seen.add(step.target)
    lines = [" -> ".join(path)]
    for a, b in zip(path, path[1:]):
        lines += [f"    {a} imports {b} at {e.where()}" for e in inside if e.source == a and e.target == b]
    return "\n".join(lines)


def _runtime(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if not e.type_checking]


# ------------------------------------------------------------------ tests
def test_the_graph_is_read() -> None:
    """Not vacuous: module-level, function-level and by-name imports are all edges."""
    pairs = {(e.source, e.target, e.function) for e in EDGES}
    assert ("swift_ext.core", "swift_ext.render", None) in pairs
    assert ("swift_ext.diagnostics.source", "swift_ext.dev.fixtures", "_from_fixture") in pairs
    assert ("swift_ext.cli", "swift_ext.commands.audit", None) in pairs


def test_layers_are_assigned_as_documented() -> None:
    assert layer_of("swift_ext") == layer_of("swift_ext.rules") == layer_of("swift_ext.template_facts") == CORE
    assert layer_of("swift_ext.rollout.build") == "rollout"
    assert layer_of("swift_ext.rollout_swift") == layer_of("swift_ext.plugin") == "ms_swift"
    assert layer_of("swift_ext.commands.lf") == layer_of("swift_ext.cli") == "cli"
    assert set(MAY_IMPORT) == {CORE, *(layer for layer, _ in LAYERS)}


def test_no_import_cycles() -> None:
    cycles = [c for c in strongly_connected(_runtime(EDGES)) if c not in KNOWN_CYCLES]
    assert not cycles, "import cycles among swift_ext modules:\n" + "\n".join(
        describe_cycle(c, _runtime(EDGES)) for c in cycles)


def test_the_core_imports_no_adapter() -> None:
    offenders = [f"{e.source} imports {e.target} at {e.where()}" for e in EDGES
                 if layer_of(e.source) == CORE and layer_of(e.target) in ADAPTERS]
    assert not offenders, "the core must not import a framework adapter:\n" + "\n".join(offenders)


def test_every_layer_imports_only_what_it_may() -> None:
    offenders = []
    for e in EDGES:
        source, target = layer_of(e.source), layer_of(e.target)
        if target in MAY_IMPORT[source] or (e.source, e.function) == DEV_GATE and target == "dev":
            continue
        offenders.append(f"{e.source} ({source}) imports {e.target} ({target}) at {e.where()}; "
                         f"{source} may import {', '.join(sorted(MAY_IMPORT[source]))}")
    assert not offenders, "layer violations (see the table in this file's docstring):\n" + "\n".join(offenders)


def _sandbox_order(module: str) -> int:
    return SANDBOX.index(module) if module in SANDBOX else len(SANDBOX)  # the package itself: after every module


def test_the_sandbox_is_a_chain_behind_render() -> None:
    in_sandbox = {m for m in all_modules() if m.startswith("swift_ext.sandbox.")}
    assert in_sandbox == set(SANDBOX), f"swift_ext/sandbox/ holds {sorted(in_sandbox)}; list them in SANDBOX, in order"
    assert any(e.source == SANDBOX_ENTRY and e.target == SANDBOX[-1] for e in EDGES)  # not vacuous
    assert any(e.source == SANDBOX[-1] and e.target == SANDBOX[0] for e in EDGES)
    offenders = []
    for e in EDGES:
        source_in, target_in = e.source in SANDBOX, e.target.startswith("swift_ext.sandbox")
        if source_in and target_in and _sandbox_order(e.target) >= _sandbox_order(e.source):
            offenders.append(f"{e.source} imports {e.target} at {e.where()}, which comes after it in SANDBOX")
        elif source_in and not target_in and e.target not in SANDBOX_MAY_IMPORT:
            offenders.append(f"{e.source} imports {e.target} at {e.where()}: the sandbox imports only "
                             f"{', '.join(sorted(SANDBOX_MAY_IMPORT))} outside itself")
        elif target_in and not source_in and e.source != SANDBOX_ENTRY:
            offenders.append(f"{e.source} imports {e.target} at {e.where()}: import it from {SANDBOX_ENTRY}")
    assert not offenders, "the template sandbox's imports (see SANDBOX):\n" + "\n".join(offenders)


def test_docs_architecture_states_these_rules() -> None:
    """docs/architecture.md's "Who may import whom" table is MAY_IMPORT: one set of rules, stated twice, checked."""
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    section = text.split("## Who may import whom", 1)[1].split("\n## ", 1)[0]
    stated = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            layer = cells[0].split("`")[1]
            allowed = cells[1].split(";")[0].split("(")[0]
            stated[layer] = frozenset(name.strip() for name in allowed.split(","))
    assert stated == MAY_IMPORT, "docs/architecture.md ('Who may import whom') and MAY_IMPORT here differ"
