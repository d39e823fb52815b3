"""Shared helpers for the LLaMA-Factory adapter tests.

These tests skip only when LLaMA-Factory is not installed (CI runs them in its own
virtualenv, see docs/llamafactory.md). Fixture tokenizers come through the one
resolver (``swift_ext.dev.testing``); where local copies are expected a missing
fixture is a failure.

The ground truth is the inference oracle: ``apply_chat_template(messages[:i],
add_generation_prompt=True)`` of the real tokenizer, tokenized without special tokens,
followed by the text the model generates for turn i, written out by hand in the tests.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from swift_ext.dev import testing, tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[2]
IGNORE = -100

# ----------------------------------------------------------------------------- conversations
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

QWEN_ROWS = [
    {  # two user queries: Qwen3.6 drops the first turn's reasoning from history -> two samples
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "reasoning_content": "Add two and two.", "content": "4"},
            {"role": "user", "content": "And times 3?"},
            {"role": "assistant", "reasoning_content": "Multiply 4 by 3.", "content": "12"},
        ],
    },
    {  # a tool call and its answer after one query: one sample, both turns trained
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "reasoning_content": "I need the weather tool.",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": '{"temp_c": 21}'},
            {"role": "assistant", "reasoning_content": "Report it.", "content": "It is 21 °C in Paris."},
        ],
        "tools": [WEATHER_TOOL],
    },
    {  # loss: false on the first answer: only the second is trained
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "reasoning_content": "Greet back.", "content": "Hello!", "loss": False},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "reasoning_content": "Say goodbye.", "content": "Goodbye!"},
        ],
    },
]

# What Qwen3.6 generates after its generation prompt "<|im_start|>assistant\n<think>\n", per trained message.
QWEN_COMPLETIONS = [
    {2: "Add two and two.\n</think>\n\n4<|im_end|>", 4: "Multiply 4 by 3.\n</think>\n\n12<|im_end|>"},
    {
        1: "I need the weather tool.\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
        "</parameter>\n</function>\n</tool_call><|im_end|>",
        3: "Report it.\n</think>\n\nIt is 21 °C in Paris.<|im_end|>",
    },
    {3: "Say goodbye.\n</think>\n\nGoodbye!<|im_end|>"},
]

LLAMA_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And times 3?"},
            {"role": "assistant", "content": "12"},
        ],
    },
    {
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
        ],
    },
    {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "loss": False},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye!"},
        ],
    },
]

# Llama 3.1 generates the answer and <|eot_id|> after "<|start_header_id|>assistant<|end_header_id|>\n\n".
LLAMA_COMPLETIONS = [{2: "4<|eot_id|>", 4: "12<|eot_id|>"}, {1: "Blue.<|eot_id|>"}, {3: "Goodbye!<|eot_id|>"}]



def require_llamafactory() -> None:
    """Skip the calling module when LLaMA-Factory is not installed (and only then); else register the
    parity templates, which also makes LLaMA-Factory importable without a working torchaudio."""
    try:  # the installed distribution, not a module search: a stray llamafactory folder cannot pass for it
        importlib.metadata.version("llamafactory")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "LLaMA-Factory is not installed in this environment; these tests run in CI's separate "
            "LLaMA-Factory virtualenv (docs/llamafactory.md)",
            allow_module_level=True,
        )
    from swift_ext.llamafactory import register

    register()


fixture = testing.fixture_dir
load_tokenizer = testing.tokenizer


def build_tiny_model(fixture_name: str, dest: Path) -> Path:
    """A randomly initialised 1-layer Llama-architecture model beside the fixture's tokenizer files.

    The architecture does not matter for the label checks; the vocabulary must cover the tokenizer.
    """
    fixture(fixture_name)  # fail or skip with the reason before building anything
    return tiny.build_tiny_model(fixture_name, dest, arch="llama")


def write_dataset(dataset_dir: Path, name: str, rows: list[dict]) -> None:
    """An OpenAI-format dataset file and its dataset_info.json entry."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info_path = dataset_dir / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[name] = {
        "file_name": f"{name}.json",
        "formatting": "openai",
        "columns": {"messages": "messages", "tools": "tools"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "observation_tag": "tool",
            "function_tag": "function_call",
            "system_tag": "system",
        },
    }
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")


