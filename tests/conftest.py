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

from swift_ext.dev import testing
from swift_ext.dev.fixtures import DERIVED, FIXTURE_TABLE, resolve_name

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

ALL_FIXTURES = list(FIXTURE_TABLE)
DERIVED_TOKENIZER_FAMILIES = [name for name in ALL_FIXTURES if resolve_name(name) in DERIVED]
"""Template-only fixtures: encoded with a tokenizer derived from a real one (``swift_ext.dev.fixtures``)."""
REAL_TOKENIZER_FAMILIES = [name for name in ALL_FIXTURES if name not in DERIVED_TOKENIZER_FAMILIES]

tokenizer = testing.tokenizer
"""The fixture's tokenizer through the one resolver; a missing fixture fails (or, where no source can give it,
skips) with the reason."""
fixture_dir = testing.fixture_dir


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
