"""The shape of the ms-swift adapter (``swift_ext/ms_swift``), read from its source with ``ast``.

- no import cycle between its modules (``data`` and ``template`` used to import each other);
- no branch on a family name: what differs between families is a field of the family (``families.py``);
- module-level state only in ``state.py``, where it is documented;
- small units: no class over 150 lines, no function over 60;
- ``swift_ext.rollout_swift``, the documented old home of the GRPO functions, still imports them (deprecated).

None of this needs ms-swift: the source is parsed, never imported (except the GRPO modules, which do not import it).
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import swift_ext
from swift_ext.families import GENERIC, _family_from_toml, load_family

PACKAGE = Path(__file__).resolve().parents[2] / "swift_ext" / "ms_swift"
PREFIX = "swift_ext.ms_swift"
FAMILY_NAMES = {family.name for family in swift_ext.list_families()} | {GENERIC.name, "generic"}
MAX_CLASS_LINES = 150
MAX_FUNCTION_LINES = 60
CLASS_DEFAULTS = {("agent.py", "ParityAgentTemplate", "spec")}
"""Class-level containers that are not state: ``spec`` is a default every generated agent-template class replaces
(``agent.make_agent_template_class``) and nothing mutates."""


def modules() -> dict[str, ast.Module]:
    return {path.name: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.glob("*.py"))}


# ----------------------------------------------------------------------------------------------- imports
def package_imports(tree: ast.Module) -> set[str]:
    """Modules of the package this file imports, at module level or inside a function (``template.py`` ...)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(f"{node.module.split('.')[0]}.py")
            else:  # from . import state
                found.update(f"{alias.name}.py" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{PREFIX}."):
            found.add(f"{node.module.split('.')[2]}.py")
        elif isinstance(node, ast.Import):
            found.update(f"{a.name.split('.')[2]}.py" for a in node.names if a.name.startswith(f"{PREFIX}."))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, path, done = [], [], set()

    def visit(name: str) -> None:
        if name in path:
            found.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        path.append(name)
        for other in sorted(graph.get(name, ())):
            visit(other)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"data.py": {"template.py"}, "template.py": {"data.py"}}) == [["data.py", "template.py", "data.py"]]
    assert package_imports(ast.parse("def f():\n    from .data import needs_side_channel\n")) == {"data.py"}


def test_no_import_cycle_in_the_adapter() -> None:
    graph = {name: package_imports(tree) - {"__init__.py"} for name, tree in modules().items()}
    assert "data.py" not in graph["template.py"] and "template.py" not in graph["data.py"]
    assert cycles(graph) == []


# ------------------------------------------------------------------------------------ family names
def _family_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in FAMILY_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_family_literal(element) for element in node.elts)
    return False


