"""Shared test helpers: fixture tokenizers, and the inference oracle.

The oracle is ``apply_chat_template`` of the real tokenizer followed by
``tokenizer(..., add_special_tokens=False)``: what vLLM / SGLang feed the model.
It never goes through swift_ext's own renderer.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
from hypothesis import settings

from swift_ext import fixtures

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# CI replays the same generated examples every run (a failure there is reproducible, never a fluke of the seed);
# developers' runs draw fresh ones and so keep finding new cases.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# tests/lf need LLaMA-Factory, whose pins conflict with ms-swift's: they run in their own environment
# (.ci/run, docs/llamafactory.md) and are not collected where LLaMA-Factory is not installed.
collect_ignore = [] if _installed("llamafactory") else ["lf"]

REAL_TOKENIZER_FAMILIES = [
    "qwen3", "qwen3_thinking", "qwq", "qwen3_coder", "qwen3_5", "qwen3_6", "deepseek_r1", "deepseek_v3_1",
    "llama3", "glm4_7", "gpt_oss", "gemma3",
]
DERIVED_TOKENIZER_FAMILIES = ["gemma4", "gemma4_e2b", "kimi_k2", "phi4_reasoning", "seed_oss", "mistral_small"]
ALL_FIXTURES = REAL_TOKENIZER_FAMILIES + DERIVED_TOKENIZER_FAMILIES


def tokenizer(name: str):
    """The fixture's tokenizer; fails (or, on a machine without ../shared, skips) with the reason."""
    try:
        return fixtures.load_tokenizer(name)
    except fixtures.FixtureUnavailable as exc:
        if fixtures.local_copies_expected():
            pytest.fail(f"fixture {name!r} is missing: {exc}. Put ../shared/fixtures beside the project "
                        f"or set {fixtures.ENV_VAR}.")
        pytest.skip(f"fixture {name!r} unavailable on this machine: {exc}")


def oracle_prompt_ids(tok, messages, tools=None, **kwargs) -> list[int]:
    text = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False, **kwargs)
    return tok(text, add_special_tokens=False)["input_ids"]


def oracle_render(tok, messages, tools=None, add_generation_prompt=False, **kwargs) -> str:
    return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                   tokenize=False, **kwargs)


def oracle_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
