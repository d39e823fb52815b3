"""ms-swift's own templates (both backends) vs the parity templates, scored against inference ground truth.

Ground truth is ``apply_chat_template`` + the tokenizer alone (``swift_helpers.oracle_turns``): for each
assistant turn, the prompt a server feeds the model and the tokens the model generates. A turn is exact when a
training sample holds that prompt token for token and labels exactly those completion tokens after it; a
labelled token outside every exact completion is "stray" (system, user, tool or header text, or a completion
in the wrong context). Run with ``-s`` to see the table; ``SWIFT_EXT_COMPARISON_OUT=path`` also writes it.
"""

from __future__ import annotations

import copy
import os

import pytest
from swift_helpers import build_tokenizer_dir, load_tokenizer, oracle_turns, require_swift, score

require_swift()

import swift_ext.ms_swift as ms  # noqa: E402

ms.register()

from swift.model import get_model_processor  # noqa: E402
from swift.template import get_template  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def _call(city):
    return {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}


# Reasoning is written inline (<think>...</think>), ms-swift's documented form, so every template gets it.
QWEN_CONVS = [
    {"messages": [{"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "<think>\nSimple sum.\n</think>\n\n2+2 is 4."},
                  {"role": "user", "content": "And 3+3?"},
                  {"role": "assistant", "content": "<think>\nAnother sum.\n</think>\n\n3+3 is 6."}]},
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Name a color."},
                  {"role": "assistant", "content": "<think>\nPick one.\n</think>\n\nBlue."},
                  {"role": "user", "content": "Another?"},
                  {"role": "assistant", "content": "<think>\nPick again.\n</think>\n\nRed."},
                  {"role": "user", "content": "One more."},
                  {"role": "assistant", "content": "<think>\nLast.\n</think>\n\nGreen."}]},
    {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "content": "<think>\nUse the tool.\n</think>\n\n",
                   "tool_calls": [_call("Oslo")]},
                  {"role": "tool", "content": "cold"},
                  {"role": "assistant", "content": "<think>\nTool says cold.\n</think>\n\nIt is cold in Oslo."}],
     "tools": TOOLS},
]
LLAMA_CONVS = [
    {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
                  {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."},
                  {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"},
                  {"role": "assistant", "content": "Red."}]},
    {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "content": "", "tool_calls": [_call("Oslo")]},
                  {"role": "tool", "content": "cold"},
                  {"role": "assistant", "content": "It is cold in Oslo."}], "tools": TOOLS},
]

MODELS = {
    # name: (fixture, architecture, conversations, stop strings, [(label, template, backend), ...])
    "Qwen3.5": ("Qwen__Qwen3.5-4B", "qwen3", QWEN_CONVS, ("<|im_end|>",),
                [("ms-swift qwen3_5", "qwen3_5", "swift"), ("ms-swift qwen3_5", "qwen3_5", "jinja"),
                 ("swift-ext qwen3_5_parity", "qwen3_5_parity", "jinja"),
                 ("swift-ext qwen3_5_parity", "qwen3_5_parity", "swift")]),
    "Llama-3.1": ("meta-llama__Llama-3.1-8B-Instruct", "llama", LLAMA_CONVS, ("<|eot_id|>", "<|eom_id|>"),
                  [("ms-swift llama3_2", "llama3_2", "swift"), ("ms-swift llama3_2", "llama3_2", "jinja"),
                   ("swift-ext llama3_parity", "llama3_parity", "jinja"),
                   ("swift-ext llama3_parity", "llama3_parity", "swift")]),
}


def _measure(model, tmp_path):
    fixture_name, arch, convs, stops, configs = MODELS[model]
    model_dir = build_tokenizer_dir(fixture_name, tmp_path / model, arch)
    processor = get_model_processor(str(model_dir), load_model=False,
                                    model_type="qwen3" if arch == "qwen3" else "llama")[1]
    tok = load_tokenizer(fixture_name)
    rows = []
    for label, template_type, backend in configs:
        template = get_template(processor, template_type=template_type, template_backend=backend)
        template.set_mode("train")
        totals = [0, 0, 0, 0]
        for conv in convs:
            encoded = template.encode(copy.deepcopy(conv))
            samples = encoded if isinstance(encoded, list) else [encoded]
            turns = oracle_turns(tok, conv["messages"], tools=conv.get("tools"), stops=stops)
            for i, value in enumerate(score(samples, turns)):
                totals[i] += value
        exact, trained, labelled, stray = totals
        rows.append((model, label, backend, exact, trained, labelled, stray))
    return rows


def _table(rows):
    lines = ["| model | template | backend | exact turns | labelled tokens not in an exact completion |",
             "|---|---|---|---|---|"]
    for model, label, backend, exact, trained, labelled, stray in rows:
        share = 100.0 * stray / labelled if labelled else 0.0
        lines.append(f"| {model} | {label} | {backend} | {exact}/{trained} ({100.0 * exact / trained:.0f}%) "
                     f"| {stray}/{labelled} ({share:.0f}%) |")
    return "\n".join(lines)


def test_comparison_table(tmp_path):
    rows = []
    for model in MODELS:
        rows += _measure(model, tmp_path)
    table = _table(rows)
    print("\n" + table)
    out = os.environ.get("SWIFT_EXT_COMPARISON_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    for model, label, backend, exact, trained, _labelled, stray in rows:
        if label.startswith("swift-ext"):
            assert exact == trained and stray == 0, (model, label, backend)
    # ms-swift's own templates are not inference-exact on these conversations (the reason this adapter exists)
    assert any(r[3] < r[4] or r[6] for r in rows if not r[1].startswith("swift-ext"))


@pytest.fixture(autouse=True)
def _quiet_logs():
    yield
