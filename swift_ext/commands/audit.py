"""``swift-ext audit MODEL DATA``: encode a whole dataset and summarise what training will see.

Parallel (``--workers``), with a progress bar on stderr, and a summary of
samples, token ratios, truncation, reasoning dropped and failed rows grouped by
error rule; ``--failures FILE`` lists every failed row and ``--write-clean FILE``
writes the rows that passed. Exit 1 when any row failed (unless
``--allow-failures``), 2 when the command could not run, 130 / 143 when SIGINT /
SIGTERM stopped it (the partial summary is printed, the workers are gone).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from ..diagnostics.auditing import AuditInterrupted, AuditSettings, AuditSummary, EngineError, run_audit
from ..diagnostics.options import (
    add_encode_arguments,
    add_model_arguments,
    cli_advice,
    options_from_args,
    positive_int,
)
from ..diagnostics.rows import DatasetError, check_dataset, count_rows, original_lines
from ..diagnostics.source import SourceError, load_source
from ..diagnostics.terminal import audit_renderables, print_all, print_error
from ..errors import ParityError
from ..families import resolve_family

EXIT_BY_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="encode a whole dataset and summarise it",
        description="Encode every row with swift_ext.encode (in parallel) and report rows, samples, the "
                    "emitted-token ratio, the trained-token share, truncation, reasoning dropped and failed rows "
                    "grouped by error rule.",
    )
    add_model_arguments(parser, metavar="MODEL_DIR")
    parser.add_argument("data", metavar="DATA", help="dataset file (.jsonl, .json, .parquet) or saved HF dataset")
    parser.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1),
                        help="worker processes (default: CPU count, at most 8; 1 = in this process)")
    parser.add_argument("--max-length", type=positive_int, metavar="L",
                        help="count samples longer than L as truncated")
    parser.add_argument("--json", metavar="FILE", help="write the summary as JSON (every failed row in failed_rows)")
    parser.add_argument("--failures", metavar="FILE",
                        help="write every failed row as JSON lines: {row, line, rule, message}")
    parser.add_argument("--write-clean", metavar="FILE",
                        help="write the rows that passed, as written in DATA, as JSON lines (train on this file)")
    parser.add_argument("--allow-failures", action="store_true", help="exit 0 even when rows failed")
    parser.add_argument("--verify", action="store_true", help="also run swift_ext.verify on every row (slower)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--engine", choices=("pool", "ray"), default="pool",
                        help="pool: worker processes on this machine (default); ray: Ray Data, --workers encoder "
                             "actors (needs pip install \"swift-ext[ray]\")")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="with --engine ray: join this Ray cluster (auto: the one `ray start` runs on this "
                             "machine; or its address); default: start a local Ray of its own")
    add_encode_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    settings = AuditSettings(options_from_args(args), args.max_length, args.verify)
    try:
        if args.ray_address and args.engine != "ray":
            raise EngineError("--ray-address needs --engine ray")
        check_dataset(args.data)
        source = load_source(args.model, args.tokenizer)
        total = count_rows(args.data)
        with _signals_stop_the_audit():
            summary = _audit(source, args, settings, errors, total)
    except (SourceError, DatasetError, EngineError, ParityError, OSError) as exc:
        print_error(errors, "audit", str(exc))
        return 2
    data = summary.to_dict()
    for failed in data["failed_rows"]:  # what the CLI writes advises in flag spelling
        failed["message"] = cli_advice(failed["message"])
    for group in data["failures"].values():
        group["example"] = cli_advice(group["example"])
    print_all(Console(), audit_renderables(data, source.label, args.data, total) + history_note(data, source, args))
    _write_outputs(args, summary, data, errors)
    if summary.interrupted:
        return EXIT_BY_SIGNAL.get(summary.interrupted, 1)
    return 1 if summary.rows_failed and not args.allow_failures else 0


def _audit(source, args: argparse.Namespace, settings: AuditSettings, console: Console, total: int | None):
    progress = Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, disable=args.no_progress, transient=False)
    with progress:
        task = progress.add_task("rows", total=total)
        on_rows = lambda n: progress.advance(task, n)  # noqa: E731
        if args.engine == "ray":  # Ray is optional: imported only here
            from ..diagnostics.ray_engine import run_audit_ray

            return run_audit_ray(source, args.data, settings, workers=args.workers, tokenizer=args.tokenizer,
                                 address=args.ray_address, on_rows=on_rows)
        return run_audit(source, args.data, settings, workers=args.workers, tokenizer=args.tokenizer,
                         on_rows=on_rows)


def history_note(data: dict[str, Any], source: Any, args: argparse.Namespace) -> list[Text]:
    """What history rewriting costs on this dataset (emitted tokens against one render of each conversation) and
    the options that emit fewer, when a row needed several samples. Costs measured: docs/cli.md, "History
    rewriting" (``benchmarks/history_rewriting.py``)."""
    heaviest = data.get("heaviest_row")
    if not data.get("rows_several_samples") or heaviest is None:
        return []
    where = f"row {heaviest['row']}" + (f" (line {heaviest['line']})" if heaviest["line"] else "")
    factor = heaviest["emitted_tokens"] / heaviest["full_render_tokens"] if heaviest["full_render_tokens"] else 0.0
    cost = Text(
        f"history rewriting: {data['rows_several_samples']:,} of {data['rows_ok']:,} rows need several samples (the "
        "template renders earlier turns differently once a later query follows, e.g. without their reasoning, so "
        "each sample repeats the conversation so "
        f"far): {data['emitted_tokens']:,} tokens emitted where one render of each conversation holds "
        f"{data['full_render_tokens']:,} ({data['emitted_token_ratio']:.2f}x). Heaviest: {where}, "
        f"{heaviest['samples']:,} samples, {heaviest['emitted_tokens']:,} tokens ({factor:.1f}x its render).",
        "yellow")
    options = Text(f"to emit fewer tokens: {_keep_option(source, args)} · --train-turns last (one sample per row; "
                   "only its last turn is trained) · ms-swift --loss_scale last_round (only the turns after the last "
                   "user message are trained). Their costs on a 200-query chat: docs/cli.md, History rewriting.")
    return [cost, options]


