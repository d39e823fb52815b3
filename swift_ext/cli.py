"""``swift-ext`` command line: one sub-command per module in ``swift_ext.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func``; the modules are listed here so a missing optional dependency of
one command (ms-swift, LLaMA-Factory) never breaks the others.

Every way a command can fail reaches the user as one line on stderr and an exit
code: 2 for a usage error (argparse included) or an unexpected exception (named,
with ``SWIFT_EXT_DEBUG=1`` to see its traceback), 130 / 143 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
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

DEBUG_ENV = "SWIFT_EXT_DEBUG"
"""Set to 1 to let an unexpected exception print its traceback instead of one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where the help is) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="swift-ext", description="Train on exactly the tokens your model sees at inference.")
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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"swift-ext {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `swift-ext families | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file the user named cannot be read or written (--json, --html, --failures ...)
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"swift-ext {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:  # a user must never see a traceback; a developer can ask for one
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        print(unexpected_error_line(args.command, exc), file=sys.stderr)
        return 2


def unexpected_error_line(command: str, exc: BaseException) -> str:
    """One line naming an exception no command turned into a message of its own."""
    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else ""
    detail = detail if len(detail) <= 300 else detail[:297] + "..."
    return (f"swift-ext {command}: unexpected {type(exc).__name__}" + (f": {detail}" if detail else "")
            + f" (set {DEBUG_ENV}=1 to see the traceback)")


if __name__ == "__main__":
    sys.exit(main())
