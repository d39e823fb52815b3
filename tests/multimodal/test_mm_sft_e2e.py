"""End to end on CPU: ``swift sft`` 2 steps on a tiny random vision-language model (built from a fixture's
tokenizer, processor configs beside it) with a small generated image dataset, in lazy and pre-tokenized mode,
then ``swift infer`` with an image on the checkpoint. Every batch's media must be exactly its samples' images:
the number of image tokens equals what ``image_grid_thw`` says, sample by sample."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mm_helpers import REPO_ROOT, gradient, require_vision

require_vision()

import swift_ext.ms_swift as ms  # noqa: E402
from swift_ext.dev import testing, tiny  # noqa: E402

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
                f.write(json.dumps({"input_ids": [int(x) for x in b["input_ids"]],
                                    "labels": [int(x) for x in b["labels"]],
                                    "image_grid_thw": None if grid is None else grid.tolist(),
                                    "pixel_shape": None if pixels is None else list(pixels.shape)}) + "\\n")
    return _orig(self, batch, padding_to=padding_to)
Template.data_collator = data_collator
'''


def _env(extra=None):
    env = dict(os.environ)
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("USE_HF", "1")
    return env


def _swift(args, env, log: Path):
    cmd = [sys.executable, "-m", "swift.cli.main", *args]
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    assert proc.returncode == 0, f"swift {args[0]} failed; last lines:\n" + "\n".join(
        log.read_text(errors="replace").splitlines()[-40:])


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


def _media_matches_tokens(batch, config):
    """The batch's pixel values are exactly its samples' images: Qwen's image tokens are what
    ``image_grid_thw`` says (merge 2 x 2) and its patch rows their sum; Gemma-4's images are one pixel row
    each, as many as the image-begin markers its processor wrote."""
    if "boi_token_id" in config:  # Gemma-4
        return batch["pixel_shape"][0] == batch["input_ids"].count(config["boi_token_id"])
    patches = sum(t * h * w for t, h, w in batch["image_grid_thw"])
    return batch["input_ids"].count(config["image_token_id"]) == patches // 4 and batch["pixel_shape"][0] == patches


# Qwen3.6 lazily tokenized (about 2.5 minutes on 2 cores; Qwen3.5 goes pre-tokenized through the same loader in
# test_images.py). Gemma-4 cannot train here: ms-swift 4.6's Gemma-4 forward (swift/model/models/gemma.py) calls
# `.to` on `get_image_features(...).pooler_output`, which transformers 5.19 returns as a tuple of per-image
# tensors (AttributeError: 'tuple' object has no attribute 'to'), before any loss; its samples are checked against
# the processor in test_images.py.
@pytest.mark.parametrize("fixture_name,template,arch,lazy", [("qwen3_6", "qwen3_6_parity", "qwen3_5", True)])
def test_swift_sft_and_infer_with_images(tmp_path, fixture_name, template, arch, lazy):
    testing.fixture_dir(fixture_name)
    model_dir = tiny.build_tiny_vl_model(fixture_name, tmp_path / "model", arch)
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
            "--freeze_vit", "false", *(["--enable_thinking", "true"] if arch == "gemma4" else [])]
    _swift(argv, _env({"SWIFT_EXT_TEST_DUMP": str(dump)}), tmp_path / "sft.log")
    run = next(out.iterdir())
    logs = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    losses = [float(x["loss"]) for x in logs if "loss" in x]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses), losses

    config = json.loads((model_dir / "config.json").read_text())
    batches = [json.loads(line) for line in dump.read_text().splitlines()]
    # 3 samples: history is rewritten at each user query, so the first conversation is 2 (1 image, then 2);
    # the tool conversation has one query, one sample (1 image)
    distinct = {json.dumps(b["input_ids"]): b for b in batches}
    assert len(distinct) == 3
    assert all(_media_matches_tokens(b, config) for b in batches)
    image_token = config["image_token_id"]
    assert sorted(b["input_ids"].count(image_token) > 0 for b in distinct.values()) == [True] * 3

    ckpt = next(p for p in run.iterdir() if p.name.startswith("checkpoint-"))
    infer_data = tmp_path / "infer.jsonl"
    infer_data.write_text(json.dumps({"messages": [{"role": "user", "content": "<image>What colour?"}],
                                      "images": [str(tmp_path / "img1.png")]}) + "\n")
    log = tmp_path / "infer.log"
    _swift(["infer", "--model", str(ckpt), "--infer_backend", "transformers", "--val_dataset", str(infer_data),
            "--max_new_tokens", "4", "--result_path", str(tmp_path / "infer_result.jsonl"),
            "--torch_dtype", "float32"], _env(), log)
    text = log.read_text(errors="replace")
    assert ms.plugin_path() in text and template in text
    result = json.loads((tmp_path / "infer_result.jsonl").read_text().splitlines()[0])
    assert "response" in result
