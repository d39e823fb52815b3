"""Helpers for the doctor / inspect / audit command tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from swift_ext import fixtures

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"


def require_fixture(name: str) -> Path:
    """The fixture's folder, or a clear failure naming where fixtures are looked for."""
    try:
        return fixtures.fixture_dir(name, fetch=False)
    except fixtures.FixtureUnavailable as exc:
        pytest.fail(f"{exc}. The CLI tests need the real tokenizer fixtures: set {fixtures.ENV_VAR} or place them "
                    "at ../shared/fixtures next to the repository.", pytrace=False)


def load_tokenizer(name: str) -> Any:
    require_fixture(name)
    if fixtures.is_template_only(name):
        require_fixture(fixtures.DERIVED[fixtures.resolve_name(name)][0])
    return fixtures.load_tokenizer(name)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Rows as JSON lines; a str row is written verbatim (for malformed lines)."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


def example_conversation() -> dict[str, Any]:
    """The conversation shipped with the package: tools, reasoning, two user queries."""
    return json.loads((REPO_ROOT / "swift_ext" / "data" / "example_conversation.json").read_text(encoding="utf-8"))
