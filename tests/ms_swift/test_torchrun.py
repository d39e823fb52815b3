"""``swift sft`` under torchrun with 2 CPU processes (``NPROC_PER_NODE=2``, gloo): every rank registers the parity
templates through ``--external_plugins``, trains on exact samples, and the run finishes.

ms-swift launches torchrun itself when ``NPROC_PER_NODE`` is set. A dump plugin (loaded after swift-ext's) records,
per rank, whether ``qwen3_6_parity`` is registered in that process and every batch the collator sees; rank 0's
first batch must consist of samples ``swift_ext.encode`` gives for the dataset's rows, ids and labels exactly, and
the two ranks' first batches must be different samples (DistributedSampler splits the data).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from swift_helpers import ROWS, build_tiny_model, load_tokenizer, require_swift

require_swift()

import swift_ext  # noqa: E402
import swift_ext.ms_swift as ms  # noqa: E402
from swift_ext.dev.runs import run_swift, subprocess_env  # noqa: E402

FIXTURE = "Qwen__Qwen3.6-35B-A3B"

DUMP_PLUGIN = '''
import json, os
import torch.distributed as dist
from swift.template import TEMPLATE_MAPPING, Template

_RANK = os.environ.get("RANK", "single")
_DUMP = os.environ["SWIFT_EXT_TEST_DUMP"]
with open(f"{_DUMP}.rank{_RANK}", "a") as f:  # swift-ext's plugin was imported before this one
    f.write(json.dumps({"registered": "qwen3_6_parity" in TEMPLATE_MAPPING, "pid": os.getpid()}) + "\\n")
_orig = Template.data_collator

def data_collator(self, batch, *, padding_to=None):
    backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
    with open(f"{_DUMP}.rank{_RANK}", "a") as f:
        f.write(json.dumps({"backend": backend, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                            "batch": [{"input_ids": [int(x) for x in b["input_ids"]],
                                       "labels": [int(x) for x in b["labels"]]} for b in batch]}) + "\\n")
    return _orig(self, batch, padding_to=padding_to)

Template.data_collator = data_collator
'''


def _exact_samples() -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every sample swift_ext.encode gives for the dataset, as (input_ids, labels)."""
    tok = load_tokenizer(FIXTURE)
    out = set()
    for row in ROWS:
        for sample in swift_ext.encode(tok, row["messages"], row.get("tools")):
            out.add((tuple(sample.input_ids), tuple(sample.labels)))
    return out


def test_swift_sft_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    model_dir = build_tiny_model(FIXTURE, tmp_path / "model", "qwen3")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS * 2), encoding="utf-8")
    dump_plugin = tmp_path / "dump_plugin.py"
    dump_plugin.write_text(DUMP_PLUGIN)
    dump = tmp_path / "dump"
    out = tmp_path / "out"
    argv = ["sft", "--model", str(model_dir), "--model_type", "qwen3", "--template", "qwen3_6_parity",
            "--template_backend", "jinja", "--external_plugins", ms.plugin_path(), str(dump_plugin),
            "--dataset", str(data), "--tuner_type", "full", "--max_steps", "3", "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-3", "--torch_dtype", "float32", "--output_dir", str(out),
            "--save_strategy", "no", "--logging_steps", "1", "--split_dataset_ratio", "0",
            "--dataloader_num_workers", "0", "--report_to", "none", "--seed", "0", "--ddp_backend", "gloo"]
    env = subprocess_env({"NPROC_PER_NODE": "2", "MASTER_PORT": str(29500 + os.getpid() % 1000),
                          "SWIFT_EXT_TEST_DUMP": str(dump)}, drop=("CUDA_VISIBLE_DEVICES",))
    log = tmp_path / "sft.log"
    run_swift(argv, env, log)
    text = log.read_text(errors="replace")
    assert "torchrun" in text or "torch.distributed.run" in text  # ms-swift launched torchrun itself

    logs = [json.loads(line) for line in (next(out.iterdir()) / "logging.jsonl").read_text().splitlines()]
    losses = [float(x["loss"]) for x in logs if "loss" in x]
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses), losses

    records = {rank: [json.loads(line) for line in Path(f"{dump}.rank{rank}").read_text().splitlines()]
               for rank in ("0", "1")}
    assert not Path(f"{dump}.ranksingle").exists()  # every process was a torchrun rank
    exact = _exact_samples()
    first_batches = {}
    for rank, lines in records.items():
        registered = [r for r in lines if "registered" in r]
        assert registered and all(r["registered"] for r in registered), (rank, registered)
        batches = [r for r in lines if "batch" in r]
        assert len(batches) >= 3, (rank, len(batches))
        assert {(b["backend"], b["world_size"]) for b in batches} == {("gloo", 2)}
        first_batches[rank] = [(tuple(s["input_ids"]), tuple(s["labels"])) for s in batches[0]["batch"]]
    # rank 0's first batch: exact samples of swift_ext.encode, ids and labels
    assert len(first_batches["0"]) == 2
    for sample in first_batches["0"]:
        assert sample in exact, "a sample of rank 0's first batch is not one swift_ext.encode gives"
    assert all(s in exact for batch in first_batches.values() for s in batch)
    assert set(first_batches["0"]) != set(first_batches["1"])  # the ranks were given different samples
