"""Helpers for the doctor / inspect / audit command tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from swift_ext.dev import testing

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"


require_fixture = testing.fixture_dir
"""The fixture's folder through the one resolver (``swift_ext.dev.testing``)."""
load_tokenizer = testing.tokenizer


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Rows as JSON lines; a str row is written verbatim (for malformed lines)."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


def example_conversation() -> dict[str, Any]:
    """The conversation shipped with the package: tools, reasoning, two user queries."""
    return json.loads((REPO_ROOT / "swift_ext" / "data" / "example_conversation.json").read_text(encoding="utf-8"))
