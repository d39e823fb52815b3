"""Encode settings shared by ``inspect`` and ``audit``, and the CLI flags that set them."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core import HISTORY_POLICIES, REASONING_POLICIES, TRAIN_TURNS


@dataclass(frozen=True)
class EncodeOptions:
    """Everything ``swift_ext.encode`` takes besides the conversation (picklable for worker processes)."""

    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    family: str | None = None
    reasoning_policy: str = "error"
    history_reasoning: str = "template"
    train_turns: str = "all"

    def encode_kwargs(self) -> dict[str, Any]:
        return {"reasoning_policy": self.reasoning_policy, "history_reasoning": self.history_reasoning,
                "train_turns": self.train_turns}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_model_arguments(parser: argparse.ArgumentParser, *, metavar: str = "MODEL") -> None:
    parser.add_argument("model", metavar=metavar,
                        help="model/tokenizer folder, a .jinja chat template, a Hub id, or fixture:NAME (a demo "
                             "copy of a real tokenizer: fixture:qwen3, fixture:gemma4, ...)")
    parser.add_argument("--tokenizer", help="tokenizer for a bare .jinja template (folder, Hub id or fixture:NAME)")
    parser.add_argument("--family", help="family description to use instead of detection (e.g. qwen3)")


def add_encode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chat-template-kwargs", "--kwargs", type=_json_object, default={}, metavar="JSON",
                        help='template kwargs, e.g. \'{"enable_thinking": false}\' (--kwargs as for encode)')
    parser.add_argument("--reasoning-policy", choices=REASONING_POLICIES, default="error",
                        help="reasoning the template cannot render: error (default) or drop (counted)")
    parser.add_argument("--history-reasoning", choices=HISTORY_POLICIES, default="template")
    parser.add_argument("--train-turns", choices=TRAIN_TURNS, default="all")


def options_from_args(args: argparse.Namespace) -> EncodeOptions:
    return EncodeOptions(chat_template_kwargs=dict(args.chat_template_kwargs), family=args.family,
                         reasoning_policy=args.reasoning_policy, history_reasoning=args.history_reasoning,
                         train_turns=args.train_turns)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value
