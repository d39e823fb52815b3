"""``swift-ext doctor MODEL_DIR_OR_TEMPLATE``: can this chat template be trained exactly?

Runs the diagnostics battery (``swift_ext.diagnostics.conformance``) and prints
each property with its smallest failing example, the family matched and the
ms-swift template to use. Exit 0: trainable exactly; 1: not; 2: could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from ..diagnostics.conformance import run_doctor
from ..diagnostics.html import doctor_page
from ..diagnostics.options import add_model_arguments
from ..diagnostics.source import SourceError, load_source
from ..diagnostics.terminal import doctor_renderables, print_all, print_error
from ..errors import ParityError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="conformance report for a model's chat template",
        description="Run generated conversations through a chat template and swift_ext.encode, report each "
                    "property (generation-prompt prefix, history stability, reasoning, wrappers, stop strings, "
                    "tool arguments, BOS) with its smallest failing example, and exit 0 when the template can be "
                    "trained exactly.",
    )
    add_model_arguments(parser, metavar="MODEL_DIR_OR_TEMPLATE")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write the report as JSON to FILE (to stdout, instead of the table, without FILE)")
    parser.add_argument("--html", metavar="FILE", help="also write the report as a self-contained HTML page")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    try:
        source = load_source(args.model, args.tokenizer)
        report = run_doctor(source, args.family)
    except (SourceError, ParityError) as exc:
        print_error(errors, "doctor", str(exc))
        return 2
    data = json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
    if args.json == "-":
        sys.stdout.write(data + "\n")
    else:
        print_all(Console(), doctor_renderables(report))
        if args.json:
            Path(args.json).write_text(data + "\n", encoding="utf-8")
    if args.html:
        Path(args.html).write_text(doctor_page(report), encoding="utf-8")
    return 0 if report.trainable else 1
