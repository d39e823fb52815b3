"""``swift-ext audit`` never loses a row or the run: every failed row listed, BOM / invalid UTF-8 / deep nesting /
worker deaths / signals each accounted for, and a 20,000-row file with injected faults accounted for line by line.

Expected outcomes come from how each line was written here (the fault injected), never from the audit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .cli_helpers import REPO_ROOT

HI = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
WIZARD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Abracadabra."}]}
ASSISTANT_FIRST = {"messages": [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Hi"}]}
DEEP_LINE = b"[" * 100_000 + b"]" * 100_000
KILL_HOOK = "_SWIFT_EXT_TEST_KILL_LINE"


def line_of(row: Any) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8")


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def deep_arguments(depth: int) -> dict[str, Any]:
    args: dict[str, Any] = {}
    cur = args
    for _ in range(depth):
        cur["a"] = {}
        cur = cur["a"]
    return {"messages": [
        {"role": "user", "content": "Call f."},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f",
                                                                                             "arguments": args}}]},
        {"role": "tool", "content": "ok"}, {"role": "assistant", "content": "Done."}]}


def audit(cli, tmp_path: Path, data: Path, *args: Any) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Exit code and output, the --json summary, and the --failures rows."""
    n = len(list(tmp_path.glob("summary-*")))
    summary, failures = tmp_path / f"summary-{n}.json", tmp_path / f"failures-{n}.jsonl"
    result = cli("audit", "fixture:qwen3", data, "--no-progress", "--json", summary, "--failures", failures, *args)
    failed = [json.loads(line) for line in failures.read_text(encoding="utf-8").splitlines()]
    return result, json.loads(summary.read_text(encoding="utf-8")), failed


def failed_lines(failed: list[dict[str, Any]]) -> dict[int, str]:
    lines = [f["line"] for f in failed]
    assert len(lines) == len(set(lines)), "a failed line is listed twice"
    return {f["line"]: f["rule"] for f in failed}


# ------------------------------------------------------------------ every failed row listed
def test_every_failed_row_is_listed(cli, tmp_path: Path) -> None:
    lines = [line_of(HI), b"{not json", line_of(WIZARD), b"{still not json", line_of(HI), line_of(WIZARD), b"",
             line_of(ASSISTANT_FIRST), line_of(WIZARD)]
    data = write_lines(tmp_path / "data.jsonl", lines)
    expected = {2: "input-bad-json", 3: "input-unknown-role", 4: "input-bad-json", 6: "input-unknown-role",
                8: "input-assistant-first", 9: "input-unknown-role"}
    for workers in ("1", "2"):
        result, summary, failed = audit(cli, tmp_path, data, "--workers", workers)
        assert result.code == 1
        assert failed_lines(failed) == expected
        assert failed == summary["failed_rows"]  # the same list, in dataset order
        assert [f["row"] for f in failed] == [1, 2, 3, 5, 6, 7]  # row indices skip the blank line 7
        assert all(f["message"].startswith(f"[{f['rule']}]") for f in failed)
        assert summary["rows"] == 8 and summary["blank_lines"] == 1
        assert summary["failures"]["input-unknown-role"]["count"] == 3


# ------------------------------------------------------------------ encodings
def test_utf8_bom_is_accepted(cli, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + line_of(HI), line_of(HI)])
    result, summary, failed = audit(cli, tmp_path, data, "--workers", "1")
    assert result.code == 0 and not failed
    assert summary["rows"] == summary["rows_ok"] == 2


def test_invalid_utf8_is_a_failed_row(cli, tmp_path: Path) -> None:
    broken = line_of(HI).replace(b"Hello", b"Hel\xfflo")
    data = write_lines(tmp_path / "latin.jsonl", [line_of(HI), broken, line_of(HI)])
    result, summary, failed = audit(cli, tmp_path, data, "--workers", "1")
    assert result.code == 1
    byte = broken.index(b"\xff")
    assert failed == [{"row": 1, "line": 2, "rule": "input-invalid-utf8",
                       "message": f"[input-invalid-utf8] line 2: invalid UTF-8 at byte {byte} of the line"}]
    assert summary["rows_ok"] == 2


# ------------------------------------------------------------------ nesting
def test_deep_json_line_is_a_failed_row(cli, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "deep.jsonl", [line_of(HI), DEEP_LINE, line_of(HI)])
    for workers in ("1", "2"):
        result, summary, failed = audit(cli, tmp_path, data, "--workers", workers)
        assert result.code == 1
        assert failed == [{"row": 1, "line": 2, "rule": "input-too-deep",
                           "message": "[input-too-deep] line 2: the row is nested deeper than Python's JSON reader "
                                      "can follow"}]
        assert summary["rows"] == 3 and summary["rows_ok"] == 2


def test_deep_tool_arguments_same_serial_and_parallel(cli, tmp_path: Path) -> None:
    """900-deep arguments are one failed row (the core refuses arguments nested past 64 levels), in one process and
    with two workers alike: rows go to workers as text, so nothing deep is pickled."""
    data = write_lines(tmp_path / "args.jsonl", [line_of(HI), line_of(deep_arguments(900)), line_of(HI)])
    _, serial, serial_failed = audit(cli, tmp_path, data, "--workers", "1")
    result, parallel, failed = audit(cli, tmp_path, data, "--workers", "2")
    assert result.code == 1
    assert [(f["row"], f["line"], f["rule"]) for f in failed] == [(1, 2, "input-bad-arguments")]
    assert [(f["row"], f["rule"]) for f in serial_failed] == [(1, "input-bad-arguments")]
    for key in ("rows", "rows_ok", "samples", "emitted_tokens", "trained_tokens"):
        assert parallel[key] == serial[key], key
    assert serial["rows_ok"] == 2


