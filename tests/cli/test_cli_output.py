"""What the commands print: rule ids and user text never eaten by Rich markup, the core's advice in flag spelling,
trained tokens visible without colour, ``families`` at 80 columns, ``encode`` on every fixture, ``plugin-path``."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

import swift_ext
from swift_ext.commands.families import families_table
from swift_ext.dev import fixtures
from swift_ext.diagnostics.options import CLI_SPELLING, cli_advice

from .cli_helpers import REPO_ROOT, example_conversation, load_tokenizer, write_jsonl

REASONING_ROW = {"messages": [{"role": "user", "content": "Q"},
                              {"role": "assistant", "content": "A", "reasoning_content": "R"}]}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def labelled_runs(sample: swift_ext.Sample) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of labelled positions."""
    runs: list[tuple[int, int]] = []
    for k, label in enumerate(sample.labels):
        if label == swift_ext.IGNORE_INDEX:
            continue
        if runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    return runs


# ------------------------------------------------------------------ rule ids and brackets survive Rich
def test_rule_id_survives_printing(cli, tmp_path: Path) -> None:
    result = cli("encode", "fixture:llama3", write_json(tmp_path / "chat.json", REASONING_ROW))
    assert result.code == 1
    assert result.out.splitlines()[0] == (
        "cannot train this conversation exactly: [reasoning-dropped] message 1: the turn carries reasoning ('R'...) "
        "that the template does not render, and the 'llama3' family gives no format for it; training without it "
        "would be silent. Pass --reasoning-policy drop to drop it (counted)")


