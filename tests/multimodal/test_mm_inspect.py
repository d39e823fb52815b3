"""``swift-ext inspect`` on a vision-language model folder: one marker per image with the number of tokens the
model's processor expands it into (``[image 1: 6 tokens]``), instead of the processor's pad tokens."""

from __future__ import annotations

import json
import re

from mm_helpers import gradient, require_vision

require_vision()

from swift_ext.cli import main  # noqa: E402
from swift_ext.dev import testing, tiny  # noqa: E402


def test_inspect_shows_each_image_with_its_processor_token_count(tmp_path, capsys):
    testing.fixture_dir("qwen3_5")
    model = tiny.build_tiny_vl_model("qwen3_5", tmp_path / "model")
    paths = []
    for k, size in enumerate([(96, 64), (70, 50)]):
        paths.append(str(tmp_path / f"img{k}.png"))
        gradient(*size, k).save(paths[-1])
    row = {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": paths[0]}},
                                     {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": paths[1]}},
                                     {"type": "text", "text": "And this?"}]},
        {"role": "assistant", "content": "Green."}]}
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    page = tmp_path / "page.html"
    capsys.readouterr()
    assert main(["inspect", str(model), str(data), "--no-ids", "--html", str(page)]) == 0
    out = capsys.readouterr().out

    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model))
    grids = processor.image_processor(images=[Image.open(p) for p in paths], return_tensors="pt")["image_grid_thw"]
    tokens = [int(g.prod()) // processor.image_processor.merge_size ** 2 for g in grids]  # 6 and 4
    assert f"[image 1: {tokens[0]} tokens]" in out and f"[image 2: {tokens[1]} tokens]" in out
    assert "<|image_pad|>" not in out
    text = page.read_text(encoding="utf-8")
    assert re.findall(r'<span class="txt">(\[image [^<]*)</span>', text).count(f"[image 2: {tokens[1]} tokens]") >= 1


def test_inspect_reads_image_tags_with_an_images_column(tmp_path, capsys):
    """ms-swift's own form: ``<image>`` tags where each image goes, the files in the ``images`` column."""
    testing.fixture_dir("qwen3_5")
    model = tiny.build_tiny_vl_model("qwen3_5", tmp_path / "model")
    paths = []
    for k, size in enumerate([(64, 96), (128, 64)]):
        paths.append(str(tmp_path / f"img{k}.png"))
        gradient(*size, k).save(paths[-1])
    row = {"messages": [{"role": "user", "content": "<image>What colour?"},
                        {"role": "assistant", "content": "Red."},
                        {"role": "user", "content": "And <image>this?"},
                        {"role": "assistant", "content": "Green."}], "images": paths}
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["inspect", str(model), str(data), "--no-ids"]) == 0
    out = capsys.readouterr().out

    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model))
    grids = processor.image_processor(images=[Image.open(p) for p in paths], return_tensors="pt")["image_grid_thw"]
    tokens = [int(g.prod()) // processor.image_processor.merge_size ** 2 for g in grids]
    assert tokens[0] != tokens[1]
    assert f"[image 1: {tokens[0]} tokens]" in out and f"[image 2: {tokens[1]} tokens]" in out
    assert "<|image_pad|>" not in out