# ------------------------------------------------------------------ dead workers
def test_row_that_kills_its_worker_is_counted(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker SIGKILLs itself on line 150, first try and retry: only that row fails, every other row is encoded."""
    data = write_lines(tmp_path / "data.jsonl", [line_of(HI)] * 400)
    monkeypatch.setenv(KILL_HOOK, "150")
    result, summary, failed = audit(cli, tmp_path, data, "--workers", "2")
    assert result.code == 1
    assert [(f["row"], f["line"], f["rule"]) for f in failed] == [(149, 150, "audit-worker-died")]
    assert summary["rows"] == 400 and summary["rows_ok"] == 399 and summary["worker_restarts"] >= 2
    assert result.out.splitlines()[0] == f"swift-ext audit · Qwen__Qwen3-8B · {data}"


def children(pid: int) -> set[int]:
    """Child processes of ``pid``, from /proc (Linux)."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found.update(int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:
            pass
    return found


def running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def start_audit(data: Path, out: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    env.pop("SWIFT_EXT_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "swift_ext.cli", "audit", "fixture:qwen3", str(data), "--workers",
                             "2", "--no-progress", "--json", str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for_workers(process: subprocess.Popen, count: int = 2, timeout: float = 120) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        workers = children(process.pid)
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    raise AssertionError("the audit started no workers")


@pytest.fixture(scope="module")
def long_data(tmp_path_factory) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Answer {i}."}]} for i in range(12_000)]
    return write_lines(tmp_path_factory.mktemp("long") / "long.jsonl", [line_of(r) for r in rows])


def test_worker_killed_from_outside_loses_nothing(long_data: Path, tmp_path: Path) -> None:
    process = start_audit(long_data, tmp_path / "summary.json")
    workers = wait_for_workers(process)
    time.sleep(0.5)
    os.kill(min(workers), signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"] == summary["rows_ok"] == 12_000  # the killed worker's rows were retried
    assert summary["worker_restarts"] >= 1 and summary["interrupted"] is None
    assert out.splitlines()[0] == f"swift-ext audit · Qwen__Qwen3-8B · {long_data}"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_workers_and_prints_partial_summary(long_data: Path, tmp_path: Path, sig: int, code: int) -> None:
    process = start_audit(long_data, tmp_path / "summary.json")
    workers = wait_for_workers(process)
    time.sleep(0.5)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    name = signal.Signals(sig).name
    assert summary["interrupted"] == name and 0 < summary["rows"] < 12_000
    assert out.splitlines()[0] == (f"interrupted by {name} after {summary['rows']:,} of 12,000 rows: the summary "
                                   "covers the rows finished")
    assert summary["rows_ok"] + summary["rows_failed"] == summary["rows"]
    deadline = time.monotonic() + 5
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if running(pid)], "a worker outlived the audit"
    orphans = [p for p in os.listdir("/proc") if p.isdigit() and running(int(p))
               and f"\nPPid:\t{process.pid}\n" in Path(f"/proc/{p}/status").read_text(errors="replace")]
    assert not orphans


# ------------------------------------------------------------------ accounting on 20,000 rows
def test_accounting_on_20000_rows_with_faults(cli, tmp_path: Path) -> None:
    """Every line written is a row that passed, a failed row listed once with the fault injected there, or blank."""
    lines: list[bytes] = []
    expected: dict[int, str] = {}
    blank = 0
    faults = [
        (b"", None),
        (b"{not json", "input-bad-json"),
        (line_of(HI).replace(b"Hello", b"Hel\xfflo"), "input-invalid-utf8"),
        (DEEP_LINE, "input-too-deep"),
        (line_of(WIZARD), "input-unknown-role"),
        (line_of(ASSISTANT_FIRST), "input-assistant-first"),
        (line_of({"text_only": "no conversation"}), "input-missing-messages"),
        (b"   \t", None),
    ]
    for k in range(20_000):
        number = k + 1
        if k == 0:
            lines.append(b"\xef\xbb\xbf" + line_of(HI))  # BOM: a valid first row
        elif k % 97 == 0:
            fault, rule = faults[(k // 97) % len(faults)]
            if fault == DEEP_LINE and sum(r == "input-too-deep" for r in expected.values()) >= 5:
                fault, rule = b"{not json", "input-bad-json"  # five 200 kB lines are enough
            lines.append(fault)
            if rule is None:
                blank += 1
            else:
                expected[number] = rule
        else:
            lines.append(line_of({"messages": [{"role": "user", "content": f"Q{k}"},
                                               {"role": "assistant", "content": f"A{k}."}]}))
    data = write_lines(tmp_path / "faults.jsonl", lines)
    result, summary, failed = audit(cli, tmp_path, data, "--workers", "2")
    assert result.code == 1
    assert summary["rows"] == 20_000 - blank and summary["blank_lines"] == blank
    assert summary["rows_ok"] + summary["rows_failed"] == summary["rows"]
    assert failed_lines(failed) == expected
    assert summary["rows_failed"] == len(expected) and summary["interrupted"] is None
    assert {rule for rule in expected.values()} == {f[1] for f in faults if f[1]}
