"""``swift-ext families``: list the model families swift-ext describes.

Three columns, so the table reads at 80 columns: the family and its ms-swift
template never wrap; the description and the family's facts (stop strings,
thinking and keep-history switches) share the third column.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from rich.text import Text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("families", help="list known model families and their parity template names")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    Console().print(families_table())
    return 0


def families_table() -> Table:
    import swift_ext

    table = Table(title="model families (templates/*.toml)", show_lines=True)
    table.add_column("family", no_wrap=True)
    table.add_column("ms-swift --template", no_wrap=True)
    table.add_column("description, stop strings, switches", ratio=1)
    for family in swift_ext.list_families():
        facts = Text(family.description)
        facts.append(f"\nstop: {' '.join(family.stop_strings) or '-'}", "dim")
        if family.thinking_kwarg:
            facts.append(f"\nthinking: {family.thinking_kwarg}={family.thinking_default}", "dim")
        if family.keep_history_kwarg:
            facts.append(f"\nkeep history: {family.keep_history_kwarg}={family.keep_history_value}", "dim")
        table.add_row(Text(family.name, "bold"), Text(family.parity_template), facts)
    return table