def family_name_branches(tree: ast.Module) -> list[str]:
    """Comparisons of something family-like (``family``, ``.name``) with a family's name as a literal."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if any(map(_family_literal, operands)):
            others = [ast.unparse(o) for o in operands if not _family_literal(o)]
            if any("family" in text or text.endswith(".name") for text in others):
                found.append(ast.unparse(node))
    return found


def test_scanner_finds_family_name_branches() -> None:
    for source in ('parser = parse_harmony if encoder.family.name == "gpt_oss" else None',
                   'if self.parity_family == "hf":\n    pass',
                   'ok = family not in ("qwen3", "glm4_7")'):
        assert family_name_branches(ast.parse(source)), source
    # a tool-call syntax that happens to share a family's name is data of the agent template, not a family branch
    assert not family_name_branches(ast.parse('ok = self.spec["parser"] != "deepseek_v3_1"'))


def test_no_branch_on_a_family_name() -> None:
    found = {name: branches for name, tree in modules().items() if (branches := family_name_branches(tree))}
    assert found == {}


def test_the_harmony_parser_is_a_field_of_the_family() -> None:
    from swift_ext.families import MESSAGE_PARSERS as NAMES
    from swift_ext.ms_swift.grpo import MESSAGE_PARSERS, message_parser_for
    from swift_ext.rollout.record import parse_harmony

    assert set(MESSAGE_PARSERS) == set(NAMES)  # every value a family TOML may name has its function
    gpt_oss = load_family("gpt_oss")
    assert gpt_oss.message_parser == "harmony" and message_parser_for(gpt_oss) is parse_harmony
    assert [f.name for f in swift_ext.list_families() if message_parser_for(f) is not None] == ["gpt_oss"]
    assert message_parser_for(GENERIC) is None


def test_an_unknown_message_parser_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\n[stops]\nstrings = ["</s>"]\n[rollout]\nmessage_parser = "channels"\n')
    with pytest.raises(ValueError, match=r"\[rollout\] message_parser must be one of \('harmony',\)"):
        _family_from_toml(path)


# ------------------------------------------------------------------------------------------- state
_MUTABLE_CALLS = {"set", "list", "dict", "Counter", "OrderedDict", "defaultdict", "deque", "Lock", "RLock"}


def _mutable(value: ast.AST | None) -> bool:
    if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        return (func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")) in _MUTABLE_CALLS
    return False


def state_outside_state_py(name: str, tree: ast.Module) -> list[str]:
    found = [f"{name}: global {', '.join(n.names)}" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    scopes = [(None, tree.body)] + [(n.name, n.body) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for owner, body in scopes:
        for node in body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and _mutable(node.value):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    where = (name, owner, ast.unparse(target))
                    if where not in CLASS_DEFAULTS and where[2] != "__all__":
                        found.append(f"{name}: {owner or 'module'}.{ast.unparse(target)}")
    return found


def test_scanner_finds_module_state() -> None:
    source = "_counts = {'rows': 0}\nclass T:\n    _logged: set = set()\ndef f():\n    global _x\n"
    assert state_outside_state_py("x.py", ast.parse(source)) == ["x.py: global _x", "x.py: module._counts",
                                                                 "x.py: T._logged"]


def test_module_state_lives_in_state_py() -> None:
    found = [item for name, tree in modules().items() if name != "state.py"
             for item in state_outside_state_py(name, tree)]
    assert found == []
    documented = ast.get_docstring(modules()["state.py"])
    for name in ("_ACTIVE", "_LOGGED", "_DATA_COUNTS", "_REGISTERED"):
        assert f"``{name}``" in documented


# ------------------------------------------------------------------------------------------- sizes
def test_units_are_small() -> None:
    large = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if limit is not None and node.end_lineno - node.lineno + 1 > limit:
                large.append(f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert large == []


# ------------------------------------------------------------------------------- the old GRPO module
def test_rollout_swift_still_imports_the_grpo_functions() -> None:
    from swift_ext.ms_swift import grpo, logprob_guard

    sys.modules.pop("swift_ext.rollout_swift", None)
    with pytest.warns(DeprecationWarning, match="swift_ext.ms_swift.grpo"):
        old = importlib.import_module("swift_ext.rollout_swift")
    for name in ("TokenTurnEncoding", "check_turn_logprob_counts", "encode_token_turns", "has_token_id_content",
                 "token_content_ids"):
        assert getattr(old, name) is getattr(grpo, name)
    for name in ("explain_logprob_mismatch", "install_logprob_guard"):
        assert getattr(old, name) is getattr(logprob_guard, name)


def test_the_public_names_stay_where_they_were() -> None:
    """Names users and the plugin file import, at their old places (ms-swift needed for ``template``)."""
    import swift_ext.ms_swift as ms

    for name in ("register", "plugin_path", "configure_logprob_guard", "logprob_guard_mode", "LOGPROB_GUARD_ENV",
                 "LOGPROB_GUARD_MODES"):
        assert callable(getattr(ms, name)) or isinstance(getattr(ms, name), (str, tuple))
    assert (ms.SIDE_CHANNEL, ms.SAMPLE_COLUMN, ms.ROW_COLUMN) == (
        "swift_ext_messages", "swift_ext_sample", "swift_ext_row")
    pytest.importorskip("swift.template", reason="ms-swift is not importable here; template.py needs it")
    from swift_ext.ms_swift import state, template, truncation, vision

    assert template.ParitySampleDropped is truncation.ParitySampleDropped
    assert template.TextOnlyVisionMixin is vision.TextOnlyVisionMixin
    assert template.active_training_template is state.active_training_template
    assert (template.SAMPLE_COLUMN, template.ROW_COLUMN) == (ms.SAMPLE_COLUMN, ms.ROW_COLUMN)
