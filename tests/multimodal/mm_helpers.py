"""Shared helpers for the multimodal tests: the vision stack check, tiny vision-language models, images, and the
ground truth from the model's own Hugging Face processor.

The ground truth never goes through swift-ext: for each trained assistant turn *i* it is
``processor(text=apply_chat_template(messages[:i], add_generation_prompt=True), images=<images of messages[:i]>)``
(the prompt an inference server feeds the model, placeholders expanded by the processor), and the tokens the
template renders for the turn after that prompt through its stop string (what the model generates).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]


def require_vision() -> None:
    """Skip the calling module, saying why, unless ms-swift, torchvision and qwen_vl_utils all import (the
    multimodal environment: PyPI's default torch / torchvision builds, see docs/ms_swift.md#multimodal)."""
    try:
        import qwen_vl_utils  # noqa: F401
        import swift.template  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as exc:  # ImportError, or torchvision's operators failing against a CPU-only torch
        pytest.skip(f"the multimodal stack is not importable here ({exc!r}); tests/multimodal need ms-swift, "
                    "torchvision and qwen_vl_utils (the .ci/multimodal environment)", allow_module_level=True)


def gradient(width: int, height: int, seed: int = 0):
    """A smooth RGB image (a gradient with a seed-dependent tint): resampling filters agree closely on it."""
    from PIL import Image

    image = Image.new("RGB", (width, height))
    pixels = image.load()
    for x in range(width):
        for y in range(height):
            pixels[x, y] = ((x * 255) // max(width - 1, 1), (y * 255) // max(height - 1, 1), (seed * 67) % 256)
    return image


def media_parts(content) -> list[str]:
    """The media kinds of a message's content parts, in order."""
    if not isinstance(content, list):
        return []
    return [p["type"].removesuffix("_url") for p in content
            if isinstance(p, dict) and p.get("type", "").removesuffix("_url") in ("image", "video")]


def oracle_turns(processor, messages, images, stops, tools=None, videos=None, video_kwargs=None, kwargs=None):
    """Ground truth per trained assistant turn: ``prompt_ids`` (the processor's, media expanded),
    ``completion_ids``, and the processor's ``media`` output (grids, pixel values) for the turn's prompt.
    ``video_kwargs`` go to the processor with the videos (a ``video_metadata`` list: one entry per video)."""
    tok = processor.tokenizer
    out = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("loss") is False:
            continue
        prompt = tok.apply_chat_template(messages[:i], tools=tools, tokenize=False, add_generation_prompt=True,
                                         **(kwargs or {}))
        full = tok.apply_chat_template(messages[:i + 1], tools=tools, tokenize=False, **(kwargs or {}))
        # What the model generates after the prompt: the turn's rendering after what the prompt already holds
        # (all of the prompt for Qwen; Gemma-4's thinking-off prompt ends in an empty thought block its rendered
        # turns never carry, so the rendering goes on from where the two part)
        common = 0
        while common < min(len(prompt), len(full)) and prompt[common] == full[common]:
            common += 1
        rest = full[common:]
        completion = rest[:min(rest.find(s) + len(s) for s in stops if s in rest)]
        kinds = [k for m in messages[:i] for k in media_parts(m.get("content"))]
        n_images, n_videos = kinds.count("image"), kinds.count("video")
        per_video = {k: v[:n_videos] if k == "video_metadata" else v for k, v in (video_kwargs or {}).items()}
        media = processor(text=[prompt], images=images[:n_images] or None, add_special_tokens=False,
                          videos=(videos or [])[:n_videos] or None, return_tensors="pt",
                          **(per_video if n_videos else {}))
        out.append({"index": i, "prompt_ids": media.pop("input_ids")[0].tolist(), "media": dict(media),
                    "completion_ids": tok(completion, add_special_tokens=False)["input_ids"],
                    "n_images": n_images, "n_videos": n_videos})
    return out


def match_turns(samples, turns):
    """For each oracle turn, the index of the sample that holds it exactly (its prompt, then its completion
    labelled); asserts every labelled token of every sample belongs to one such turn."""
    where = []
    covered = [set() for _ in samples]
    for turn in turns:
        p, c = turn["prompt_ids"], turn["completion_ids"]
        for k, sample in enumerate(samples):
            ids, labels = list(sample["input_ids"]), list(sample["labels"])
            if ids[:len(p)] == p and ids[len(p):len(p) + len(c)] == c and labels[len(p):len(p) + len(c)] == c:
                where.append(k)
                covered[k].update(range(len(p), len(p) + len(c)))
                break
        else:
            raise AssertionError(f"no sample holds turn {turn['index']} exactly")
    for k, sample in enumerate(samples):
        stray = [j for j, x in enumerate(sample["labels"]) if x != -100 and j not in covered[k]]
        assert not stray, f"sample {k} labels positions outside any exact completion: {stray[:10]}"
    return where

