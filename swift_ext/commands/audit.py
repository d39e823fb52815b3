"""``swift-ext audit MODEL DATA``: encode a whole dataset and summarise what training will see.

Parallel (``--workers``), with a progress bar on stderr, and a summary of
samples, token ratios, truncation, reasoning dropped and failed rows grouped by
error rule. Exit 1 when any row failed (unless ``--allow-failures``), 2 when
the command could not run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..diagnostics.auditing import AuditSettings, run_audit
from ..diagnostics.options import add_encode_arguments, add_model_arguments, options_from_args
from ..diagnostics.rows import RowFormatError, count_rows
from ..diagnostics.source import SourceError, load_source
from ..diagnostics.terminal import audit_renderables, print_all, print_error
from ..errors import ParityError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="encode a whole dataset and summarise it",
        description="Encode every row with swift_ext.encode (in parallel) and report rows, samples, the "
                    "emitted-token ratio, the trained-token share, truncation, reasoning dropped and failed rows "
                    "grouped by error rule.",
    )
    add_model_arguments(parser, metavar="MODEL_DIR")
    parser.add_argument("data", metavar="DATA", help="dataset file (.jsonl, .json, .parquet) or saved HF dataset")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="worker processes (default: CPU count, at most 8; 1 = in this process)")
    parser.add_argument("--max-length", type=int, metavar="L", help="count samples longer than L as truncated")
    parser.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    parser.add_argument("--allow-failures", action="store_true", help="exit 0 even when rows failed")
    parser.add_argument("--verify", action="store_true", help="also run swift_ext.verify on every row (slower)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_encode_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    if not Path(args.data).exists():
        print_error(errors, "audit", f"{args.data} does not exist")
        return 2
    settings = AuditSettings(options_from_args(args), args.max_length, args.verify)
    try:
        source = load_source(args.model, args.tokenizer)
        summary = _audit(source, args, settings, errors)
    except (SourceError, RowFormatError, ParityError) as exc:
        print_error(errors, "audit", str(exc))
        return 2
    data = summary.to_dict()
    print_all(Console(), audit_renderables(data, source.label, args.data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 1 if summary.rows_failed and not args.allow_failures else 0


def _audit(source, args: argparse.Namespace, settings: AuditSettings, console: Console):
    progress = Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, disable=args.no_progress, transient=False)
    with progress:
        task = progress.add_task("rows", total=count_rows(args.data))
        return run_audit(source, args.data, settings, workers=args.workers, tokenizer=args.tokenizer,
                         on_rows=lambda n: progress.advance(task, n))
