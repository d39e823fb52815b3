"""``swift-ext plugin-path``: the file to pass to ``swift sft --external_plugins``.

    swift sft --external_plugins "$(swift-ext plugin-path)" --template qwen3_6_parity --template_backend jinja ...
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plugin-path", help="print the ms-swift plugin file path (--external_plugins)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ms_swift import plugin_path

    print(plugin_path())
    return 0
