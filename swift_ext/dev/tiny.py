"""Tiny random models built from a fixture's tokenizer: real token ids, one small layer, trainable on a CPU.

Used by the CPU training examples (``examples/``) and the end-to-end tests. No model hub is involved: the
tokenizer files come through ``swift_ext.dev.fixtures`` and the weights are randomly initialised.

A tiny model has a plain text architecture (``Qwen3ForCausalLM`` or ``LlamaForCausalLM``), so ms-swift must be
told its model type (``--model_type qwen3`` / ``llama``); a real checkpoint carries its own ``config.json`` and
needs no such flag. ``build_tiny_vl_model`` builds a vision-language one (Qwen3.5 architecture for the Qwen3.5 /
Qwen3.6 fixtures, Gemma-4's for the Gemma-4 ones) with its processor's config files, for the multimodal tests.
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


# ----------------------------------------------------------------------------------------- vision-language models
VL_ARCHITECTURES = ("qwen3_5", "gemma4")
"""``model_type`` of a tiny vision-language model; also ms-swift's ``--model_type`` for it (Qwen3.5 and Qwen3.6
dense checkpoints are both ``qwen3_5``: Qwen/Qwen3.6-27B's config says so)."""

# Gemma-4's processor finds its media tokens by these tokenizer attributes (google/gemma-4-*-it's
# tokenizer_config.json). The fixture's tokenizer is derived from Gemma-3's, whose attributes name Gemma-3's
# tokens, and the template never writes the begin/end markers: they are added here, as special tokens.
_GEMMA4_MEDIA_TOKENS = {"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
                        "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>"}
_GEMMA4_SOFT_TOKENS = 70
"""Image soft tokens at most (the published processor: 280); a multiple of 9 pooled patches, scaled down."""

# Qwen/Qwen3.5-4B's preprocessor_config.json / video_preprocessor_config.json, as published: the Qwen2-VL image
# processor with patch 16, merge 2, temporal patch 2. Only ``size`` is smaller here (the published minimum is
# 65536 pixels, 64 tokens an image; a tiny model on a CPU wants a few tokens), so the tests' small images keep
# their size; every other field is the model's.
_QWEN3_5_IMAGE = {
    "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class": "Qwen3VLProcessor",
    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "do_resize": True, "do_convert_rgb": True,
    "size": {"shortest_edge": 32 * 32, "longest_edge": 128 * 32 * 32},
}
_QWEN3_5_VIDEO = {
    "video_processor_type": "Qwen3VLVideoProcessor", "processor_class": "Qwen3VLProcessor",
    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "do_resize": True, "do_convert_rgb": True, "do_sample_frames": True,
    "fps": 2, "min_frames": 4, "max_frames": 8,
    "size": {"shortest_edge": 32 * 32, "longest_edge": 8 * 128 * 32 * 32},
}


def _gemma4_tokenizer(fixture_name: str, out_dir: Path) -> Any:
    """The fixture's (derived) tokenizer with Gemma-4's media tokens, saved in ``out_dir`` and loaded back."""
    import json

    from transformers import AutoTokenizer

    copy_tokenizer_files(fixture_name, out_dir)
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    tok.add_special_tokens({"additional_special_tokens": [*_GEMMA4_MEDIA_TOKENS.values(), "<|video|>"]},
                           replace_extra_special_tokens=False)
    tok.save_pretrained(str(out_dir))
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(_GEMMA4_MEDIA_TOKENS)
    config["model_specific_special_tokens"] = {**(config.get("model_specific_special_tokens") or {}),
                                               **_GEMMA4_MEDIA_TOKENS}
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(out_dir))


