"""``swift-ext encode``: show how one conversation becomes training samples.

The README's first command runs it on a real template with the conversation
shipped in the package, so a new user sees the main job work before anything
else: the inference prompt of each turn, the trained tokens, and the check.

The shipped example has reasoning and a tool call. Some templates cannot show
one or both (Llama-3 and Gemma-3 render no reasoning, Gemma-3 and Mistral-Small
have no tool role, Phi-4-reasoning drops tool calls), and a template whose
thinking switch defaults to off (Gemma-4, DeepSeek-V3.1) does not train reasoning
until it is on. So, for the shipped example only: thinking is switched on where
the family's description names a switch that defaults to off and ``--kwargs``
does not set it, and the example is shown without its reasoning, its tool calls,
or both, the first way the template trains exactly, with one line saying what
was left out, why (the rule), and which flag says more. A conversation file
given by the user is never changed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..diagnostics.options import add_encode_arguments, add_model_arguments, cli_advice, options_from_args
from ..diagnostics.source import SourceError, load_source
from ..diagnostics.terminal import TRAINED_CLOSE, TRAINED_OPEN, print_error

EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "example_conversation.json"
TURN_STYLES = ("bold black on green", "bold black on cyan", "bold black on yellow", "bold black on magenta")
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode a conversation and show trained tokens",
        description="Encode one conversation with a model's own chat template and show exactly which tokens "
        "are trained (between ⟦ and ⟧, and coloured per turn). MODEL is a model/tokenizer folder, a .jinja "
        "template, a Hub id, or fixture:NAME for a demo copy of a real tokenizer (fixture:qwen3_6, "
        "fixture:llama3, fixture:gpt_oss, ...).",
    )
    add_model_arguments(parser)
    parser.add_argument("conversation", nargs="?",
                        help="JSON file with {messages, tools?} (default: the shipped example)")
    add_encode_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print samples as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    try:
        conversation = read_conversation(args.conversation) if args.conversation else None
        source = load_source(args.model, args.tokenizer)
    except (SourceError, ConversationError) as exc:
        print_error(errors, "encode", str(exc))
        return 2
    options = options_from_args(args)
    console = Console()
    if conversation is not None:
        attempt = _encode(source, options, conversation, options.chat_template_kwargs)
    else:
        attempt, note = _encode_example(source, options)
        if note:
            console.print(Text(note, "yellow"), soft_wrap=True)
    if isinstance(attempt, Exception):
        console.print(Text("cannot train this conversation exactly: ", "bold red") + Text(cli_advice(str(attempt))),
                      soft_wrap=True)
        return 1
    samples, stats, encoder = attempt
    if args.json:
        print(json.dumps([{"input_ids": s.input_ids, "labels": s.labels,
                           "turns": [dataclasses.asdict(t) for t in s.turns]} for s in samples], ensure_ascii=False))
        return 0
    family = encoder.family
    console.print(Text.assemble("family: ", (family.name, "bold"), f" ({family.description}); ms-swift template: ",
                                (family.parity_template, "bold")))
    console.print(Text(f"trained tokens are between {TRAINED_OPEN} and {TRAINED_CLOSE} (and coloured per turn)",
                       "dim"))
    for number, sample in enumerate(samples):
        console.rule(escape(f"sample {number}: {len(sample)} tokens, {sample.num_labels} trained"))
        console.print(_highlight(encoder.tokens.decode, sample))
    _summary(console, samples, stats)
    console.print(Text.assemble(("verified", "bold green"), ": every trained turn's prompt equals "
                                "apply_chat_template's generation prompt token for token; labels are exactly the "
                                "generated tokens."), soft_wrap=True)  # one line, for grep
    return 0


class ConversationError(ValueError):
    """The conversation file cannot be read as ``{messages, tools?}`` (one line for the user)."""


def read_conversation(path: str) -> dict[str, Any]:
    """``{messages, tools?}`` from a JSON file, or ``ConversationError`` saying what is wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConversationError(f"{path} does not exist (expected a JSON file with {{messages, tools?}})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversationError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConversationError(f"{path} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ConversationError(f"{path} is nested deeper than Python's JSON reader can follow") from None
    if isinstance(data, list):
        data = {"messages": data}
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ConversationError(f"{path} must hold {{\"messages\": [...], \"tools\": [...]}} or a list of messages")
    return data


def _encode(source: Any, options: Any, conversation: dict[str, Any], kwargs: dict[str, Any]):
    """``(samples, stats, encoder)``, verified, or the ParityError that stopped it."""
    import swift_ext

    messages, tools = conversation["messages"], conversation.get("tools")
    encoder_kwargs = {**source.encoder_kwargs(), **options.encoder_kwargs()}
    stats = swift_ext.EncodeStats()
    try:
        encoder = swift_ext.get_encoder(source.tokenizer, **encoder_kwargs)
        samples = encoder.encode(messages, tools, kwargs, stats=stats, options=options.policies)
        swift_ext.verify(source.tokenizer, messages, samples, tools, kwargs, options=options.policies,
                         **encoder_kwargs)
    except swift_ext.ParityError as exc:
        return exc
    return samples, stats, encoder


def _encode_example(source: Any, options: Any):
    """The shipped example, adapted to what the template can train exactly; returns ``(attempt, note)``."""
    import swift_ext

    example = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    try:
        family = swift_ext.get_encoder(source.tokenizer, **source.encoder_kwargs(), **options.encoder_kwargs()).family
    except swift_ext.ParityError as exc:
        return exc, ""
    refusals: list[str] = []
    attempt: Any = None
    for left_out, conversation in example_variants(example):
        for kwargs in _thinking_first(family, options.chat_template_kwargs, conversation):
            attempt = _encode(source, options, conversation, kwargs)
            if not isinstance(attempt, Exception):
                return attempt, _example_note(family, options.chat_template_kwargs, kwargs, left_out, refusals)
            refusals.append(f"[{attempt.rule}]")
    return attempt, ""


def _thinking_first(family: Any, kwargs: dict[str, Any], conversation: dict[str, Any]) -> list[dict[str, Any]]:
    """A conversation with reasoning is tried with thinking on first where the family's switch defaults to off
    and ``--kwargs`` leaves it unset (a model in non-thinking mode generates no reasoning)."""
    switch = family.thinking_kwarg
    has_reasoning = any(m.get(key) for m in conversation["messages"] for key in REASONING_KEYS)
    if switch and family.thinking_default is False and switch not in kwargs and has_reasoning:
        return [{**kwargs, switch: True}, dict(kwargs)]
    return [dict(kwargs)]


def _example_note(family: Any, given: dict[str, Any], used: dict[str, Any], left_out: str,
                  refusals: list[str]) -> str:
    notes = []
    switched = {k: v for k, v in used.items() if k not in given}
    if switched:
        notes.append(f"thinking on (--kwargs '{json.dumps(switched)}'), the {family.name} template's default being "
                     "off")
    if left_out:
        notes.append(f"shown without its {left_out}, which the {family.name} template cannot train exactly "
                     f"({', '.join(dict.fromkeys(refusals))})")
    if not notes:
        return ""
    return "example: " + "; ".join(notes) + "; pass a conversation file to encode your own"


def example_variants(example: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The example as shipped, then without reasoning, without tool calls, without both."""
    yield "", example
    yield "reasoning", _without_reasoning(example)
    yield "tool calls", _without_tool_calls(example)
    yield "reasoning and tool calls", _without_tool_calls(_without_reasoning(example))


def _without_reasoning(conversation: dict[str, Any]) -> dict[str, Any]:
    conversation = copy.deepcopy(conversation)
    for message in conversation["messages"]:
        for key in REASONING_KEYS:
            message.pop(key, None)
    return conversation


def _without_tool_calls(conversation: dict[str, Any]) -> dict[str, Any]:
    """The turns that call a tool and the tool results left out (the final answers stay)."""
    kept = [m for m in conversation["messages"] if not m.get("tool_calls") and m.get("role") != "tool"]
    return {"messages": copy.deepcopy(kept)}


def _highlight(decode: Any, sample: Any) -> Text:
    """The sample's text, each trained turn's tokens between ⟦ ⟧ and on a colour of its own."""
    text = Text()
    cursor = 0
    for k, span in enumerate(sample.turns):
        text.append(decode(sample.input_ids[cursor:span.label_start]), style="dim")
        text.append(TRAINED_OPEN, style="bold")
        text.append(decode(sample.input_ids[span.label_start:span.label_end]), style=TURN_STYLES[k % len(TURN_STYLES)])
        text.append(TRAINED_CLOSE, style="bold")
        cursor = span.label_end
    text.append(decode(sample.input_ids[cursor:]), style="dim")
    return text


def _summary(console: Console, samples: list, stats: Any) -> None:
    table = Table(title="encode summary")
    for column in ("samples", "trained turns", "trained tokens", "emitted tokens", "full render", "ratio",
                   "spliced turns"):
        table.add_column(column, justify="right")
    table.add_row(str(len(samples)), str(stats.trained_turns), str(stats.trained_tokens), str(stats.emitted_tokens),
                  str(stats.full_render_tokens), f"{stats.emitted_ratio:.2f}", str(stats.spliced_turns))
    console.print(table)
