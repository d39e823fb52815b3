"""``swift-ext encode``: show how one conversation becomes training samples.

The README's first command runs it on a real template with the conversation
shipped in the package, so a new user sees the main job work before anything
else: the inference prompt of each turn, the trained tokens, and the check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..diagnostics.source import SourceError, load_source
from ..diagnostics.terminal import print_error

EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "example_conversation.json"
TURN_STYLES = ("bold black on green", "bold black on cyan", "bold black on yellow", "bold black on magenta")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode a conversation and show trained tokens",
        description="Encode one conversation with a model's own chat template and show exactly which tokens "
        "are trained. MODEL is a model/tokenizer folder, a Hub id, or fixture:NAME for a demo copy of a real "
        "tokenizer (fixture:qwen3_6, fixture:llama3, fixture:gpt_oss, ...).",
    )
    parser.add_argument("model", help="model/tokenizer folder, Hub id, or fixture:NAME (e.g. fixture:qwen3_6)")
    parser.add_argument("conversation", nargs="?", help="JSON file with {messages, tools?} (default: shipped example)")
    parser.add_argument(
        "--kwargs", default="{}", help="chat-template kwargs as JSON, e.g. '{\"enable_thinking\": false}'"
    )
    parser.add_argument("--reasoning-policy", choices=("error", "drop"), default="error")
    parser.add_argument("--history-reasoning", choices=("template", "keep"), default="template")
    parser.add_argument("--json", action="store_true", help="print samples as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import swift_ext

    console = Console()
    try:
        tokenizer = load_source(args.model).tokenizer
    except SourceError as exc:
        print_error(Console(stderr=True), "encode", str(exc))
        return 2
    data = json.loads(Path(args.conversation or EXAMPLE).read_text(encoding="utf-8"))
    messages, tools = data["messages"], data.get("tools")
    kwargs = json.loads(args.kwargs)
    policy = dict(reasoning_policy=args.reasoning_policy, history_reasoning=args.history_reasoning)
    stats = swift_ext.EncodeStats()
    try:
        samples = swift_ext.encode(tokenizer, messages, tools, kwargs, stats=stats, **policy)
        swift_ext.verify(tokenizer, messages, samples, tools, kwargs, history_reasoning=args.history_reasoning)
    except swift_ext.ParityError as exc:
        console.print(f"[bold red]cannot train this conversation exactly:[/] {exc}")
        return 1
    if args.json:
        print(json.dumps([{"input_ids": s.input_ids, "labels": s.labels,
                           "turns": [t.__dict__ for t in s.turns]} for s in samples], ensure_ascii=False))
        return 0
    family = swift_ext.get_encoder(tokenizer).family
    console.print(f"family: [bold]{family.name}[/] ({family.description}); ms-swift template: "
                  f"[bold]{family.parity_template}[/]")
    for number, sample in enumerate(samples):
        console.rule(f"sample {number}: {len(sample)} tokens, {sample.num_labels} trained")
        console.print(_highlight(tokenizer, sample))
    _summary(console, samples, stats)
    console.print("[bold green]verified[/]: every trained turn's prompt equals apply_chat_template's generation "
                  "prompt token for token; labels are exactly the generated tokens.")
    return 0


def _highlight(tokenizer: Any, sample: Any) -> Text:
    """The sample's text with each trained turn's tokens on a colour of its own."""
    text = Text()
    cursor = 0
    for k, span in enumerate(sample.turns):
        text.append(tokenizer.decode(sample.input_ids[cursor:span.label_start]), style="dim")
        text.append(tokenizer.decode(sample.input_ids[span.label_start:span.label_end]),
                    style=TURN_STYLES[k % len(TURN_STYLES)])
        cursor = span.label_end
    text.append(tokenizer.decode(sample.input_ids[cursor:]), style="dim")
    return text


def _summary(console: Console, samples: list, stats: Any) -> None:
    table = Table(title="encode summary")
    for column in ("samples", "trained turns", "trained tokens", "emitted tokens", "full render", "ratio",
                   "spliced turns"):
        table.add_column(column, justify="right")
    table.add_row(str(len(samples)), str(stats.trained_turns), str(stats.trained_tokens), str(stats.emitted_tokens),
                  str(stats.full_render_tokens), f"{stats.emitted_ratio:.2f}", str(stats.spliced_turns))
    console.print(table)
