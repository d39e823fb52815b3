"""Throughput of ``swift-ext audit`` with the process pool and with Ray Data on the same 20,000-row file.

    python benchmarks/audit_engines.py [--rows 20000] [--workers 2] [--model fixture:qwen3_6] [--out DIR]

Writes a JSON-lines file of conversations like the ones OpenAI-compatible servers receive (the package's example:
tools, reasoning, a tool call and its result, two user queries; a greeting; a multi-turn chat with reasoning), one
in 50 rows failing (not JSON, or an unknown role), then runs the command a user runs, once per engine, as a
subprocess:

    swift-ext audit MODEL FILE --workers N --engine pool|ray --no-progress --allow-failures --json OUT

and prints each engine's wall time (process start to exit: Ray's start-up and the tokenizer loads included), the
``seconds`` and ``rows_per_second`` of its report, and checks that the two reports agree apart from timings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TIMINGS = ("seconds", "rows_per_second", "tokens_per_second")
EXAMPLE = Path(__file__).resolve().parents[1] / "swift_ext" / "data" / "example_conversation.json"


def rows(n: int) -> list[str]:
    example = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    lines = []
    for i in range(n):
        kind = i % 50
        if kind == 49:
            lines.append("{not json" if i % 100 == 49 else json.dumps(
                {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "wizard", "content": "x"}]}))
        elif kind % 3 == 0:
            lines.append(json.dumps({"messages": example["messages"], "tools": example["tools"], "id": i}))
        elif kind % 3 == 1:
            lines.append(json.dumps({"messages": [{"role": "user", "content": f"Hi #{i}"},
                                                  {"role": "assistant", "content": "Hello! How can I help?"}]}))
        else:
            turns = []
            for t in range(4):
                turns += [{"role": "user", "content": f"Question {t} of row {i}?"},
                          {"role": "assistant", "content": f"Answer {t}.", "reasoning_content": f"Think {t}."}]
            lines.append(json.dumps({"messages": turns}))
    return lines


def run(model: str, data: Path, engine: str, workers: int, out: Path) -> tuple[float, dict]:
    report = out / f"{engine}.json"
    command = ["swift-ext", "audit", model, str(data), "--workers", str(workers), "--engine", engine,
               "--no-progress", "--allow-failures", "--json", str(report)]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, json.loads(report.read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="fixture:qwen3_6")
    parser.add_argument("--out", type=Path, default=Path("/tmp/swift-ext-audit-engines"))
    parser.add_argument("--engines", nargs="+", default=["pool", "ray"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"rows{args.rows}.jsonl"
    data.write_text("\n".join(rows(args.rows)) + "\n", encoding="utf-8")
    print(f"{data}: {args.rows:,} rows, {data.stat().st_size / 1e6:.1f} MB; model {args.model}, "
          f"{args.workers} workers")
    reports = {}
    for engine in args.engines:
        wall, report = run(args.model, data, engine, args.workers, args.out)
        reports[engine] = report
        print(f"{engine:5s} wall {wall:7.1f} s · report {report['seconds']:7.1f} s · "
              f"{report['rows_per_second']:6.0f} rows/s · {report['tokens_per_second']:8.0f} tokens/s · "
              f"{args.rows / wall:6.0f} rows/s wall", flush=True)
    if len(reports) == 2:
        a, b = ({k: v for k, v in r.items() if k not in TIMINGS} for r in reports.values())
        print("reports equal apart from timings:", a == b)
        return 0 if a == b else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
