"""End to end on CPU with video: ``swift sft`` 2 steps on a tiny random Qwen3.5 vision-language model (built from
the fixture's tokenizer, processor configs beside it; test_mm_sft_e2e.py trains Qwen3.6 with images) with
generated videos (a list of frame files, and an .mp4), then ``swift infer`` with a video on the checkpoint. Every
batch's video tokens are exactly what its ``video_grid_thw`` says, each sample's videos its own, and no vision
marker is doubled (before: ms-swift wrote the template's ``<|vision_start|>`` / ``<|vision_end|>`` around a video
twice)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mm_helpers import gradient, require_vision

require_vision()

import swift_ext.ms_swift as ms  # noqa: E402
from swift_ext.dev import testing, tiny  # noqa: E402
from swift_ext.dev.runs import run_swift, subprocess_env  # noqa: E402

DUMP_PLUGIN = '''
import json, os
from swift.template import Template
_orig = Template.data_collator
def data_collator(self, batch, *, padding_to=None):
    with open(os.environ["SWIFT_EXT_TEST_DUMP"], "a") as f:
        for b in batch:
            grid = b.get("video_grid_thw")
            pixels = b.get("pixel_values_videos")
            f.write(json.dumps({"input_ids": [int(x) for x in b["input_ids"]],
                                "video_grid_thw": None if grid is None else grid.tolist(),
                                "pixel_rows": None if pixels is None else int(pixels.shape[0])}) + "\\n")
    return _orig(self, batch, padding_to=padding_to)
Template.data_collator = data_collator
'''


def _frames(folder: Path, name: str, count: int, size=(64, 64)) -> list[str]:
    paths = []
    for k in range(count):
        paths.append(str(folder / f"{name}_{k}.png"))
        gradient(*size, k * 3).save(paths[-1])
    return paths


def _mp4(path: Path) -> str:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for k in range(20):
            frame = np.full((64, 96, 3), k * 12, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def dataset(folder: Path) -> Path:
    """A video (frames) then a second video (an .mp4) in two user turns: two samples (history rewriting), with 1
    and 2 videos; and a row with a video and an image."""
    rows = [
        {"messages": [{"role": "user", "content": "<video>What happens?"},
                      {"role": "assistant", "content": "It brightens.", "reasoning_content": "Values grow."},
                      {"role": "user", "content": "And in <video>this one?"},
                      {"role": "assistant", "content": "Grey.", "reasoning_content": "Flat frames."}],
         "videos": [_frames(folder, "a", 4), _mp4(folder / "b.mp4")]},
        {"messages": [{"role": "user", "content": "<image>Compare with <video>."},
                      {"role": "assistant", "content": "Alike.", "reasoning_content": "Same tint."}],
         "images": [_frames(folder, "img", 1, (64, 96))[0]], "videos": [_frames(folder, "c", 3, (96, 64))]},
    ]
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _videos_match_tokens(batch, config):
    """Video tokens are what ``video_grid_thw`` says (merge 2 x 2), patch rows their sum, and no
    ``<|vision_start|>`` follows another."""
    grids = batch["video_grid_thw"] or []
    patches = sum(t * h * w for t, h, w in grids)
    ids, start = batch["input_ids"], config["vision_start_token_id"]
    doubled = any(a == start and b == start for a, b in zip(ids, ids[1:]))
    return (ids.count(config["video_token_id"]) == patches // 4 and (batch["pixel_rows"] or 0) == patches
            and not doubled)


def test_swift_sft_and_infer_with_video(tmp_path):
    testing.fixture_dir("qwen3_5")
    model_dir = tiny.build_tiny_vl_model("qwen3_5", tmp_path / "model", "qwen3_5")
    data = dataset(tmp_path)
    (tmp_path / "dump_plugin.py").write_text(DUMP_PLUGIN)
    dump = tmp_path / "batches.jsonl"
    out = tmp_path / "out"
    argv = ["sft", "--model", str(model_dir), "--model_type", "qwen3_5", "--template", "qwen3_5_parity",
            "--template_backend", "jinja", "--external_plugins", ms.plugin_path(), str(tmp_path / "dump_plugin.py"),
            "--dataset", str(data), "--lazy_tokenize", "true", "--tuner_type", "full",
            "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
            "--torch_dtype", "float32", "--output_dir", str(out), "--save_steps", "2", "--logging_steps", "1",
            "--split_dataset_ratio", "0", "--dataloader_num_workers", "0", "--report_to", "none", "--seed", "0",
            "--freeze_vit", "false", "--check_model", "false"]
    run_swift(argv, subprocess_env({"SWIFT_EXT_TEST_DUMP": str(dump)}), tmp_path / "sft.log")
    run = next(out.iterdir())
    logs = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    losses = [float(x["loss"]) for x in logs if "loss" in x]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses), losses

    config = json.loads((model_dir / "config.json").read_text())
    batches = [json.loads(line) for line in dump.read_text().splitlines()]
    assert batches and all(_videos_match_tokens(b, config) for b in batches)
    distinct = {json.dumps(b["input_ids"]): b for b in batches}
    assert sorted(len(b["video_grid_thw"]) for b in distinct.values()) == [1, 1, 2]

    ckpt = next(p for p in run.iterdir() if p.name.startswith("checkpoint-"))
    infer_data = tmp_path / "infer.jsonl"
    infer_data.write_text(json.dumps({"messages": [{"role": "user", "content": "<video>What happens?"}],
                                      "videos": [_frames(tmp_path, "d", 4)]}) + "\n")
    infer_dump = tmp_path / "infer_batches.jsonl"
    log = tmp_path / "infer.log"
    run_swift(["infer", "--model", str(ckpt), "--infer_backend", "transformers", "--val_dataset", str(infer_data),
               "--max_new_tokens", "4", "--result_path", str(tmp_path / "infer_result.jsonl"),
               "--torch_dtype", "float32", "--external_plugins", ms.plugin_path(), str(tmp_path / "dump_plugin.py")],
              subprocess_env({"SWIFT_EXT_TEST_DUMP": str(infer_dump)}), log)
    text = log.read_text(errors="replace")
    assert ms.plugin_path() in text and "qwen3_5_parity" in text
    result = json.loads((tmp_path / "infer_result.jsonl").read_text().splitlines()[0])
    assert "response" in result
    prompts = [json.loads(line) for line in infer_dump.read_text().splitlines()]
    assert prompts and all(_videos_match_tokens(b, config) for b in prompts)