def test_user_brackets_are_printed_as_written(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    markup = "[bold]not bold[/bold] [red]x[/] [link=http://a]b[/link]"
    row = {"messages": [{"role": "user", "content": markup},
                        {"role": "assistant", "content": markup, "reasoning_content": markup}]}
    refused = cli("encode", "fixture:llama3", write_json(tmp_path / "chat.json", row))
    assert refused.code == 1
    assert refused.out.splitlines()[0] == (
        "cannot train this conversation exactly: [reasoning-dropped] message 1: the turn carries reasoning "
        "('[bold]not bold[/bold] [red]x[/] [link=ht'...) that the template does not render, and the 'llama3' family "
        "gives no format for it; training without it would be silent. Pass --reasoning-policy drop to drop it "
        "(counted)")
    encoded = cli("encode", "fixture:qwen3", tmp_path / "chat.json")
    assert encoded.code == 0 and encoded.out.count(markup) == 3  # user, reasoning, answer
    data = write_jsonl(tmp_path / "rows [bold]x[red].jsonl", [row])
    inspected = cli("inspect", "fixture:qwen3", data, "--no-ids")
    assert inspected.code == 0 and f"user: {markup}" in inspected.out
    audited = cli("audit", "fixture:llama3", data, "--workers", "1", "--no-progress")
    assert audited.code == 1
    assert audited.out.splitlines()[0] == f"swift-ext audit · meta-llama__Llama-3.1-8B-Instruct · {data}"


# ------------------------------------------------------------------ advice in flag spelling
def test_encode_advises_flags(cli, tmp_path: Path) -> None:
    result = cli("encode", "fixture:gemma4", write_json(tmp_path / "chat.json", REASONING_ROW),
                 "--kwargs", '{"enable_thinking": false}')
    assert result.code == 1
    assert result.out.splitlines()[0] == (
        "cannot train this conversation exactly: [reasoning-thinking-off] message 1: the turn carries reasoning "
        "('R'...) but thinking is off (--kwargs '{\"enable_thinking\": false}'): a model in non-thinking mode does "
        "not generate it. Turn thinking on, remove the reasoning, or pass --reasoning-policy drop")


def test_inspect_and_audit_advise_flags(cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [REASONING_ROW])
    inspected = cli("inspect", "fixture:llama3", data)
    assert inspected.code == 1
    assert inspected.err.splitlines()[0] == (
        "swift-ext inspect: row 0 (line 1): [reasoning-dropped] conversation 0, message 1: the turn carries "
        "reasoning ('R'...) that the template does not render, and the 'llama3' family gives no format for it; "
        "training without it would be silent. Pass --reasoning-policy drop to drop it (counted)")
    failures = tmp_path / "failures.jsonl"
    audited = cli("audit", "fixture:llama3", data, "--workers", "1", "--failures", failures, "--no-progress")
    assert audited.code == 1
    [failed] = [json.loads(line) for line in failures.read_text(encoding="utf-8").splitlines()]
    assert failed["message"].endswith("Pass --reasoning-policy drop to drop it (counted)")
    keep = cli("inspect", "fixture:llama3", write_jsonl(tmp_path / "hi.jsonl", [{"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]), "--history-reasoning", "keep")
    assert keep.code == 1
    assert "--history-reasoning keep needs a template switch" in keep.err
    assert "use --history-reasoning template (" in keep.err


ADVICE = re.compile(r"\b([A-Za-z_]\w*)=('[^']*'|\"[^\"]*\"|\[[^\]]*\]|\{[^}]*\}|\.\.\.|True|False|None)")
"""A keyword spelling in a message: ``reasoning_policy='drop'``, ``stop_strings=[...]``, ``family=...``."""


def core_messages() -> list[tuple[str, int, str]]:
    """Every string literal of the core's modules (``swift_ext/*.py`` and the template sandbox behind ``render``) but
    docstrings, f-strings with ``{}`` in place of their fields filled by ``enable_thinking`` (a chat-template switch,
    the only field an advice names)."""
    found = []
    core = [*(REPO_ROOT / "swift_ext").glob("*.py"), *(REPO_ROOT / "swift_ext" / "sandbox").glob("*.py")]
    for path in sorted(core):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = set()
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                skip.add(id(body[0].value))
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                parts = [v.value if isinstance(v, ast.Constant) else "enable_thinking" for v in node.values]
                found.append((path.name, node.lineno, "".join(parts)))
                skip.update(id(v) for v in node.values)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                found.append((path.name, node.lineno, node.value))
    return found


def test_every_core_advice_has_a_flag_spelling() -> None:
    """New keyword advice in the core cannot reach a command-line user untranslated."""
    advice = [(name, line, text) for name, line, text in core_messages() if ADVICE.search(text)]
    spellings = {m.group(0) for _, _, text in advice for m in ADVICE.finditer(text)}
    assert {"reasoning_policy='drop'", "history_reasoning='keep'", "stop_strings=[...]", "family=...",
            "strict=False", "chat_template=...", "enable_thinking=False"} <= spellings  # the scan sees them
    for name, line, text in advice:
        translated = cli_advice(text)
        assert not ADVICE.search(translated), f"swift_ext/{name}:{line}: no flag spelling for {text!r}"


@pytest.mark.parametrize("core, cli_text", [
    ("pass reasoning_policy='drop'", "pass --reasoning-policy drop"),
    ("history_reasoning='keep' needs", "--history-reasoning keep needs"),
    ("pass stop_strings=[...] with", "pass --stop-strings STRING ... with"),
    ("pass family=... or strict=False to use", "pass --family NAME or no --family to use"),
    ("thinking is off (enable_thinking=False)", "thinking is off (--kwargs '{\"enable_thinking\": false}')"),
    ("pass the engine's chat_template_kwargs", "pass the engine's --kwargs"),
])
def test_flag_spelling(core: str, cli_text: str) -> None:
    assert cli_advice(core) == cli_text
    assert len(CLI_SPELLING) >= 8


# ------------------------------------------------------------------ trained tokens without colour
def _encode_in_subprocess(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100000", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "swift_ext.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_trained_tokens_marked_without_colour(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped (not a terminal) and with NO_COLOR=1: the text between each ⟦ ⟧ is exactly a run of labelled tokens."""
    conversation = example_conversation()
    tokenizer = load_tokenizer("qwen3")
    samples = swift_ext.encode(tokenizer, conversation["messages"], conversation["tools"])
    expected = [tokenizer.decode(s.input_ids[a:b]) for s in samples for a, b in labelled_runs(s)]
    monkeypatch.setenv("COLUMNS", "100000")
    piped = cli("encode", "fixture:qwen3")
    no_colour = _encode_in_subprocess("encode", "fixture:qwen3")
    for out in (piped.out, no_colour.stdout):
        assert "\x1b[" not in out  # no colour at all
        assert re.findall("⟦(.*?)⟧", out[out.index("sample 0:"):], re.S) == expected  # after the legend
    assert no_colour.returncode == piped.code == 0


def test_inspect_marks_trained_tokens_without_colour(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conversation = example_conversation()
    data = write_jsonl(tmp_path / "data.jsonl", [conversation])
    samples = swift_ext.encode(load_tokenizer("qwen3"), conversation["messages"], conversation["tools"])
    monkeypatch.setenv("COLUMNS", "100000")
    monkeypatch.setenv("NO_COLOR", "1")
    result = cli("inspect", "fixture:qwen3", data, "--no-ids")
    assert result.code == 0 and "\x1b[" not in result.out
    runs = sum(len(labelled_runs(s)) for s in samples)
    # every run of every sample, then the compared turn once on each side; the legend shows the pair once
    assert result.out.count("⟦") == result.out.count("⟧") == runs + 2 + 1
    tokenizer = load_tokenizer("qwen3")
    expected = [tokenizer.decode(s.input_ids[a:b]) for s in samples for a, b in labelled_runs(s)]
    legend, *spans = re.findall("⟦(.*?)⟧", result.out, re.S)

    def flat(text: str) -> str:  # a sample's tokens sit in a panel: borders and padding between its lines
        return re.sub(r"[\s│]", "", text)

    assert legend == "…"  # inspect draws a newline as ↵ before breaking the line
    assert [flat(span) for span in spans[:runs]] == [flat(text.replace("\n", "↵")) for text in expected]


# ------------------------------------------------------------------ families at 80 columns
def test_families_fit_80_columns() -> None:
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(families_table())
    lines = out.getvalue().splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    for family in swift_ext.list_families():
        assert any(re.search(rf"│ {family.name} +│ {family.parity_template} +│", line) for line in lines), family.name


def test_families_command_first_line(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("families")
    assert result.code == 0
    assert result.out.splitlines()[0] == " " * 23 + "model families (templates/*.toml)" + " " * 24


# ------------------------------------------------------------------ the shipped example on every fixture
@pytest.mark.parametrize("name", sorted(fixtures.FIXTURES))
def test_encode_shipped_example(cli, name: str) -> None:
    result = cli("encode", f"fixture:{name}")
    assert result.code == 0, result.out[-2000:]
    assert result.out.splitlines()[-1] == ("verified: every trained turn's prompt equals apply_chat_template's "
                                           "generation prompt token for token; labels are exactly the generated "
                                           "tokens.")


def test_encode_example_says_what_it_left_out(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100000")
    full = cli("encode", "fixture:qwen3")
    assert full.out.splitlines()[0].startswith("family: qwen3 (")
    assert "I should call the weather tool." in full.out and "get_weather" in full.out
    llama = cli("encode", "fixture:llama3")
    assert llama.code == 0
    assert llama.out.splitlines()[0] == ("example: shown without its reasoning, which the llama3 template cannot "
                                         "train exactly ([reasoning-dropped]); pass a conversation file to encode "
                                         "your own")
    assert "I should call the weather tool." not in llama.out and "get_weather" in llama.out
    gemma = cli("encode", "fixture:gemma4")
    assert gemma.out.splitlines()[0] == ("example: thinking on (--kwargs '{\"enable_thinking\": true}'), the gemma4 "
                                         "template's default being off; pass a conversation file to encode your own")
    assert "I should call the weather tool." in gemma.out
    gemma3 = cli("encode", "fixture:gemma3")
    assert gemma3.out.splitlines()[0] == (
        "example: shown without its reasoning and tool calls, which the gemma3 template cannot train exactly "
        "([reasoning-dropped], [template-drops-tool-calls]); pass a conversation file to encode your own")
    assert "get_weather" not in gemma3.out and "It is 21°C and clear in Paris." in gemma3.out


# ------------------------------------------------------------------ plugin-path and the YAML placeholder
def test_plugin_path_is_the_yaml_placeholder(cli) -> None:
    result = cli("plugin-path")
    printed = result.out.splitlines()
    assert result.code == 0 and len(printed) == 1
    assert printed[0] == str(Path(swift_ext.__file__).resolve().parent / "plugin.py") and Path(printed[0]).is_file()
    for doc in ("README.md", "docs/ms_swift.md"):
        text = (REPO_ROOT / doc).read_text(encoding="utf-8")
        entries = re.findall(r"^external_plugins:\n  - (\S+)", text, re.M)
        assert entries == ["/path/printed/by/swift-ext/plugin-path"], doc  # the printed path, nothing appended
