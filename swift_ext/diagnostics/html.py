"""Self-contained HTML pages (inline CSS and JS, no network assets) for ``inspect`` and ``doctor``.

Token markup, relied on by the browser test and by anyone scripting the page:
``<span class="tok [trained turn-K] [weighted] [zero]" data-pos data-id [data-turn] [data-weight]><span
class="txt">…</span><sub>ID</sub>[<sup>×W</sup>]</span>`` inside ``<div class="tokens" data-sample="N">``. Only
trained tokens get a background colour; ``data-weight`` is there when a loss scale was asked for, ``<sup>`` when
the weight is not what the label says (1 trained, 0 not), ``zero`` marks a label weighted 0 (struck through).
A media placeholder (the token the model's processor expands into an image's tokens) has class ``media``,
``data-media="image 1"`` and the marker ``[image 1: 24 tokens]`` as its text.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from .. import __version__
from .battery import FEATURES
from .inspection import InspectView, PromptView, TokenView
from .report import DoctorReport
from .terminal import DERIVED_NOTE, TURN_COLOURS, WEIGHT_NOTE, merge_modes, message_line, show, visible

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.3em; margin: 0 0 .4em; } h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
table.meta td { padding: 1px 12px 1px 0; vertical-align: top; }
.tokens { font: 13px/1.9 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; overflow-wrap: anywhere;
  border: 1px solid #ddd; border-radius: 6px; padding: 8px; background: #fcfcfc; }
.tok { display: inline-block; border-radius: 2px; padding: 0 1px; }
.tok sub { font-size: 9px; color: #8a8a8e; margin-left: 1px; }
.tok:hover { outline: 1px solid #555; }
.tok sup { font-size: 9px; color: #a0008c; font-weight: bold; margin-left: 1px; }
.tok.zero .txt { text-decoration: line-through; opacity: .6; }
.tok.media .txt { color: #0b6e99; font-weight: bold; }
.legend span { padding: 1px 6px; border-radius: 3px; margin-right: 6px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; align-items: start; }
.pair h3 { font-size: .95em; margin: .2em 0; }
.ok { color: #1a7f37; } .bad { color: #c0392b; } .na { color: #888; }
table.grid { border-collapse: collapse; } table.grid td, table.grid th { border: 1px solid #ddd; padding: 3px 8px;
  text-align: left; vertical-align: top; }
pre { background: #f6f6f6; padding: 6px; white-space: pre-wrap; }
"""


def _turn_css(turns: list[int]) -> str:
    colours = [TURN_COLOURS[k % len(TURN_COLOURS)] for k in range(len(turns))]
    return "\n".join(f".tok.trained.turn-{t}, .legend .turn-{t} {{ background: {c}; }}" for t, c in zip(turns, colours))


def _page(title: str, body: str, css: str = "", script: str = "") -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<meta name=\"generator\" content=\"swift-ext {__version__}\"><style>{CSS}{css}</style></head>\n"
            f"<body>\n{body}\n<script>{script}</script>\n</body></html>\n")


