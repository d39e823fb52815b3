"""``swift-ext inspect`` on a vision-language model folder: one marker per image with the number of tokens the
model's processor expands it into (``[image 1: 6 tokens]``), instead of the processor's pad tokens."""

from __future__ import annotations

import json
import re

from mm_helpers import gradient, require_vision

require_vision()

from swift_ext.cli import main  # noqa: E402
from swift_ext.dev import testing, tiny  # noqa: E402


def _images(folder, sizes) -> list[str]:
    """Gradient PNGs of these (width, height) sizes in ``folder``."""
    paths = []
    for k, size in enumerate(sizes):
        paths.append(str(folder / f"img{k}.png"))
        gradient(*size, k).save(paths[-1])
    return paths


def _inspect(tmp_path, capsys, row, *args) -> tuple[str, list[int]]:
    """``swift-ext inspect`` of ``row`` on a tiny Qwen3.5 VL model: its terminal output, and each image's token
    count from the model's own processor (image paths: ``row``'s ``images`` column, or its ``image_url`` parts)."""
    testing.fixture_dir("qwen3_5")
    model = tiny.build_tiny_vl_model("qwen3_5", tmp_path / "model")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["inspect", str(model), str(data), "--no-ids", *args]) == 0
    out = capsys.readouterr().out

    from PIL import Image
    from transformers import AutoProcessor

    paths = row.get("images") or [p["image_url"]["url"] for m in row["messages"] if isinstance(m["content"], list)
                                   for p in m["content"] if p["type"] == "image_url"]
    processor = AutoProcessor.from_pretrained(str(model))
    grids = processor.image_processor(images=[Image.open(p) for p in paths], return_tensors="pt")["image_grid_thw"]
    return out, [int(g.prod()) // processor.image_processor.merge_size ** 2 for g in grids]


def test_inspect_shows_each_image_with_its_processor_token_count(tmp_path, capsys):
    paths = _images(tmp_path, [(96, 64), (70, 50)])
    row = {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": paths[0]}},
                                     {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": paths[1]}},
                                     {"type": "text", "text": "And this?"}]},
        {"role": "assistant", "content": "Green."}]}
    page = tmp_path / "page.html"
    out, tokens = _inspect(tmp_path, capsys, row, "--html", str(page))  # 6 and 4 tokens
    assert f"[image 1: {tokens[0]} tokens]" in out and f"[image 2: {tokens[1]} tokens]" in out
    assert "<|image_pad|>" not in out
    text = page.read_text(encoding="utf-8")
    assert re.findall(r'<span class="txt">(\[image [^<]*)</span>', text).count(f"[image 2: {tokens[1]} tokens]") >= 1


def test_inspect_reads_image_tags_with_an_images_column(tmp_path, capsys):
    """ms-swift's own form: ``<image>`` tags where each image goes, the files in the ``images`` column."""
    row = {"messages": [{"role": "user", "content": "<image>What colour?"},
                        {"role": "assistant", "content": "Red."},
                        {"role": "user", "content": "And <image>this?"},
                        {"role": "assistant", "content": "Green."}],
           "images": _images(tmp_path, [(64, 96), (128, 64)])}
    out, tokens = _inspect(tmp_path, capsys, row)
    assert tokens[0] != tokens[1]
    assert f"[image 1: {tokens[0]} tokens]" in out and f"[image 2: {tokens[1]} tokens]" in out
    assert "<|image_pad|>" not in out
