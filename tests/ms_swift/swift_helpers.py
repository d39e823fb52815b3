"""Shared helpers for the ms-swift adapter tests.

These tests skip when ms-swift itself cannot be imported (CI installs it). Fixture tokenizers come through the one
resolver (``swift_ext.dev.testing``: ``$SWIFT_EXT_FIXTURES``, ``../shared/fixtures``, the registry cache, a registry
download); where local copies are expected (CI, developers) a missing fixture is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swift_ext.dev import testing, tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]


def require_swift():
    """Import ms-swift's template package or skip the calling module, saying why."""
    try:
        import swift.template  # noqa: F401
    except Exception as exc:  # ImportError, or a broken optional dependency inside ms-swift
        reason = f"ms-swift is not importable ({exc!r}); the ms-swift adapter tests need it"
        pytest.skip(reason, allow_module_level=True)


fixture = testing.fixture_dir
load_tokenizer = testing.tokenizer


# A small dataset in the OpenAI/HF form users write: reasoning_content, tool_calls (JSON-text arguments),
# tools, a turn with loss: false, several user queries.
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

ROWS = [
    {"messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "I should call the tool.",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "22 degrees"},
        {"role": "assistant", "content": "It is 22 degrees in Paris.", "reasoning_content": "The tool says 22."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You are welcome.", "reasoning_content": "Polite reply."}],
     "tools": TOOLS},
    {"messages": [
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "One, two, three.", "reasoning_content": "Easy: 1 2 3."}]},
    {"messages": [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi!", "loss": False},
        {"role": "user", "content": "Again, in French."},
        {"role": "assistant", "content": "Salut !", "reasoning_content": "French for hi."}]},
]


# ------------------------------------------------------------------ tiny models and the inference oracle
def build_tiny_model(fixture_name: str, out_dir: Path, arch: str = "qwen3") -> Path:
    """A randomly initialised one-layer model beside a copy of the fixture's tokenizer files (no download)."""
    fixture(fixture_name)  # fail or skip with the reason before building anything
    return tiny.build_tiny_model(fixture_name, out_dir, arch)


def build_tokenizer_dir(fixture_name: str, out_dir: Path, arch: str = "qwen3") -> Path:
    """Fixture tokenizer files plus a tiny config.json: enough for ms-swift's ``load_model=False``."""
    fixture(fixture_name)
    return tiny.build_tokenizer_dir(fixture_name, out_dir, arch)


def oracle_turns(tok, messages, tools=None, stops=(), kwargs=None):
    """Inference ground truth, from ``apply_chat_template`` alone (never swift-ext's renderer).

    For each assistant turn i: the token ids a server feeds the model (generation prompt of messages[:i]) and
    the ids of what the model generates (the template's rendering of turn i after that prompt, up to and
    including the first stop string). Turns whose rendering does not start with the generation prompt are
    returned with ``completion=None`` (they need splicing; the oracle cannot say more without the family).
    """
    kwargs = kwargs or {}
    out = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("loss") is False:
            continue
        prompt = tok.apply_chat_template(messages[:i], tools=tools, tokenize=False, add_generation_prompt=True,
                                         **kwargs)
        full = tok.apply_chat_template(messages[:i + 1], tools=tools, tokenize=False, **kwargs)
        completion = None
        if full.startswith(prompt):
            rest = full[len(prompt):]
            ends = [rest.find(s) + len(s) for s in stops if s in rest]
            completion = rest[:min(ends)] if ends else rest
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = None if completion is None else tok(completion, add_special_tokens=False)["input_ids"]
        out.append({"index": i, "prompt_ids": prompt_ids, "completion_ids": completion_ids,
                    "completion": completion})
    return out


def score(samples, turns):
    """(exact turns, trained turns, labelled tokens, labelled tokens outside any exact completion).

    A turn is exact when some sample starts with its inference prompt token for token and labels exactly its
    completion tokens right after it.
    """
    exact = 0
    covered = [set() for _ in samples]
    for turn in turns:
        if turn["completion_ids"] is None:
            continue
        p, c = turn["prompt_ids"], turn["completion_ids"]
        for k, sample in enumerate(samples):
            ids, labels = sample["input_ids"], sample["labels"]
            if ids[:len(p)] == p and labels[len(p):len(p) + len(c)] == c and ids[len(p):len(p) + len(c)] == c:
                exact += 1
                covered[k].update(range(len(p), len(p) + len(c)))
                break
    labelled = sum(sum(1 for x in s["labels"] if x != -100) for s in samples)
    stray = sum(sum(1 for j, x in enumerate(s["labels"]) if x != -100 and j not in covered[k])
                for k, s in enumerate(samples))
    return exact, len(turns), labelled, stray
