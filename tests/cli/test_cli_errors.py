"""Every command turns a user error into one line on stderr and exit 2, never a traceback.

Each test pins the exit code and the exact first (and only) line a user reads.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from swift_ext.cli import main

from .cli_helpers import REPO_ROOT, write_jsonl

HI = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", [HI])


def one_line(result) -> str:
    """The only line of stderr (the test fails if there are more, or any stdout)."""
    lines = result.err.splitlines()
    assert len(lines) == 1 and not result.out, result.err
    return lines[0]


# ------------------------------------------------------------------ missing inputs
def test_audit_missing_data_file(cli, tmp_path: Path) -> None:
    result = cli("audit", "fixture:qwen3", tmp_path / "missing.jsonl")
    assert result.code == 2
    assert one_line(result) == f"swift-ext audit: {tmp_path / 'missing.jsonl'} does not exist"


def test_inspect_missing_data_file(cli, tmp_path: Path) -> None:
    result = cli("inspect", "fixture:qwen3", tmp_path / "missing.jsonl")
    assert result.code == 2
    assert one_line(result) == f"swift-ext inspect: {tmp_path / 'missing.jsonl'} does not exist"


def test_audit_directory_that_is_not_a_dataset(cli, tmp_path: Path) -> None:
    folder = tmp_path / "not-a-dataset"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello", encoding="utf-8")
    result = cli("audit", "fixture:qwen3", folder)
    assert result.code == 2
    assert one_line(result) == (
        f"swift-ext audit: {folder} is a folder but not a dataset (expected a .jsonl / .json / .parquet file, or a "
        "folder written by datasets' save_to_disk, with dataset_info.json or dataset_dict.json)")


def test_inspect_directory_that_is_not_a_dataset(cli, tmp_path: Path) -> None:
    result = cli("inspect", "fixture:qwen3", tmp_path)
    assert result.code == 2
    assert one_line(result).startswith(f"swift-ext inspect: {tmp_path} is a folder but not a dataset (")


def test_encode_missing_conversation_file(cli, tmp_path: Path) -> None:
    result = cli("encode", "fixture:qwen3", tmp_path / "chat.json")
    assert result.code == 2
    assert one_line(result) == (f"swift-ext encode: {tmp_path / 'chat.json'} does not exist (expected a JSON file "
                                "with {messages, tools?})")


def test_encode_conversation_file_not_json(cli, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text('{"messages": [', encoding="utf-8")
    result = cli("encode", "fixture:qwen3", path)
    assert result.code == 2
    assert one_line(result) == f"swift-ext encode: {path} is not JSON: Expecting value at line 1 column 15"


def test_encode_conversation_without_messages(cli, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text('{"text": "hello"}', encoding="utf-8")
    result = cli("encode", "fixture:qwen3", path)
    assert result.code == 2
    assert one_line(result) == (f'swift-ext encode: {path} must hold {{"messages": [...], "tools": [...]}} or a list '
                                "of messages")


def test_unknown_model(cli, data: Path) -> None:
    result = cli("audit", "fixture:no-such-model", data)
    assert result.code == 2
    assert one_line(result).startswith("swift-ext audit: [source-not-found] no fixture named 'no-such-model'; "
                                       "fixture names: deepseek_r1, ")


# ------------------------------------------------------------------ flags (argparse: one line, exit 2)
@pytest.mark.parametrize("command", ["audit", "inspect", "encode"])
def test_bad_json_in_kwargs(capsys, data: Path, command: str) -> None:
    args = [command, "fixture:qwen3"] + ([str(data)] if command != "encode" else []) + ["--kwargs", "{bad"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"swift-ext {command}: error: argument --chat-template-kwargs/--kwargs: not JSON (Expecting property name "
        f"enclosed in double quotes at column 2): '{{bad' (see swift-ext {command} --help)"]


@pytest.mark.parametrize("argv, line", [
    (["--kwargs", "{bad"], "swift-ext audit: error: argument --chat-template-kwargs/--kwargs: not JSON (Expecting "
                           "property name enclosed in double quotes at column 2): '{bad' (see swift-ext audit --help)"),
    (["--kwargs", "[1]"], "swift-ext audit: error: argument --chat-template-kwargs/--kwargs: must be a JSON object "
                          "such as '{\"enable_thinking\": false}', got '[1]' (see swift-ext audit --help)"),
    (["--max-length", "0"], "swift-ext audit: error: argument --max-length: must be a positive integer, got 0 "
                            "(see swift-ext audit --help)"),
    (["--max-length", "-5"], "swift-ext audit: error: argument --max-length: must be a positive integer, got -5 "
                             "(see swift-ext audit --help)"),
    (["--max-length", "ten"], "swift-ext audit: error: argument --max-length: must be a positive integer, got "
                              "'ten' (see swift-ext audit --help)"),
    (["--workers", "0"], "swift-ext audit: error: argument --workers: must be a positive integer, got 0 "
                         "(see swift-ext audit --help)"),
])
def test_audit_flag_errors(capsys, data: Path, argv: list[str], line: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "fixture:qwen3", str(data), *argv])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and not out
    assert err.splitlines() == [line]


def test_inspect_negative_row(capsys, data: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "fixture:qwen3", str(data), "--row", "-1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "swift-ext inspect: error: argument --row: must be an integer >= 0, got -1 (see swift-ext inspect --help)"]


# ------------------------------------------------------------------ LLaMA-Factory missing
def test_lf_without_llamafactory_says_how_to_install(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's environment may or may not have LLaMA-Factory: simulate the missing package either way."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llamafactory" else find_spec(name, *a))
    config = tmp_path / "train.yaml"
    config.write_text("stage: sft\n", encoding="utf-8")
    result = cli("lf", "train", config)
    assert result.code == 2
    install = ('pip install torch==2.13.0 && pip install -c constraints.txt -e ".[test,llamafactory]" '
               "&& pip uninstall -y torchvision torchaudio")
    assert one_line(result) == ("swift-ext lf: LLaMA-Factory is not installed in this environment (no module "
                                f"'llamafactory'); it needs an environment of its own, from a clone of swift-ext: "
                                f"{install}")
    readme = re.sub(r"\s+", " ", (REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert install in readme  # the README's LLaMA-Factory section says the same


# ------------------------------------------------------------------ the top-level guard
def _boom(*args, **kwargs):
    raise RuntimeError("boom: a bug no command expected\nsecond line of detail")


def test_unexpected_exception_is_one_line(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import swift_ext.commands.families as families

    monkeypatch.setattr(families, "families_table", _boom)
    monkeypatch.delenv("SWIFT_EXT_DEBUG")
    result = cli("families")
    assert result.code == 2
    assert one_line(result) == ("swift-ext families: unexpected RuntimeError: boom: a bug no command expected "
                                "(set SWIFT_EXT_DEBUG=1 to see the traceback)")


def test_debug_env_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import swift_ext.commands.families as families

    monkeypatch.setattr(families, "families_table", _boom)
    monkeypatch.setenv("SWIFT_EXT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["families"])


def test_deep_conversation_file_is_one_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = cli("encode", "fixture:qwen3", path)
    assert result.code == 2
    assert one_line(result) == f"swift-ext encode: {path} is nested deeper than Python's JSON reader can follow"


def test_kwargs_json_reaches_the_template(cli, tmp_path: Path) -> None:
    """The --kwargs value is parsed as JSON and used: thinking off in Qwen3 writes the empty think block."""
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(HI), encoding="utf-8")
    result = cli("encode", "fixture:qwen3", path, "--kwargs", '{"enable_thinking": false}', "--json")
    assert result.code == 0
    assert len(json.loads(result.out)) == 1


def test_unwritable_output_file_is_one_line(cli, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWIFT_EXT_DEBUG")
    target = tmp_path / "no-such-folder" / "summary.json"
    result = cli("audit", "fixture:qwen3", data, "--workers", "1", "--no-progress", "--json", target)
    assert result.code == 2
    assert result.err.splitlines() == [f"swift-ext audit: No such file or directory: {target}"]
