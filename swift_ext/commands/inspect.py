"""``swift-ext inspect MODEL DATA --row N``: one dataset row as the model will be trained.

Shows every token with its id, the trained tokens coloured per turn, the sample
boundaries, and, side by side, the inference prompt of one trained turn
(``--turn``, default the last). ``--html FILE`` writes the same as a
self-contained page.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..diagnostics.html import inspect_page
from ..diagnostics.inspection import build_view
from ..diagnostics.options import add_encode_arguments, add_model_arguments, non_negative_int, options_from_args
from ..diagnostics.rows import DatasetError, check_dataset, read_row
from ..diagnostics.source import SourceError, load_source
from ..diagnostics.terminal import inspect_renderables, print_all, print_error
from ..errors import ParityError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="show one dataset row as the model will be trained",
        description="Encode one row and show its tokens and ids, the trained tokens per turn, the sample "
                    "boundaries, and the inference prompt of a trained turn beside its training context.",
    )
    add_model_arguments(parser, metavar="MODEL_DIR")
    parser.add_argument("data", metavar="DATA", help="dataset file (.jsonl, .json, .parquet) or saved HF dataset")
    parser.add_argument("--row", type=non_negative_int, default=0, help="row number, from 0 (default 0)")
    parser.add_argument("--turn", type=int, help="message index of the turn to compare with inference (default: last)")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    parser.add_argument("--no-ids", action="store_true", help="hide token ids in the terminal")
    add_encode_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    try:
        check_dataset(args.data)
        source = load_source(args.model, args.tokenizer)
        row = read_row(args.data, args.row)
    except (SourceError, DatasetError, IndexError, OSError) as exc:
        print_error(errors, "inspect", str(exc))
        return 2
    if row.rule is not None:
        print_error(errors, "inspect", f"{row.where}: {row.detail}")
        return 1
    try:
        view = build_view(source, row, options_from_args(args), args.turn)
    except ParityError as exc:
        print_error(errors, "inspect", f"{row.where}: {exc}")
        return 1
    except ValueError as exc:
        print_error(errors, "inspect", str(exc))
        return 2
    print_all(Console(), inspect_renderables(view, ids=not args.no_ids))
    if args.html:
        Path(args.html).write_text(inspect_page(view), encoding="utf-8")
    return 0
