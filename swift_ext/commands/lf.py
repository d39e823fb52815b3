"""``swift-ext lf train cfg.yaml``: LLaMA-Factory with the parity templates registered.

Registers every ``<family>_parity`` template in LLaMA-Factory and runs its own entry point (also under the
torchrun re-launch); see ``docs/llamafactory.md``. Needs the ``llamafactory`` extra, in its own environment.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lf", help="run LLaMA-Factory (train, chat, export, ...) with the parity templates registered",
        description="Arguments after 'lf' are LLaMA-Factory's, e.g. 'swift-ext lf train cfg.yaml'.",
    )
    parser.add_argument("lf_args", nargs=argparse.REMAINDER, help="LLaMA-Factory command and arguments")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..llamafactory.cli import main

    return main(args.lf_args)