def _meta(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><td><b>{escape(k)}</b></td><td>{v}</td></tr>" for k, v in rows)
    return f"<table class=\"meta\">{cells}</table>"


# ------------------------------------------------------------------ inspect
def token_html(token: TokenView) -> str:
    classes = "tok" + (f" trained turn-{token.turn}" if token.trained else "")
    classes += " weighted" if token.unusual_weight else ""
    classes += " zero" if token.trained and token.weight == 0 else ""
    classes += " media" if token.media else ""
    turn = f' data-turn="{token.turn}"' if token.trained else ""
    weight = "" if token.weight is None else f' data-weight="{token.weight:g}"'
    title = f"id {token.id} · position {token.position}"
    title += "" if token.weight is None else f" · weight {token.weight:g}"
    title += f" · {escape(token.text)}, expanded by the model's processor" if token.media else ""
    sup = f"<sup>×{token.weight:g}</sup>" if token.unusual_weight else ""
    media = f' data-media="{escape(token.media)}"' if token.media else ""
    text = token.marker if token.media else visible(token.text)
    return (f'<span class="{classes}" data-pos="{token.position}" data-id="{token.id}"{turn}{weight}{media} '
            f'title="{title}"><span class="txt">{escape(text)}</span>'
            f"<sub>{token.id}</sub>{sup}</span>" + ("\n" if "\n" in token.text else ""))


def _tokens_html(tokens: list[TokenView], **data: Any) -> str:
    attrs = "".join(f' data-{k}="{escape(str(v))}"' for k, v in data.items())
    return f'<div class="tokens"{attrs}>' + "".join(token_html(t) for t in tokens) + "</div>"


def _pair_html(view: InspectView, prompt: PromptView) -> str:
    left, right = view.training_side(prompt), view.inference_side(prompt)
    verdict = ('<p class="ok">✓ identical: the training context is the inference prompt token for token, and the '
               'labels are the generated tokens</p>' if prompt.matches_sample
               else '<p class="bad">✗ the training sample differs from inference</p>')
    hidden = "" if prompt.message_index == view.chosen_turn else " hidden"
    return (f'<div class="pairbox" data-turn="{prompt.message_index}"{hidden}>{verdict}<div class="pair">'
            f"<div><h3>training: sample {prompt.sample_index}, context then labels</h3>"
            f"{_tokens_html(left, role='training')}</div>"
            f"<div><h3 title=\"rendered by {escape(prompt.rendered_by)}\">inference: prompt "
            f"({len(prompt.prompt)} tokens), then generated</h3>"
            f"{_tokens_html(right, role='inference')}</div></div></div>")


PAIR_SCRIPT = """
const pick = document.getElementById('turn');
if (pick) pick.addEventListener('change', () => {
  document.querySelectorAll('.pairbox').forEach(b => { b.hidden = b.dataset.turn !== pick.value; });
});
"""


def inspect_page(view: InspectView) -> str:
    turns = [p.message_index for p in view.prompts]
    stats = view.stats
    legend = "".join(f'<span class="turn-{t}">message {t}</span>' for t in turns)
    messages = "".join(f"<li value=\"{k}\"><code>{escape(message_line(m))}</code></li>"
                       for k, m in enumerate(view.messages))
    meta = _meta([
        ("row", f"{view.row}" + (f" (line {view.line})" if view.line is not None else "")),
        ("model", escape(f"{view.label} · family {view.family} · ms-swift --template {view.parity_template}")),
        ("samples", f"{len(view.samples)} · {stats.emitted_tokens} tokens · {stats.trained_tokens} trained · "
                    f"emitted-token ratio {stats.emitted_ratio:.2f}"),
        ("trained turns", f'<span class="legend">{legend}</span>'),
        ("options", escape(json.dumps(view.options))),
        *([("loss weights", escape(f"{view.loss_weights} · {WEIGHT_NOTE}"))] if view.loss_weights is not None else []),
    ])
    samples = "".join(
        f"<h2>sample {s.index}: {len(s.tokens)} tokens, {s.num_labels} trained"
        + ("" if view.loss_weights is None else f", total weight {sum(t.weight or 0.0 for t in s.tokens):g}")
        + "</h2>"
        + _tokens_html(s.tokens, sample=s.index, labels=s.num_labels) for s in view.samples)
    options = "".join(f'<option value="{t}"{" selected" if t == view.chosen_turn else ""}>message {t}</option>'
                      for t in turns)
    pairs = "".join(_pair_html(view, p) for p in view.prompts)
    note = f'<p class="bad">{escape(DERIVED_NOTE)}</p>' if view.derived_tokenizer else ""
    body = (f"<h1>swift-ext inspect</h1>{meta}{note}<ol start=\"0\">{messages}</ol>{samples}"
            f"<h2>training vs inference for the turn at <select id=\"turn\">{options}</select></h2>{pairs}")
    return _page(f"swift-ext inspect · row {view.row}", body, _turn_css(turns), PAIR_SCRIPT)


# ------------------------------------------------------------------ doctor
STATUS_HTML = {"pass": '<span class="ok">✓ pass</span>', "fail": '<span class="bad">✗ fail</span>',
               "n/a": '<span class="na">– n/a</span>'}


def doctor_page(report: DoctorReport) -> str:
    modes = [m["name"] for m in report.modes]
    family = "generic" if report.generic else f"{report.family} (matched by {report.family_match})"
    meta = _meta([("model", escape(report.label)), ("family", escape(family)),
                  ("ms-swift", escape(f"--template {report.parity_template}")),
                  ("stop strings", escape(", ".join(map(repr, report.stop_strings)))),
                  *([("note", escape(DERIVED_NOTE))] if report.derived_tokenizer else [])])
    verdict = (f'<p class="ok"><b>✓ trainable exactly</b> with --template {escape(report.parity_template)}</p>'
               if report.trainable else '<p class="bad"><b>✗ NOT trainable exactly</b></p>')
    verdict += "<ul>" + "".join(f"<li>{escape(v)}</li>" for v in report.verdict) + "</ul>"
    body = (f"<h1>swift-ext doctor</h1>{meta}{verdict}<h2>Properties</h2>{_property_grid(report, modes)}"
            f"<h2>Smallest failing examples</h2>{_examples_html(report)}"
            f"<h2>Support</h2>{_support_grid(report, modes)}")
    return _page(f"swift-ext doctor · {report.label}", body)


def _property_grid(report: DoctorReport, modes: list[str]) -> str:
    head = "<tr><th>property</th>" + "".join(f"<th>{escape(m)}</th>" for m in modes) + "</tr>"
    rows = []
    for prop_id in dict.fromkeys(p.id for p in report.properties):
        cells = [report.property(prop_id, m) for m in modes]
        tds = "".join(f"<td>{STATUS_HTML[c.status]}<br><small>{escape(c.summary)}</small></td>" for c in cells)
        rows.append(f"<tr><td>{escape(cells[0].title)}</td>{tds}</tr>")
    return f'<table class="grid">{head}{"".join(rows)}</table>'


def _examples_html(report: DoctorReport) -> str:
    parts = []
    failing = [p for p in report.properties if p.status == "fail" and p.example]
    for result, modes in merge_modes(failing, by_example=True):
        ex = result.example
        lines = "\n".join(f"[{k}] {message_line(m)}" for k, m in enumerate(ex.messages))
        expected = (f"expected ({escape(ex.expected_label)}): <code>{escape(show(ex.expected))}</code><br>"
                    if ex.expected_label else "")
        parts.append(f"<h3>{escape(result.title)} — {escape(', '.join(modes))} — case {escape(ex.case)}</h3>"
                     f"<pre>{escape(lines)}</pre><p>{expected}got ({escape(ex.actual_label)}): "
                     f"<code>{escape(show(ex.actual))}</code></p>")
    return "".join(parts) or "<p>none</p>"


def _support_grid(report: DoctorReport, modes: list[str]) -> str:
    head = "<tr><th>feature</th>" + "".join(f"<th>{escape(m)}</th>" for m in modes) + "</tr>"
    rows = []
    for feature, title in FEATURES.items():
        cells = {s.mode: s for s in report.support if s.feature == feature}
        if not cells:
            continue
        tds = "".join(f"<td>{escape(cells[m].status)} <small>{escape('; '.join(cells[m].rules))}</small></td>"
                      if m in cells else "<td>–</td>" for m in modes)
        rows.append(f"<tr><td>{escape(title)}</td>{tds}</tr>")
    return f'<table class="grid">{head}{"".join(rows)}</table>'
