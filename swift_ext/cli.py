"""``swift-ext`` command line: one sub-command per module in ``swift_ext.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func``; the modules are listed here so a missing optional dependency of
one command (ms-swift, LLaMA-Factory) never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "swift_ext.commands.encode",
    "swift_ext.commands.families",
    "swift_ext.commands.doctor",
    "swift_ext.commands.inspect",
    "swift_ext.commands.audit",
    "swift_ext.commands.plugin_path",
    "swift_ext.commands.lf",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swift-ext", description="Train on exactly the tokens your model sees at inference."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("swift_ext.commands"):
                continue  # command not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
