"""``swift-ext audit --engine ray``: the same report as the process pool, on a local 2-worker Ray.

The reference is the pool engine's own output on the same file (its numbers are checked against the core in
``test_cli_audit.py``): the ``--json`` report must be identical byte for byte apart from the three timings, and
``--failures`` / ``--write-clean`` identical byte for byte. The file mixes good rows in several formats with every
kind of failing row (not JSON, not UTF-8, no conversation, an unknown role, reasoning a template refuses), a
byte-order mark and blank lines, and is long enough to be cut into several read ranges.

Ray is an optional extra (``pip install "swift-ext[ray]"``): where it is not installed the tests that run Ray skip,
saying so, unless ``SWIFT_EXT_REQUIRE_RAY=1`` (CI sets it), which makes a missing Ray a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from swift_ext.diagnostics.ray_engine import plan_line_ranges, read_line_range
from swift_ext.diagnostics.rows import iter_raw

from .cli_helpers import example_conversation

TIMINGS = ("seconds", "rows_per_second", "tokens_per_second")
HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"}]


def require_ray() -> None:
    if importlib.util.find_spec("ray") is not None:
        return
    reason = 'Ray is not installed (optional extra: pip install "swift-ext[ray]")'
    if os.environ.get("SWIFT_EXT_REQUIRE_RAY") == "1":
        pytest.fail(f"{reason}, and SWIFT_EXT_REQUIRE_RAY=1 requires it")
    pytest.skip(reason)


def mixed_rows(n: int) -> list[bytes]:
    """``n`` lines of good and failing rows (as bytes, so one can be invalid UTF-8)."""
    example = example_conversation()
    forms: list[Any] = [
        {"messages": example["messages"], "tools": example["tools"]},
        {"messages": HI},
        {"query": "And 2+2?", "response": "4.", "history": [["Hi", "Hello!"]], "system": "Be brief."},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey there."}]},
        b"{this is not json",
        {"note": "no conversation here"},
        b"",  # a blank line: not a row
        {"messages": [HI[0], {**HI[1], "loss": False}]},
        {"messages": [HI[0], {"role": "wizard", "content": "Abracadabra."}]},
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # latin-1, not UTF-8
        {"messages": [{"role": "user", "content": "Q"},
                      {"role": "assistant", "content": "A", "reasoning_content": "R"}]},
        b"   \t",  # whitespace only: blank
    ]
    lines = []
    for i in range(n):
        form = forms[i % len(forms)]
        if isinstance(form, dict):
            form = {**form, "id": i}  # rows differ, so a row read twice or out of place would show
            lines.append(json.dumps(form, ensure_ascii=False).encode("utf-8"))
        else:
            lines.append(form)
    return lines


def write_lines(path: Path, lines: list[bytes], *, bom: bool = True, final_newline: bool = False) -> Path:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


@pytest.mark.parametrize("final_newline", [True, False])
@pytest.mark.parametrize("target", [1, 97, 4096])
def test_line_ranges_cut_the_rows_iter_raw_cuts(tmp_path: Path, target: int, final_newline: bool) -> None:
    """The ray read tasks, range by range, give exactly the pool's rows: same bytes, line numbers, row indices
    (no Ray needed: this is the reading the datasource runs)."""
    path = write_lines(tmp_path / "data.jsonl", mixed_rows(60) + [b"", b""] + mixed_rows(7),
                       final_newline=final_newline)
    counts: Counter = Counter()
    expected = list(iter_raw(path, counts))
    ranges, blank = plan_line_ranges(str(path), target)
    got = [raw for part in ranges for raw in read_line_range(part)]
    assert got == expected
    assert blank == counts["blank_lines"] > 0
    assert (len(ranges) > 10) == (target < 4096)


def _audit(cli, tmp_path: Path, data: Path, engine: str, *extra: str) -> tuple[Any, dict[str, Path]]:
    out = {name: tmp_path / f"{engine}.{name}" for name in ("json", "failures", "clean")}
    result = cli("audit", "fixture:qwen3", data, "--workers", "2", "--engine", engine, "--no-progress",
                 "--json", out["json"], "--failures", out["failures"], "--write-clean", out["clean"], *extra)
    return result, out


def _without_timings(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in TIMINGS:
        assert data.pop(key) > 0, key
    return json.dumps(data, indent=2, ensure_ascii=False)


def test_ray_report_equals_the_pool_report(cli, tmp_path: Path) -> None:
    require_ray()
    data = write_lines(tmp_path / "data.jsonl", mixed_rows(300))
    pool, pool_out = _audit(cli, tmp_path, data, "pool", "--max-length", "128")
    ray, ray_out = _audit(cli, tmp_path, data, "ray", "--max-length", "128")
    assert pool.code == ray.code == 1, (pool, ray)  # rows failed
    assert _without_timings(ray_out["json"]) == _without_timings(pool_out["json"])
    for name in ("failures", "clean"):
        assert ray_out[name].read_bytes() == pool_out[name].read_bytes(), name
    report = json.loads(ray_out["json"].read_text(encoding="utf-8"))
    rules = {row["rule"] for row in report["failed_rows"]}
    assert {"input-bad-json", "input-invalid-utf8", "input-missing-messages", "input-unknown-role"} <= rules
    assert report["rows_ok"] > 100 and report["blank_lines"] == 50 and report["rows_truncated"] > 0
    assert "input-invalid-utf8" in ray.out  # the terminal report too


def test_ray_reads_parquet_like_the_pool(cli, tmp_path: Path) -> None:
    require_ray()
    import pyarrow as pa
    import pyarrow.parquet as pq

    example = example_conversation()
    rows = [{"messages": HI}, {"messages": example["messages"]}, {"messages": [HI[0], {"role": "wizard",
                                                                                        "content": "x"}]}] * 20
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet", row_group_size=7)  # 9 row groups
    pool, pool_out = _audit(cli, tmp_path, tmp_path / "data.parquet", "pool")
    ray, ray_out = _audit(cli, tmp_path, tmp_path / "data.parquet", "ray")
    assert pool.code == ray.code == 1
    assert _without_timings(ray_out["json"]) == _without_timings(pool_out["json"])
    for name in ("failures", "clean"):
        assert ray_out[name].read_bytes() == pool_out[name].read_bytes(), name
    assert json.loads(ray_out["json"].read_text())["rows_failed"] == 20


def test_missing_ray_is_one_line_with_the_install_command(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    data = write_lines(tmp_path / "data.jsonl", mixed_rows(3))
    result = cli("audit", "fixture:qwen3", data, "--engine", "ray", "--no-progress")
    assert result.code == 2
    assert result.err.strip().count("\n") == 0
    assert 'pip install "swift-ext[ray]"' in result.err


def test_ray_options_need_the_ray_engine_and_a_readable_format(cli, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "data.jsonl", mixed_rows(3))
    result = cli("audit", "fixture:qwen3", data, "--ray-address", "auto", "--no-progress")
    assert result.code == 2 and "--ray-address needs --engine ray" in result.err
    require_ray()
    array = tmp_path / "data.json"
    array.write_text(json.dumps([{"messages": HI}]), encoding="utf-8")
    result = cli("audit", "fixture:qwen3", array, "--engine", "ray", "--no-progress")
    assert result.code == 2 and "JSON array" in result.err and "--engine pool" in result.err


def test_a_worker_that_dies_stops_the_pass_with_an_error(tmp_path: Path) -> None:
    """A Ray worker killed on a row (the pool's test hook) ends the command with exit 2 and Ray's error in one
    line, in bounded time: Ray Data's default (restart the actor, retry the batch, forever) would loop."""
    require_ray()
    data = write_lines(tmp_path / "data.jsonl", mixed_rows(40))
    env = {**os.environ, "_SWIFT_EXT_TEST_KILL_LINE": "6", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from swift_ext.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "audit", "fixture:qwen3", str(data), "--engine", "ray",
                           "--workers", "2", "--no-progress"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("swift-ext audit: the Ray pipeline failed after "), last


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (Ray's raylet, GCS and workers are), with its command line."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "0")
            parents[int(entry)] = int(ppid)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_sigterm_stops_ray_and_prints_the_partial_summary(tmp_path: Path) -> None:
    """SIGTERM during a Ray pass: the summary of the rows finished, exit 143, and the local Ray (raylet, GCS,
    encoder actors) gone with the command (ray.init installs a SIGTERM handler of its own that would kill the
    driver without a summary)."""
    require_ray()
    # far more rows than a fast machine encodes before the signal: a pass that ended first would leave the
    # default SIGTERM handler in place (exit -15), which is not what this test is about
    total = 60_000
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Answer {i}."}]} for i in range(total)]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")]), "COLUMNS": "200"}
    env.pop("SWIFT_EXT_DEBUG", None)
    process = subprocess.Popen([sys.executable, "-m", "swift_ext.cli", "audit", "fixture:qwen3", str(data),
                                "--engine", "ray", "--workers", "2", "--no-progress", "--json",
                                str(tmp_path / "summary.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    deadline = time.monotonic() + 300
    ray_processes: dict[int, str] = {}
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        ray_processes = _descendants(process.pid)
        if sum("MapWorker" in cmd for cmd in ray_processes.values()) >= 2:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the ray audit started no encoder actors")
    time.sleep(5)  # the actors load the tokenizer, then encode (how many rows by now depends on the machine)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] == "SIGTERM" and summary["rows"] < total
    assert summary["rows_ok"] + summary["rows_failed"] == summary["rows"]
    assert out.splitlines()[0].startswith(f"interrupted by SIGTERM after {summary['rows']:,} of {total:,} rows")
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in ray_processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not {pid: cmd for pid, cmd in ray_processes.items() if _alive(pid)}, "a Ray process outlived the audit"
