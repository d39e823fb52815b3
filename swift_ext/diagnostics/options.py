"""Encode settings shared by the commands, the CLI flags that set them, and the core's advice in flag spelling."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..options import ARGUMENTS_POLICIES, HISTORY_POLICIES, REASONING_POLICIES, TRAIN_TURNS, EncodeOptions


@dataclass(frozen=True)
class CommandOptions:
    """What a command hands the core besides the conversation: the encode policies (the core's ``EncodeOptions``),
    the template kwargs, and what selects the encoder (family, stop strings). Picklable for worker processes."""

    policies: EncodeOptions = field(default_factory=EncodeOptions)
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    family: str | None = None
    stop_strings: tuple[str, ...] | None = None

    def encoder_kwargs(self) -> dict[str, Any]:
        """What selects the encoder (``get_encoder`` / ``verify``): family and stop strings."""
        return {"family": self.family, "stop_strings": self.stop_strings}

    def to_dict(self) -> dict[str, Any]:
        return {"chat_template_kwargs": self.chat_template_kwargs, "family": self.family,
                **self.policies.as_kwargs(), "stop_strings": list(self.stop_strings) if self.stop_strings else None}


def add_model_arguments(parser: argparse.ArgumentParser, *, metavar: str = "MODEL") -> None:
    parser.add_argument("model", metavar=metavar,
                        help="model/tokenizer folder, a .jinja chat template, a Hub id, or fixture:NAME (a demo "
                             "copy of a real tokenizer: fixture:qwen3, fixture:gemma4, ...)")
    parser.add_argument("--tokenizer", help="tokenizer for a bare .jinja template (folder, Hub id or fixture:NAME)")
    parser.add_argument("--family", help="family description to use instead of detection (e.g. qwen3)")


def add_encode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chat-template-kwargs", "--kwargs", type=json_object, default={}, metavar="JSON",
                        help='template kwargs, e.g. \'{"enable_thinking": false}\' (--kwargs as for encode)')
    parser.add_argument("--reasoning-policy", choices=REASONING_POLICIES, default="error",
                        help="reasoning the template cannot render: error (default) or drop (counted)")
    parser.add_argument("--history-reasoning", choices=HISTORY_POLICIES, default="template",
                        help="past turns' reasoning: the template's behaviour (default) or keep (its own switch)")
    parser.add_argument("--train-turns", choices=TRAIN_TURNS, default="all")
    parser.add_argument("--arguments-policy", choices=ARGUMENTS_POLICIES, default="parse",
                        help="JSON-text tool-call arguments: parse (default, as vLLM does) or verbatim")
    add_stop_strings_argument(parser)


def add_stop_strings_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stop-strings", nargs="+", metavar="STRING",
                        help="what the model generates to end a turn, instead of the family's (e.g. '<|im_end|>')")


def options_from_args(args: argparse.Namespace) -> CommandOptions:
    policies = EncodeOptions(reasoning_policy=args.reasoning_policy, history_reasoning=args.history_reasoning,
                             train_turns=args.train_turns, arguments_policy=args.arguments_policy)
    return CommandOptions(policies, dict(args.chat_template_kwargs), args.family,
                          tuple(args.stop_strings) if args.stop_strings else None)


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (``--kwargs``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at column {exc.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"enable_thinking\": false}}', "
                                         f"got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0 (``--max-length``, ``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (``--row``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


# ------------------------------------------------------------------ advice in the spelling of the command line
def _kwargs_flag(match: re.Match) -> str:
    return f"--kwargs '{{\"{match[1]}\": {match[2].lower()}}}'"


CLI_SPELLING: dict[str, str | Callable[[re.Match], str]] = {
    # The core advises in Python keywords (errors raised by the Python API keep that spelling); a command-line
    # user reads the flag. Each key is a regex over the core's message, applied in this order.
    r"reasoning_policy='(\w+)'": r"--reasoning-policy \1",
    r"history_reasoning='(\w+)'": r"--history-reasoning \1",
    r"use 'template' \(": "use --history-reasoning template (",
    r"stop_strings=\[\.\.\.\]": "--stop-strings STRING ...",
    r"family=\.\.\.": "--family NAME",
    r"strict=False": "no --family",
    r"chat_template=\.\.\.": "a .jinja chat template as MODEL (with --tokenizer)",
    r"\bchat_template_kwargs\b": "--kwargs",
    # render bounds: a command-line user sets the environment variable the message names first
    r" or swift_ext\.render\.set_render_limits\(\w+=\.\.\.\)": "",
    # what is left of the form NAME=True/False is a chat-template switch: "thinking is off (enable_thinking=False)"
    r"\b(\w+)=(True|False)\b": _kwargs_flag,
}


def cli_advice(message: str) -> str:
    """The core's message with its keyword advice in flag spelling: ``reasoning_policy='drop'`` ->
    ``--reasoning-policy drop``."""
    for pattern, replacement in CLI_SPELLING.items():
        message = re.sub(pattern, replacement, message)
    return message
