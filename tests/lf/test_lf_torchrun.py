"""``swift-ext lf train`` under torchrun with 2 CPU processes (``FORCE_TORCHRUN=1 NPROC_PER_NODE=2``, gloo).

LLaMA-Factory re-launches itself under torchrun; swift-ext's entry point must register the parity templates in each
of the two workers. A ``sitecustomize`` on the workers' ``PYTHONPATH`` wraps LLaMA-Factory's SFT collator and
records, per rank, the process group's backend and world size, whether ``qwen3_6_parity`` is a registered parity
template there, and every batch (before padding). Rank 0's first batch must consist of samples ``swift_ext.encode``
gives for the dataset's conversations, ids and labels exactly; the two ranks' first batches must differ.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from lf_helpers import QWEN_ROWS, REPO_ROOT, build_tiny_model, load_tokenizer, require_llamafactory, write_dataset

require_llamafactory()

import swift_ext  # noqa: E402

FIXTURE = "Qwen__Qwen3.6-35B-A3B"

SITECUSTOMIZE = '''
import importlib.abc, importlib.machinery, json, os, sys

def _patch(module):
    import torch.distributed as dist

    cls = module.SFTDataCollatorWith4DAttentionMask
    orig = cls.__call__

    def __call__(self, features):
        from llamafactory.data.template import TEMPLATES

        template = TEMPLATES.get("qwen3_6_parity")
        record = {"backend": dist.get_backend() if dist.is_initialized() else None,
                  "world_size": dist.get_world_size() if dist.is_initialized() else None,
                  "registered": type(template).__name__ if template is not None else None,
                  "batch": [{"input_ids": [int(x) for x in f["input_ids"]], "labels": [int(x) for x in f["labels"]]}
                            for f in features]}
        with open(os.environ["SWIFT_EXT_TEST_DUMP"] + ".rank" + os.environ["RANK"], "a") as fh:
            fh.write(json.dumps(record) + "\\n")
        return orig(self, features)

    cls.__call__ = __call__


class _Hook(importlib.abc.MetaPathFinder):
    """Wrap the collator when LLaMA-Factory imports it (importing it here, this early, fails)."""

    def find_spec(self, name, path, target=None):
        if name != "llamafactory.data.collator":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module

        def run(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = run
        return spec


if os.environ.get("SWIFT_EXT_TEST_DUMP") and os.environ.get("LOCAL_RANK") is not None:  # a torchrun worker
    sys.meta_path.insert(0, _Hook())
'''


def _exact_samples() -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    tok = load_tokenizer(FIXTURE)
    return {(tuple(s.input_ids), tuple(s.labels))
            for row in QWEN_ROWS for s in swift_ext.encode(tok, row["messages"], row.get("tools"))}


def test_lf_train_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    model_dir = build_tiny_model(FIXTURE, tmp_path / "model")
    write_dataset(tmp_path / "data", "parity_demo", QWEN_ROWS * 2)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    dump = tmp_path / "dump"
    config = tmp_path / "train.yaml"
    config.write_text("\n".join([
        "stage: sft", "do_train: true", f"model_name_or_path: {model_dir}", "finetuning_type: full",
        "dataset: parity_demo", f"dataset_dir: {tmp_path / 'data'}", "template: qwen3_6_parity", "cutoff_len: 1024",
        "overwrite_cache: true", "preprocessing_num_workers: 1", f"output_dir: {tmp_path / 'out'}",
        "overwrite_output_dir: true", "per_device_train_batch_size: 2", "gradient_accumulation_steps: 1",
        "max_steps: 3", "learning_rate: 1.0e-4", "logging_steps: 1", "save_strategy: 'no'", "report_to: none",
        "use_cpu: true", "ddp_backend: gloo", "swift_ext:", "  reasoning_policy: error", "  truncation: error", "",
    ]), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(HF_DATASETS_CACHE=str(tmp_path / "hf_datasets_cache"), HF_HUB_OFFLINE="1", FORCE_TORCHRUN="1",
               NPROC_PER_NODE="2", NNODES="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29600 + os.getpid() % 1000),
               SWIFT_EXT_TEST_DUMP=str(dump))
    env.pop("SWIFT_EXT_LF_OPTIONS", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    code = "import sys; from swift_ext.llamafactory.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "train", str(config)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    (tmp_path / "train.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    assert "Initializing 2 distributed tasks" in log, "LLaMA-Factory did not re-launch under torchrun with 2"

    results = json.loads((tmp_path / "out" / "train_results.json").read_text())
    assert math.isfinite(results["train_loss"])
    steps = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    assert [s["current_steps"] for s in steps if "loss" in s] == [1, 2, 3]

    exact = _exact_samples()
    first = {}
    for rank in ("0", "1"):
        records = [json.loads(line) for line in Path(f"{dump}.rank{rank}").read_text().splitlines()]
        assert len(records) >= 3, (rank, len(records))
        assert {(r["backend"], r["world_size"]) for r in records} == {("gloo", 2)}
        assert {r["registered"] for r in records} == {"ParityTemplate"}, rank  # registered in this worker
        first[rank] = [(tuple(s["input_ids"]), tuple(s["labels"])) for s in records[0]["batch"]]
    assert len(first["0"]) == 2
    for sample in first["0"]:
        assert sample in exact, "a sample of rank 0's first batch is not one swift_ext.encode gives"
    assert all(sample in exact for batch in first.values() for sample in batch)
    assert set(first["0"]) != set(first["1"])  # DistributedSampler gave the ranks different samples