def inference_messages(messages: list[dict]) -> list[dict]:
    """The conversation as a client sends it to a server: no training-only keys, tool arguments parsed."""
    out = []
    for message in messages:
        message = {k: v for k, v in message.items() if k != "loss"}
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call["function"])
                if isinstance(function.get("arguments"), str):
                    function["arguments"] = json.loads(function["arguments"])
                calls.append({**call, "function": function})
            message["tool_calls"] = calls
        out.append(message)
    return out


def expected_turns(tokenizer, rows: list[dict], completions: list[dict[int, str]], **template_kwargs):
    """(prompt ids, completion ids) of every trained turn: the inference oracle."""
    turns = []
    for row, by_index in zip(rows, completions):
        messages = inference_messages(row["messages"])
        for index, completion in by_index.items():
            assert messages[index]["role"] == "assistant"
            text = tokenizer.apply_chat_template(
                messages[:index], tools=row.get("tools"), add_generation_prompt=True, tokenize=False,
                **template_kwargs,
            )
            prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
            generated = tokenizer(completion, add_special_tokens=False)["input_ids"]
            turns.append((prompt, generated))
    return turns


def labelled_runs(labels: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for pos, label in enumerate([*labels, IGNORE]):
        if label != IGNORE and start is None:
            start = pos
        elif label == IGNORE and start is not None:
            runs.append((start, pos))
            start = None
    return runs


def assert_rows_match_oracle(rows: list[tuple[list[int], list[int]]], turns, tokenizer) -> None:
    """Every labelled run of every row is one trained turn, after exactly that turn's inference prompt,
    and every trained turn is in exactly one row."""
    seen = [0] * len(turns)
    for input_ids, labels in rows:
        assert len(input_ids) == len(labels)
        for start, end in labelled_runs(labels):
            assert labels[start:end] == input_ids[start:end]
            matches = [
                t for t, (prompt, generated) in enumerate(turns)
                if input_ids[:start] == prompt and labels[start:end] == generated
            ]
            assert matches, (
                "a trained run is not an inference turn:\n  context tail "
                f"{tokenizer.decode(input_ids[max(0, start - 30):start])!r}\n  labels "
                f"{tokenizer.decode(labels[start:end])!r}"
            )
            seen[matches[0]] += 1
    missing = [t for t, n in enumerate(seen) if n != 1]
    assert not missing, f"turns trained {[seen[t] for t in missing]} times instead of once: {missing}"


def direct_rows(template: str, tokenizer, rows: list[dict], *, formatting: str = "openai", **arguments):
    """The rows LLaMA-Factory's converter and dataset processor build, called directly.

    LLaMA-Factory's ``get_dataset`` adds file loading, Arrow and ``datasets.map``, whose cache
    fingerprint pickles the whole tokenizer (several seconds for a 250k vocabulary); the
    end-to-end tests go through it. This calls the same converter and processor on a batch.
    """
    from swift_ext.llamafactory import register

    register()
    from llamafactory.data import converter, loader
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    data_args = DataArguments(template=template, **{"cutoff_len": 1024, **arguments})
    if formatting == "openai":
        attr = DatasetAttr(
            "file", "demo", formatting="openai", messages="messages", tools="tools", role_tag="role",
            content_tag="content", user_tag="user", assistant_tag="assistant", observation_tag="tool",
            function_tag="function_call", system_tag="system",
        )
    else:  # LLaMA-Factory's sharegpt defaults: conversations of from/value, human/gpt/function_call/observation
        attr = DatasetAttr("file", "demo", formatting=formatting, messages="conversations", tools="tools")
    convert = converter.get_dataset_converter(formatting, attr, data_args)
    aligned = [convert({attr.messages: row[attr.messages], "tools": row.get("tools")}) for row in rows]
    batch = {key: [a[key] for a in aligned] for key in aligned[0]}
    template_obj = get_template_and_fix_tokenizer(tokenizer, data_args)
    processor = loader._get_dataset_processor(data_args, "sft", template_obj, tokenizer, None)
    out = processor.preprocess_dataset(batch)
    return [(list(ids), list(labels)) for ids, labels in zip(out["input_ids"], out["labels"])], out


def unset_env(monkeypatch, *names: str) -> None:
    """Unset variables for one test and restore them (or their absence) after it."""
    for name in names:
        monkeypatch.setenv(name, "")  # records the old state, so the undo restores absence too
        monkeypatch.delenv(name)