def _keep_option(source: Any, args: argparse.Namespace) -> str:
    """``--history-reasoning keep`` as it applies to this template: its switch, or why it is not available."""
    if getattr(args, "history_reasoning", None) == "keep":
        return "--history-reasoning keep is on"
    template = source.chat_template or getattr(source.tokenizer, "chat_template", None)
    try:
        family = resolve_family(template if isinstance(template, str) else "", args.family, strict=False)
    except ParityError:
        return "--history-reasoning keep (where the template has a keep-history switch)"
    if family.keep_history_kwarg is None:
        return (f"--history-reasoning keep is not available ({family.name}: the template has no keep-history "
                "switch)")
    switch = f"{family.keep_history_kwarg}={family.keep_history_value!r}"
    return (f"--history-reasoning keep (the template's {switch}: one sample per row with every turn trained, past "
            "reasoning kept in the prompt; serve with the same switch)")


@contextmanager
def _signals_stop_the_audit():
    """SIGTERM and SIGINT stop the pass (workers killed, partial summary kept) instead of killing this process."""

    def stop(signum: int, frame: Any) -> None:
        raise AuditInterrupted(signal.Signals(signum).name)

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _write_outputs(args: argparse.Namespace, summary: AuditSummary, data: dict[str, Any], errors: Console) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.failures:
        with open(args.failures, "w", encoding="utf-8") as fh:
            for failed in data["failed_rows"]:
                fh.write(json.dumps(failed, ensure_ascii=False) + "\n")
    if args.write_clean:
        if summary.interrupted:
            print_error(errors, "audit", f"--write-clean: not written, the pass was interrupted ({args.write_clean})")
            return
        written = write_clean(args.data, {f.row for f in summary.failed}, args.write_clean)
        errors.print(f"wrote {written:,} rows that passed to {args.write_clean}", markup=False, highlight=False,
                     soft_wrap=True)


def write_clean(data: str, failed: set[int], out: str) -> int:
    """The rows of ``data`` not in ``failed``, as written (JSON lines), to ``out``; returns how many."""
    written = 0
    with open(out, "wb") as fh:
        for index, text in original_lines(data):
            if index in failed:
                continue
            line = text if isinstance(text, bytes) else text.encode("utf-8")
            fh.write(line if line.endswith(b"\n") else line + b"\n")
            written += 1
    return written
