"""Tiny random models built from a fixture's tokenizer: real token ids, one small layer, trainable on a CPU.

Used by the CPU training examples (``examples/``) and the end-to-end tests. No model hub is involved: the
tokenizer files come through ``swift_ext.dev.fixtures`` and the weights are randomly initialised.

A tiny model has a plain text architecture (``Qwen3ForCausalLM`` or ``LlamaForCausalLM``), so ms-swift must be
told its model type (``--model_type qwen3`` / ``llama``); a real checkpoint carries its own ``config.json`` and
needs no such flag.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from . import fixtures

ARCHITECTURES = ("qwen3", "llama")
"""``model_type`` of the tiny model; also the value of ms-swift's ``--model_type`` for it."""


def copy_tokenizer_files(fixture_name: str, out_dir: Path) -> Path:
    """The fixture's tokenizer and template files, copied into ``out_dir`` (a scratch model folder). A
    template-only fixture (Gemma-4) gets its derived tokenizer saved there, so a loader finds the same tokens."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fixtures.is_template_only(fixture_name):
        fixtures.load_tokenizer(fixture_name).save_pretrained(str(out_dir))
    for item in fixtures.fixture_dir(fixture_name).iterdir():
        if item.is_file():
            shutil.copyfile(item, out_dir / item.name)
    return out_dir


def tiny_config(fixture_name: str, arch: str = "qwen3", **extra: Any) -> Any:
    """A one-layer config of architecture ``arch`` sized to the fixture tokenizer's vocabulary."""
    from transformers import LlamaConfig, Qwen3Config

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    config_cls = {"qwen3": Qwen3Config, "llama": LlamaConfig}[arch]
    vocab_size = len(fixtures.load_tokenizer(fixture_name))
    return config_cls(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, **extra)


def build_tokenizer_dir(fixture_name: str, out_dir: Path, arch: str = "qwen3") -> Path:
    """Tokenizer files plus a tiny ``config.json``: enough for ms-swift's ``get_model_processor(load_model=False)``."""
    copy_tokenizer_files(fixture_name, out_dir)
    tiny_config(fixture_name, arch).save_pretrained(str(out_dir))
    return out_dir


def build_tiny_model(fixture_name: str, out_dir: Path, arch: str = "qwen3", seed: int = 0) -> Path:
    """A randomly initialised one-layer model (a few MB) beside a copy of the fixture's tokenizer files."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = fixtures.load_tokenizer(fixture_name)
    copy_tokenizer_files(fixture_name, out_dir)
    config = tiny_config(fixture_name, arch, max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(out_dir))
    return out_dir
