"""Resolve the MODEL argument of the diagnostic commands to a tokenizer and a chat template.

One argument accepts what users have at hand: a model or tokenizer folder, a
bare ``.jinja`` template file, or a fixture short name (``qwen3``, ``gemma4``).
The template is carried beside the tokenizer (never written into it) because
fixture tokenizers are cached and shared.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
DERIVED_BASE = "qwen3"
"""Fixture whose byte-level tokenizer backs a template that comes without one."""


class SourceError(RuntimeError):
    """The MODEL argument names nothing that can be loaded; ``rule`` says why."""

    def __init__(self, detail: str, *, rule: str = "source") -> None:
        super().__init__(f"[{rule}] {detail}")
        self.rule = rule


@dataclass
class ModelSource:
    """A tokenizer plus the chat template to use with it."""

    spec: str
    tokenizer: Any
    chat_template: str | None
    label: str
    derived: bool = False
    """True when the tokenizer is not the model's own: token ids differ, text-level findings do not."""

    def encoder_kwargs(self) -> dict[str, Any]:
        return {"chat_template": self.chat_template} if self.chat_template is not None else {}


def load_source(spec: str, tokenizer: str | None = None) -> ModelSource:
    """Load ``spec`` (folder, ``.jinja`` file or fixture name); ``tokenizer`` overrides the tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    path = Path(spec)
    if path.is_file() and path.name in TOKENIZER_FILES:
        path = path.parent  # a tokenizer file stands for its folder
    if path.is_file():
        return _from_template_file(spec, path, tokenizer)
    if path.is_dir():
        jinja = path / "chat_template.jinja"
        if not _has_tokenizer(path) and jinja.is_file():
            return _from_template_file(spec, jinja, tokenizer)
        return ModelSource(spec, _load_folder(path), None, path.name)
    tok = _load_fixture(spec)
    from ..fixtures import is_template_only, resolve_name

    return ModelSource(spec, tok, None, resolve_name(spec), derived=is_template_only(spec))


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def _load_folder(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises OSError, ValueError, ... for unreadable folders
        raise SourceError(f"cannot load a tokenizer from {path}: {exc}", rule="source-tokenizer") from None
    if not tok.chat_template and (path / "chat_template.jinja").is_file():
        tok.chat_template = (path / "chat_template.jinja").read_text(encoding="utf-8")
    return tok


def _load_fixture(name: str) -> Any:
    from .. import fixtures

    try:
        return fixtures.load_tokenizer(name)
    except (fixtures.FixtureUnavailable, ImportError, OSError) as exc:
        raise SourceError(
            f"{name!r} is neither a folder, a template file nor a fixture name ({exc}); fixture names: "
            + ", ".join(sorted(fixtures.FIXTURES)),
            rule="source-not-found",
        ) from None


def _load_tokenizer_spec(spec: str) -> Any:
    path = Path(spec)
    return _load_folder(path) if path.is_dir() else _load_fixture(spec)


def _from_template_file(spec: str, path: Path, tokenizer: str | None) -> ModelSource:
    template = path.read_text(encoding="utf-8")
    if tokenizer:
        return ModelSource(spec, _load_tokenizer_spec(tokenizer), template, path.name)
    if _has_tokenizer(path.parent):
        return ModelSource(spec, _load_folder(path.parent), template, path.parent.name)
    return ModelSource(spec, derive_tokenizer(template), template, path.name, derived=True)


def derive_tokenizer(template: str, base: str = DERIVED_BASE) -> Any:
    """A fresh copy of a real byte-level tokenizer with the template's control strings as special tokens.

    Mirrors what ``swift_ext.fixtures`` does for template-only fixtures, so a lone
    ``.jinja`` file can still be encoded and verified (with ids that are not the model's).
    """
    from transformers import AutoTokenizer

    from .. import fixtures

    try:
        tok = AutoTokenizer.from_pretrained(str(fixtures.fixture_dir(base)))
    except (fixtures.FixtureUnavailable, ImportError, OSError) as exc:
        raise SourceError(
            f"a template file without a tokenizer needs --tokenizer DIR (no base tokenizer to derive from: {exc})",
            rule="source-tokenizer",
        ) from None
    return fixtures.derive_tokenizer(tok, template)
