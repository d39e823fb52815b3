"""The import graph of ``swift_ext``, read from the source (``ast``), never by importing it.

Rules held here:

- the development fixtures (``swift_ext.dev``) are not part of the product: no module outside ``swift_ext.dev``
  imports it, except the CLI's model resolver (``swift_ext.diagnostics.source``), and only inside the function that
  serves the explicit ``fixture:NAME`` spelling (never at module level).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "swift_ext"
DEV = "swift_ext.dev"
DEV_GATE = ("swift_ext.diagnostics.source", "_from_fixture")
"""The one place in the product allowed to reach the development fixtures: (module, function)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, str | None]]:
    """``(imported module, enclosing function or None)`` for every import statement of one file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                found.append((base, function))
                found.extend((f"{base}.{alias.name}", function) for alias in child.names)
            visit(child, function)

    visit(tree, None)
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_the_product_does_not_import_the_development_fixtures() -> None:
    offenders = []
    for name, path in all_modules().items():
        if name == DEV or name.startswith(DEV + "."):
            continue
        for target, function in imports(path):
            if target == DEV or target.startswith(DEV + "."):
                if (name, function) != DEV_GATE:
                    offenders.append(f"{name} ({function or 'module level'}) imports {target}")
    assert not offenders, "product modules reach swift_ext.dev:\n" + "\n".join(offenders)


def test_the_gate_is_used() -> None:
    """The rule above is not vacuous: the resolver does reach the fixtures, inside its gate function."""
    module, function = DEV_GATE
    assert any(target.startswith(DEV) and fn == function for target, fn in imports(all_modules()[module]))
