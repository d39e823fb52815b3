"""End to end on CPU: ``swift sft`` 2 steps on a tiny random vision-language model (built from a fixture's
tokenizer, processor configs beside it) with a small generated image dataset, in lazy and pre-tokenized mode,
then ``swift infer`` with an image on the checkpoint. Every batch's media must be exactly its samples' images:
the number of image tokens equals what ``image_grid_thw`` says (Qwen), or each image's run of soft tokens is the
processor's count for that image and its ``image_position_ids`` (Gemma-4), sample by sample. Gemma-4 trains
through swift-ext's compatibility shim for ms-swift 4.6's forward (``swift_ext/ms_swift/compat.py``), tested
here in process as well."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from mm_helpers import gradient, require_vision

require_vision()

import swift_ext.ms_swift as ms  # noqa: E402
from swift_ext.dev import testing, tiny  # noqa: E402
from swift_ext.dev.runs import run_swift, subprocess_env  # noqa: E402
from swift_ext.ms_swift import compat  # noqa: E402

DUMP_PLUGIN = '''
import json, os
from swift.template import Template
_orig = Template.data_collator
def data_collator(self, batch, *, padding_to=None):
    if os.environ.get("SWIFT_EXT_TEST_DUMP"):
        with open(os.environ["SWIFT_EXT_TEST_DUMP"], "a") as f:
            for b in batch:
                grid = b.get("image_grid_thw")
                pixels = b.get("pixel_values")
                positions = b.get("image_position_ids")  # Gemma-4: per image, its patches' (x, y); (-1, -1) pads
                f.write(json.dumps({"input_ids": [int(x) for x in b["input_ids"]],
                                    "labels": [int(x) for x in b["labels"]],
                                    "image_grid_thw": None if grid is None else grid.tolist(),
                                    "pixel_shape": None if pixels is None else list(pixels.shape),
                                    "image_patches": None if positions is None
                                    else (positions != -1).all(-1).sum(-1).tolist()}) + "\\n")
    return _orig(self, batch, padding_to=padding_to)
Template.data_collator = data_collator
'''


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
    """Tiny vision-language model folders by (fixture, architecture), each built once in this module (a Gemma-4
    one takes about 20 s, most of it deriving its tokenizer); training writes elsewhere, so tests share them."""
    built = {}

    def build(fixture_name: str, arch: str) -> Path:
        testing.fixture_dir(fixture_name)
        if (fixture_name, arch) not in built:
            out = tmp_path_factory.mktemp(f"{fixture_name}-{arch}") / "model"
            built[fixture_name, arch] = tiny.build_tiny_vl_model(fixture_name, out, arch)
        return built[fixture_name, arch]

    return build


def dataset(folder: Path) -> Path:
    """Two conversations: images in two user turns (ms-swift's ``<image>`` tags), and OpenAI ``image_url``
    parts with reasoning and a tool call between."""
    paths = []
    for k, (w, h) in enumerate([(96, 64), (70, 50), (64, 128)]):
        paths.append(str(folder / f"img{k}.png"))
        gradient(w, h, k).save(paths[-1])
    rows = [
        {"messages": [{"role": "user", "content": "<image>What colour is this?"},
                      {"role": "assistant", "content": "Red.", "reasoning_content": "Mostly red."},
                      {"role": "user", "content": "And <image>this one?"},
                      {"role": "assistant", "content": "Green.", "reasoning_content": "Mostly green."}],
         "images": paths[:2]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": paths[2]}},
                                                   {"type": "text", "text": "Name it."}]},
                      {"role": "assistant", "content": "", "reasoning_content": "Use the tool.",
                       "tool_calls": [{"type": "function",
                                       "function": {"name": "lookup", "arguments": '{"rgb": "0000ff"}'}}]},
                      {"role": "tool", "content": "blue"},
                      {"role": "assistant", "content": "Blue.", "reasoning_content": "The tool says blue."}],
         "tools": [{"type": "function", "function": {"name": "lookup", "description": "Colour name",
                                                     "parameters": {"type": "object", "properties": {
                                                         "rgb": {"type": "string"}}}}}]},
    ]
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


SAMPLE_IMAGES = [[0], [0, 1], [2]]
"""The images of ``dataset``'s samples: history is rewritten at each user query, so the first conversation is 2
samples (1 image, then 2); the tool conversation has one query, one sample (1 image)."""

SHIM_WARNING = "[swift-ext] Gemma-4: ms-swift's forward expects one image-feature tensor"


def _image_runs(input_ids, image_token):
    """The lengths of the runs of ``image_token`` in ``input_ids``: one run per image, its image tokens."""
    return [len(list(run)) for token, run in itertools.groupby(input_ids) if token == image_token]


def _processor_image_tokens(model_dir: Path, folder: Path, image_token: int) -> list[int]:
    """How many image tokens the model's own processor gives each of ``dataset``'s images (not swift-ext)."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model_dir))
    return [processor(text=[processor.image_token], images=[Image.open(folder / f"img{k}.png")],
                      return_tensors="pt")["input_ids"][0].tolist().count(image_token) for k in range(3)]


def _media_matches_tokens(batch, config):
    """The batch's pixel values are exactly its samples' images: Qwen's image tokens are what
    ``image_grid_thw`` says (merge 2 x 2) and its patch rows their sum; Gemma-4's images are one pixel row
    each, as many as its runs of soft tokens and image-begin markers, and each image's real (unpadded) patches,
    pooled k x k, are its run of soft tokens."""
    if "boi_token_id" in config:  # Gemma-4
        runs = _image_runs(batch["input_ids"], config["image_token_id"])
        pooled = config["vision_config"]["pooling_kernel_size"] ** 2
        return (batch["pixel_shape"][0] == len(runs) == batch["input_ids"].count(config["boi_token_id"])
                and [patches // pooled for patches in batch["image_patches"]] == runs)
    patches = sum(t * h * w for t, h, w in batch["image_grid_thw"])
    return batch["input_ids"].count(config["image_token_id"]) == patches // 4 and batch["pixel_shape"][0] == patches


# Qwen3.6 and Gemma-4 lazily tokenized (about 2.5 minutes and 1 minute on 2 cores; Qwen3.5 goes pre-tokenized
# through the same loader in test_images.py). Gemma-4 trains through swift-ext's shim for ms-swift 4.6's forward
# with transformers >= 5.15 (swift_ext/ms_swift/compat.py; without it: AttributeError: 'tuple' object has no
# attribute 'to', before any loss), which logs its warning once.
@pytest.mark.parametrize("fixture_name,template,arch,lazy", [("qwen3_6", "qwen3_6_parity", "qwen3_5", True),
                                                             ("gemma4", "gemma4_parity", "gemma4", True)])
def test_swift_sft_and_infer_with_images(tmp_path, tiny_vl, fixture_name, template, arch, lazy):
    model_dir = tiny_vl(fixture_name, arch)
    data = dataset(tmp_path)
    (tmp_path / "dump_plugin.py").write_text(DUMP_PLUGIN)
    dump = tmp_path / "batches.jsonl"
    out = tmp_path / "out"
    argv = ["sft", "--model", str(model_dir), "--model_type", arch, "--template", template,
            "--template_backend", "jinja", "--external_plugins", ms.plugin_path(), str(tmp_path / "dump_plugin.py"),
            "--dataset", str(data), "--lazy_tokenize", str(lazy).lower(), "--tuner_type", "full",
            "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
            "--torch_dtype", "float32", "--output_dir", str(out), "--save_steps", "2", "--logging_steps", "1",
            "--split_dataset_ratio", "0", "--dataloader_num_workers", "0", "--report_to", "none", "--seed", "0",
            "--freeze_vit", "false", *(["--enable_thinking", "true"] if arch == "gemma4" else []),
            # no modelscope "is the local model the latest" lookup (offline: about 7 s of retries a run)
            "--check_model", "false"]
    run_swift(argv, subprocess_env({"SWIFT_EXT_TEST_DUMP": str(dump)}), tmp_path / "sft.log")
    run = next(out.iterdir())
    logs = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    losses = [float(x["loss"]) for x in logs if "loss" in x]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses), losses
    sft_log = (tmp_path / "sft.log").read_text(errors="replace")
    assert sft_log.count(SHIM_WARNING) == (1 if arch == "gemma4" else 0)

    config = json.loads((model_dir / "config.json").read_text())
    batches = [json.loads(line) for line in dump.read_text().splitlines()]
    distinct = {json.dumps(b["input_ids"]): b for b in batches}
    assert len(distinct) == 3
    assert all(_media_matches_tokens(b, config) for b in batches)
    # each sample's images, in order, with exactly as many image tokens as the model's processor gives each
    image_token = config["image_token_id"]
    counts = _processor_image_tokens(model_dir, tmp_path, image_token)
    assert sorted(_image_runs(b["input_ids"], image_token) for b in distinct.values()) == sorted(
        [counts[k] for k in images] for images in SAMPLE_IMAGES)

    ckpt = next(p for p in run.iterdir() if p.name.startswith("checkpoint-"))
    infer_data = tmp_path / "infer.jsonl"
    infer_data.write_text(json.dumps({"messages": [{"role": "user", "content": "<image>What colour?"}],
                                      "images": [str(tmp_path / "img1.png")]}) + "\n")
    log = tmp_path / "infer.log"
    run_swift(["infer", "--model", str(ckpt), "--infer_backend", "transformers", "--val_dataset", str(infer_data),
            "--max_new_tokens", "4", "--result_path", str(tmp_path / "infer_result.jsonl"),
            "--torch_dtype", "float32"], subprocess_env(), log)
    text = log.read_text(errors="replace")
    assert ms.plugin_path() in text and template in text
    result = json.loads((tmp_path / "infer_result.jsonl").read_text().splitlines()[0])
    assert "response" in result


# ------------------------------------------------------------------------------ Gemma-4 image-feature shim
def test_gemma4_shim_gives_ms_swift_forward_what_transformers_forward_gives(tiny_vl):
    """ms-swift 4.6's Gemma-4 forward fails on transformers' per-image image features (a tuple since 5.15); with
    swift-ext's shim its logits are those of transformers' own forward, two images of different sizes. If the
    failure stops (a fixed ms-swift or transformers), the shim's version gate needs a look."""
    import torch
    from swift.model.models import gemma
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = tiny_vl("gemma4", "gemma4")
    processor = AutoProcessor.from_pretrained(str(model_dir))
    inputs = processor(text=[f"A {processor.image_token} and {processor.image_token}."],
                       images=[gradient(96, 64, 0), gradient(64, 128, 2)], return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model(**inputs).logits  # transformers' own forward, before ms-swift patches the model
    ms_swift_patch = getattr(gemma._patch_gemma4_forward, "__wrapped_by_swift_ext__", gemma._patch_gemma4_forward)
    ms_swift_patch(model.model, processor)  # what ms-swift's Gemma-4 loader does, without swift-ext
    with torch.no_grad(), pytest.raises(AttributeError, match="'tuple' object has no attribute 'to'"):
        model(**inputs)
    compat.concatenate_image_features(model.model)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, expected)


def test_gemma4_shim_only_for_the_ms_swift_it_was_read_in():
    """The shim wraps ms-swift's Gemma-4 patch on ms-swift 4.6 only (a later release may concatenate the tuple
    itself), once; the models it patches then get one tensor for a tuple, and a tensor unchanged."""
    import types

    import torch

    def patch(model, processor):
        model.patched = processor

    for version, wraps in (("4.6.0", True), ("4.6.0.dev0", True), ("4.7.0", False), ("4.60.0", False)):
        module = types.SimpleNamespace(_patch_gemma4_forward=patch)
        assert compat.install_gemma4_image_features(module, swift_version=version) is wraps
        assert (module._patch_gemma4_forward is not patch) is wraps, version
    module = types.SimpleNamespace(_patch_gemma4_forward=patch)
    compat.install_gemma4_image_features(module, swift_version="4.6.0")
    wrapped = module._patch_gemma4_forward
    assert compat.install_gemma4_image_features(module, swift_version="4.6.0")  # again: nothing changes
    assert module._patch_gemma4_forward is wrapped

    parts = (torch.ones(2, 3), torch.zeros(1, 3))
    for pooled, expected in ((parts, torch.cat(parts)), (torch.ones(4, 3), torch.ones(4, 3))):
        model = types.SimpleNamespace(get_image_features=lambda *a, _p=pooled, **k: types.SimpleNamespace(
            pooler_output=_p))
        wrapped(model, "processor")
        assert model.patched == "processor"
        torch.testing.assert_close(model.get_image_features("pixels").pooler_output, expected)
