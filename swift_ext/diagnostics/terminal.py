"""Rich terminal output of the three commands. Pure presentation: every number comes from the data given.

Text that comes from the user or the core (labels, paths, messages, rule ids such as ``[reasoning-dropped]``) is
never read as Rich markup: it goes in ``Text`` objects or through ``rich.markup.escape``. Trained tokens are marked
with ⟦ ⟧ as well as coloured, so piped output and ``NO_COLOR=1`` still show them.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .battery import FEATURES
from .inspection import InspectView, TokenView
from .options import cli_advice
from .properties import TITLES
from .report import FAIL, NA, PASS, DoctorReport, Example, PropertyResult

TURN_COLOURS = ("#c8f7c5", "#c5dcf7", "#f7e3c5", "#e8c5f7", "#f7c5d0", "#c5f1f7")
"""Background of trained tokens, one per trained turn (cycled); the HTML page uses the same."""

STATUS_STYLE = {PASS: ("✓ pass", "green"), FAIL: ("✗ fail", "bold red"), NA: ("– n/a", "dim")}
SUPPORT_STYLE = {"yes": "green", "partly": "yellow", "no": "red"}
TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"
"""Around every run of trained tokens (labels) in terminal output: visible without colour."""
WEIGHT_NOTE = ("×w after a token: its loss weight, where it is not 1 on a trained token or 0 elsewhere; a token "
               "that spans two parts gets the larger weight")
DERIVED_NOTE = "derived tokenizer: token ids differ from the model's; the template-text findings do not"
_SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def show(text: str) -> str:
    """A string with its whitespace made visible, as Python writes it."""
    return repr(text)[1:-1] if text else "''"


# ------------------------------------------------------------------ doctor
def doctor_renderables(report: DoctorReport) -> list[Any]:
    return [_doctor_header(report), _property_table(report), _details(report), *_examples(report),
            _support_table(report), _verdict(report)]


def _doctor_header(report: DoctorReport) -> Panel:
    family = "generic (no family description matches)" if report.generic else \
        f"{report.family} (matched by {report.family_match})"
    swift = f"--template {report.parity_template}"
    if report.swift_template:
        swift += f"  (in place of ms-swift's built-in {report.swift_template!r})"
    grid = Table.grid(padding=(0, 2))
    grid.add_row("model", Text(report.label))
    grid.add_row("template", Text(f"sha256 {report.template_sha256[:16]}…"))
    grid.add_row("family", Text(family))
    grid.add_row("ms-swift", Text(swift))
    grid.add_row("stop strings", Text(", ".join(map(repr, report.stop_strings)) + f"  (from {report.stop_source})"))
    grid.add_row("modes", Text(", ".join(f"{m['name']} {m['kwargs'] or ''}".strip() for m in report.modes)))
    if report.derived_tokenizer:
        grid.add_row("note", Text(DERIVED_NOTE, "yellow"))
    return Panel(grid, title="swift-ext doctor", title_align="left")


def _modes(report: DoctorReport) -> list[str]:
    return [m["name"] for m in report.modes]


def _property_table(report: DoctorReport) -> Table:
    table = Table(title="Properties", title_justify="left")
    table.add_column("property")
    for mode in _modes(report):
        table.add_column(escape(mode))
    for prop_id in dict.fromkeys(p.id for p in report.properties):
        cells = [report.property(prop_id, mode) for mode in _modes(report)]
        table.add_row(Text(cells[0].title), *(Text(*STATUS_STYLE[c.status]) for c in cells))
    return table


def merge_modes(results: list[PropertyResult], *, by_example: bool = False) -> list[tuple[PropertyResult, list[str]]]:
    """Results that differ only in their mode, merged into ``(first result, modes)``."""
    groups: dict[tuple, tuple[PropertyResult, list[str]]] = {}
    for result in results:
        example = result.example
        detail = (example.case, example.expected, example.actual) if by_example and example else result.summary
        groups.setdefault((result.id, result.status, detail), (result, []))[1].append(result.mode)
    order = list(TITLES)
    return sorted(groups.values(), key=lambda group: order.index(group[0].id))


def _details(report: DoctorReport) -> Group:
    lines = []
    for result, modes in merge_modes(report.properties):
        label, style = STATUS_STYLE[result.status]
        line = Text(label[0] + " ", style)
        line.append(result.title, "bold")
        line.append(f" [{', '.join(modes)}]: ", "dim")
        line.append(cli_advice(result.summary))
        lines.append(line)
    return Group(*lines)


def _examples(report: DoctorReport) -> list[Any]:
    failing = [p for p in report.properties if p.status == FAIL and p.example is not None]
    return [_example_panel(result, modes) for result, modes in merge_modes(failing, by_example=True)]


def _example_panel(result: PropertyResult, modes: list[str]) -> Panel:
    example: Example = result.example  # type: ignore[assignment]
    body = Table.grid(padding=(0, 1))
    body.add_row("case", Text(f"{example.case} ({', '.join(modes)})"))
    for k, message in enumerate(example.messages):
        body.add_row(Text(f"[{k}]"), Text(message_line(message), "bold" if k == example.turn else ""))
    if example.expected_label:
        body.add_row("expected", Text(f"{example.expected_label}: {show(example.expected)}", "green"))
    body.add_row("got", Text(f"{example.actual_label}: {cli_advice(show(example.actual))}", "red"))
    return Panel(body, title=Text(f"✗ {result.title} — smallest example"), title_align="left", border_style="red")


def message_line(message: dict[str, Any]) -> str:
    """One message on one line: role, content, and what else it carries."""
    content = message.get("content")
    if isinstance(content, list):  # content parts: the text, and a <kind> tag where each media item goes
        content = "".join(f"<{p['type'].removesuffix('_url')}>" if p.get("type", "") != "text" else p.get("text", "")
                          for p in content if isinstance(p, dict))
    parts = [f"{message.get('role')}: {show(str(content or ''))}"]
    reasoning = message.get("reasoning_content") or message.get("reasoning") or message.get("thinking")
    if reasoning:
        parts.append(f"reasoning={show(reasoning)}")
    for call in message.get("tool_calls") or ():
        function = call.get("function", call)
        parts.append(f"call {function.get('name')}({function.get('arguments')})")
    if message.get("loss") is False:
        parts.append("loss=false")
    return "  ".join(parts)


def _support_table(report: DoctorReport) -> Table:
    table = Table(title="What the template supports (by swift_ext.encode + verify)", title_justify="left")
    table.add_column("feature")
    for mode in _modes(report):
        table.add_column(escape(mode))
    for feature, title in FEATURES.items():
        by_mode = {s.mode: s for s in report.support if s.feature == feature}
        cells = [by_mode.get(m) for m in _modes(report)]
        if not by_mode:
            continue
        table.add_row(Text(title), *(_support_cell(c) for c in cells))
    return table


def _support_cell(cell: Any) -> Text:
    if cell is None:
        return Text("–", "dim")
    text = Text(cell.status, SUPPORT_STYLE[cell.status])
    if cell.rules:
        text.append(" " + "; ".join(cell.rules), "dim")
    return text


def _verdict(report: DoctorReport) -> Panel:
    if report.trainable:
        head = Text(f"✓ trainable exactly with swift_ext: use --template {report.parity_template}", "bold green")
    else:
        head = Text("✗ NOT trainable exactly: swift_ext.encode cannot produce verified samples", "bold red")
    lines = [head, *(Text("• " + cli_advice(line)) for line in report.verdict)]
    return Panel(Group(*lines), title="verdict", title_align="left",
                 border_style="green" if report.trainable else "red")


# ------------------------------------------------------------------ inspect
def visible(text: str) -> str:
    """Token text with newlines and tabs drawn (the line break itself goes after the token's id)."""
    return text.replace("\n", "↵").replace("\t", "→")


def token_text(token: TokenView, colours: dict[int, str], ids: bool = True, *, opens: bool = False,
               closes: bool = False) -> Text:
    """A token in its turn's colour (plain when not trained), its id in subscript after it, its loss weight
    (``×0.5``) when that is not what its label says; ``opens`` / ``closes``: the token starts / ends a run of
    trained tokens (⟦ before it / ⟧ after it, before its line break)."""
    style = f"black on {colours.get(token.turn, TURN_COLOURS[0])}" if token.turn is not None else ""
    if token.trained and token.weight == 0:
        style += " strike"
    text = Text(TRAINED_OPEN, style="bold") if opens else Text()
    text.append(token.marker if token.media else visible(token.text), style=style or ("bold cyan" if token.media
                                                                                       else ""))
    if ids:
        text.append(str(token.id).translate(_SUBSCRIPT), style="dim")
    if token.unusual_weight:
        text.append(f"×{token.weight:g}", style="bold magenta")
    if closes:
        text.append(TRAINED_CLOSE, style="bold")
    if "\n" in token.text:
        text.append("\n")
    return text


def turn_colours(view: InspectView) -> dict[int, str]:
    return {p.message_index: TURN_COLOURS[k % len(TURN_COLOURS)] for k, p in enumerate(view.prompts)}


def _tokens(tokens: list[TokenView], colours: dict[int, str], ids: bool) -> Text:
    out = Text()
    for k, token in enumerate(tokens):
        before = tokens[k - 1].turn if k else None
        after = tokens[k + 1].turn if k + 1 < len(tokens) else None
        trained = token.turn is not None
        out.append_text(token_text(token, colours, ids, opens=trained and before != token.turn,
                                   closes=trained and after != token.turn))
    return out


def inspect_renderables(view: InspectView, ids: bool = True) -> list[Any]:
    colours = turn_colours(view)
    out: list[Any] = [_inspect_header(view, colours)]
    for sample in view.samples:
        turns = ", ".join(f"message {s.message_index} (labels {s.label_start}-{s.label_end - 1})" for s in sample.turns)
        weight = "" if view.loss_weights is None else f", total weight {sum(t.weight or 0.0 for t in sample.tokens):g}"
        title = f"sample {sample.index}: {len(sample.tokens)} tokens, {sample.num_labels} trained{weight} · {turns}"
        out.append(Panel(_tokens(sample.tokens, colours, ids), title=Text(title), title_align="left"))
    out.append(_side_by_side(view, colours, ids))
    return out


def _inspect_header(view: InspectView, colours: dict[int, str]) -> Panel:
    stats = view.stats
    grid = Table.grid(padding=(0, 2))
    grid.add_row("row", Text(f"{view.row}" + (f" (line {view.line})" if view.line is not None else "")))
    grid.add_row("model", Text(f"{view.label} · family {view.family} · ms-swift --template {view.parity_template}"))
    grid.add_row("samples", Text(f"{len(view.samples)} · {stats.emitted_tokens} tokens · {stats.trained_tokens} "
                                 f"trained · emitted-token ratio {stats.emitted_ratio:.2f}"))
    legend = Text(f"{TRAINED_OPEN}…{TRAINED_CLOSE} ")
    for message_index, colour in colours.items():
        legend.append(f" message {message_index} ", style=f"black on {colour}")
        legend.append(" ")
    grid.add_row("trained turns", legend)
    if view.loss_weights is not None:
        grid.add_row("loss weights", Text(f"{view.loss_weights} · {WEIGHT_NOTE}"))
    for k, message in enumerate(view.messages):
        grid.add_row(Text(f"[{k}]"), Text(message_line(message), overflow="ellipsis", no_wrap=True))
    if view.derived_tokenizer:
        grid.add_row("note", Text(DERIVED_NOTE, "yellow"))
    return Panel(grid, title="swift-ext inspect", title_align="left")


def _side_by_side(view: InspectView, colours: dict[int, str], ids: bool) -> Table:
    prompt = view.prompt_for(view.chosen_turn)
    verdict = ("✓ identical: the training context is the inference prompt token for token, and the labels are the "
               "generated tokens") if prompt.matches_sample else "✗ the training sample differs from inference"
    table = Table(title=Text(f"turn at message {prompt.message_index}: training vs inference"),
                  title_justify="left", caption=Text(verdict), caption_justify="left", expand=True)
    table.add_column(Text(f"training sample {prompt.sample_index} (context, then labels)"), ratio=1)
    table.add_column(Text(f"inference (generation prompt by {prompt.rendered_by}, then what the model generates)"),
                     ratio=1)
    table.add_row(_tokens(view.training_side(prompt), colours, ids), _tokens(view.inference_side(prompt), colours, ids))
    return table


# ------------------------------------------------------------------ audit
def audit_renderables(summary: dict[str, Any], label: str, path: str, total: int | None = None) -> list[Any]:
    """The summary table and the failures by rule; ``total``: the rows of the file, when known (an interrupted
    pass says how far it got)."""
    out: list[Any] = []
    if summary.get("interrupted"):
        of = f" of {total:,}" if total is not None else ""
        out.append(Text(f"interrupted by {summary['interrupted']} after {summary['rows']:,}{of} rows: the summary "
                        "covers the rows finished", "bold yellow"))
    out.append(Text(f"swift-ext audit · {label} · {path}", "italic"))  # a title would wrap at the table's width
    forms = summary.get("row_forms") or {}
    if len(forms) > 1:
        counts = ", ".join(f"{form}: {n:,}" for form, n in forms.items())
        out.append(Text(f"warning: the rows mix formats ({counts}); ms-swift reads a file with the preprocessor of "
                        "one format (rows of the others are dropped or misread): split the file by format",
                        "bold yellow"))
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in _audit_rows(summary):
        table.add_row(Text(name), Text(value))
    out.append(table)
    if summary["failures"]:
        failures = Table(title="failed rows by error rule", title_justify="left",
                         caption="every failed row: --failures FILE (JSON lines) or failed_rows in --json",
                         caption_justify="left")
        for column in ("rule", "rows", "first row", "first error"):
            failures.add_column(column)
        for rule, group in summary["failures"].items():
            where = f"{group['first_row']}" + (f" (line {group['first_line']})" if group["first_line"] else "")
            example = cli_advice(group["example"].removeprefix(f"[{rule}] "))
            failures.add_row(Text(rule, "red"), Text(str(group["count"])), Text(where), Text(example[:160], "dim"))
        out.append(failures)
    return out


def _audit_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("rows", f"{s['rows']:,}"),
        ("rows failed", f"{s['rows_failed']:,}"),
        ("samples emitted", f"{s['samples_emitted']:,}" + (f" (of {s['samples']:,})" if s["samples_dropped"] else "")),
        ("emitted-token ratio", f"{s['emitted_token_ratio']:.3f}  ({s['emitted_tokens']:,} / "
                                f"{s['full_render_tokens']:,} tokens of one render per row)"),
        ("trained-token share", f"{s['trained_token_share']:.1%}  ({s['trained_tokens']:,} tokens)"),
        ("rows with zero trained tokens", f"{s['rows_zero_trained']:,}"),
        ("spliced turns", f"{s['spliced_turns']:,} of {s['trained_turns']:,}"),
        ("reasoning dropped", f"{s['reasoning_dropped_turns']:,} turns in {s['rows_reasoning_dropped']:,} rows"),
    ]
    if s["max_length"] is not None:
        rows.insert(6, ("rows truncated", f"{s['rows_truncated']:,} at --max-length {s['max_length']}; samples "
                                          f"dropped: {s['samples_dropped']:,}; trained tokens cut: "
                                          f"{s['trained_tokens_cut']:,}"))
    if s.get("blank_lines"):
        rows.append(("blank lines (not rows)", f"{s['blank_lines']:,}"))
    if s.get("worker_restarts"):
        rows.append(("worker restarts", f"{s['worker_restarts']:,} (a worker process died; its rows were retried)"))
    rows.append(("throughput", f"{s['rows_per_second']:,.1f} rows/s · {s['tokens_per_second']:,.0f} tokens/s "
                               f"({s['seconds']:.2f} s)"))
    return rows


def print_all(console: Console, renderables: list[Any]) -> None:
    for item in renderables:
        console.print(item, soft_wrap=isinstance(item, Text))  # a line of text stays one line (paths, for grep)


def print_error(console: Console, command: str, message: str) -> None:
    """An error line, printed as plain text (rule names in brackets must not be read as Rich markup), with the
    core's keyword advice in flag spelling."""
    console.print(Text(f"swift-ext {command}: {cli_advice(message)}", style="red"), soft_wrap=True)  # one line