def _gemma4_vl_config(tok: Any) -> Any:
    from transformers import Gemma4Config

    ids = {f"{key[:-len('_token')]}_token_id": tok.convert_tokens_to_ids(token)
           for key, token in _GEMMA4_MEDIA_TOKENS.items()}
    text = {"vocab_size": len(tok), "vocab_size_per_layer_input": len(tok), "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 16, "hidden_size_per_layer_input": 0, "layer_types": ["full_attention"],
            "max_position_embeddings": 4096, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.bos_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 2, "head_dim": 16, "patch_size": 16, "pooling_kernel_size": 3,
              "position_embedding_size": 1024}
    return Gemma4Config(text_config=text, vision_config=vision, audio_config=None,
                        video_token_id=tok.convert_tokens_to_ids("<|video|>"), **ids)


def _gemma4_processor(tok: Any) -> Any:
    from transformers import Gemma4ImageProcessor, Gemma4Processor, Gemma4VideoProcessor
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor

    return Gemma4Processor(feature_extractor=Gemma4AudioFeatureExtractor(), tokenizer=tok,
                           image_processor=Gemma4ImageProcessor(max_soft_tokens=_GEMMA4_SOFT_TOKENS),
                           video_processor=Gemma4VideoProcessor(), image_seq_length=_GEMMA4_SOFT_TOKENS)


def tiny_vl_config(fixture_name: str, arch: str = "qwen3_5") -> Any:
    """A one-layer vision-language config (text and vision tower) sized to the fixture tokenizer, with the
    media token ids the tokenizer gives ``<|image_pad|>`` / ``<|video_pad|>`` / ``<|vision_start|>`` /
    ``<|vision_end|>``."""
    from transformers import Qwen3_5Config

    if arch not in VL_ARCHITECTURES:
        raise ValueError(f"arch must be one of {VL_ARCHITECTURES}, got {arch!r}")
    tok = fixtures.load_tokenizer(fixture_name)
    ids = {key: tok.convert_tokens_to_ids(token) for key, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    # head_dim 16 with a quarter of it rotary (the published partial_rotary_factor): 4 rotary dims, split over
    # time/height/width as the real mrope_section [11, 11, 10] splits 32.
    text = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "layer_types": ["full_attention"],
            "max_position_embeddings": 4096, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                                "mrope_section": [1, 1, 0], "mrope_interleaved": True}}
    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 32,
              "num_position_embeddings": 64}
    return Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def write_processor_configs(out_dir: Path, arch: str = "qwen3_5") -> Path:
    """The processor's config files (image, video, processor) of ``arch``, into a model folder."""
    import json

    files = {"preprocessor_config.json": _QWEN3_5_IMAGE, "video_preprocessor_config.json": _QWEN3_5_VIDEO,
             "processor_config.json": {"processor_class": "Qwen3VLProcessor"}}
    for name, data in files.items():
        (out_dir / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return out_dir


def build_tiny_vl_model(fixture_name: str, out_dir: Path, arch: str = "qwen3_5", seed: int = 0) -> Path:
    """A randomly initialised one-layer vision-language model (``Qwen3_5ForConditionalGeneration``, or
    ``Gemma4ForConditionalGeneration`` with ``arch="gemma4"``), the fixture's tokenizer files and the processor
    configs, in ``out_dir``: what ``AutoProcessor`` and ms-swift's ``--model_type <arch>`` load."""
    import torch
    from transformers import AutoModelForImageTextToText

    if arch not in VL_ARCHITECTURES:
        raise ValueError(f"arch must be one of {VL_ARCHITECTURES}, got {arch!r}")
    torch.manual_seed(seed)
    if arch == "gemma4":
        tok = _gemma4_tokenizer(fixture_name, out_dir)
        _gemma4_processor(tok).save_pretrained(str(out_dir))
        config = _gemma4_vl_config(tok)
    else:
        copy_tokenizer_files(fixture_name, out_dir)
        write_processor_configs(out_dir, arch)
        config = tiny_vl_config(fixture_name, arch)
    AutoModelForImageTextToText.from_config(config).save_pretrained(str(out_dir))
    return out_dir
