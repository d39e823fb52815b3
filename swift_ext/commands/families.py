"""``swift-ext families``: list the model families swift-ext describes."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("families", help="list known model families and their parity template names")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import swift_ext

    table = Table(title="model families (templates/*.toml)")
    for column in ("family", "parity template", "stop strings", "thinking switch", "keep-history switch",
                   "description"):
        table.add_column(column)
    for family in swift_ext.list_families():
        thinking = f"{family.thinking_kwarg}={family.thinking_default}" if family.thinking_kwarg else "-"
        keep = f"{family.keep_history_kwarg}={family.keep_history_value}" if family.keep_history_kwarg else "-"
        table.add_row(family.name, family.parity_template, " ".join(family.stop_strings), thinking, keep,
                      family.description)
    Console().print(table)
    return 0
