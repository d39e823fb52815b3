"""``swift-ext inspect MODEL DATA --row N``: one dataset row as the model will be trained.

Shows every token with its id, the trained tokens coloured per turn, the sample
boundaries, and, side by side, the inference prompt of one trained turn
(``--turn``, default the last). ``--html FILE`` writes the same as a
self-contained page. ``--span-weights JSON`` / ``--loss-scale NAME`` show the
loss weight of every token (``×w`` after a token whose weight is not what its
label alone says).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from rich.console import Console

from ..diagnostics.html import inspect_page
from ..diagnostics.inspection import build_view
from ..diagnostics.options import add_encode_arguments, add_model_arguments, non_negative_int, options_from_args
from ..diagnostics.rows import DatasetError, check_dataset, read_row
from ..diagnostics.source import SourceError, load_source
from ..diagnostics.terminal import inspect_renderables, print_all, print_error
from ..errors import ParityError
from ..weights import LossWeights, apply_last_round, kind_weights


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
    parser.add_argument("--span-weights", metavar="JSON",
                        help="a loss weight per part kind (reasoning, empty_reasoning, answer, tool_call, stop, "
                             "other), JSON or a file, e.g. '{\"reasoning\": 0.5}': ms-swift's --loss_scale "
                             "parity_spans with $SWIFT_EXT_SPAN_WEIGHTS")
    parser.add_argument("--loss-scale", metavar="NAME",
                        help="show the weights of an ms-swift --loss_scale (hermes, ignore_empty_think, "
                             "last_round+hermes, parity_spans, ...; needs ms-swift installed)")
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
        weights = _loss_weights(args)
    except (ParityError, ImportError) as exc:
        print_error(errors, "inspect", str(exc))
        return 2
    if weights is not None and weights.last_round:
        messages = [dict(m) for m in row.messages]
        apply_last_round(messages)
        row = dataclasses.replace(row, messages=messages)
    try:
        view = build_view(source, row, options_from_args(args), args.turn, weights)
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


def _loss_weights(args: argparse.Namespace) -> LossWeights | None:
    """The weights asked for: ``--span-weights`` alone needs only the core; ``--loss-scale`` reads ms-swift's
    strategies (``--span-weights`` then feeds its ``parity_spans``)."""
    if args.loss_scale is None:
        if args.span_weights is None:
            return None
        kinds = kind_weights(args.span_weights, source="--span-weights")
        named = {kind: weight for kind, weight in kinds.items() if weight != 1.0}
        return LossWeights(kinds=kinds, name=f"parity_spans {json.dumps(named)}")
    try:
        from ..ms_swift.loss_scale import SPAN_WEIGHTS_ENV, loss_weights
    except ImportError as exc:
        raise ImportError(f"--loss-scale reads ms-swift's loss scales and ms-swift is not importable ({exc}); "
                          "--span-weights works without it") from None
    if args.span_weights is not None:
        os.environ[SPAN_WEIGHTS_ENV] = args.span_weights
    return loss_weights(args.loss_scale)
