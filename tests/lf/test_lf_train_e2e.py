"""End to end: ``swift-ext lf train`` runs 2 LLaMA-Factory training steps on CPU with a tiny random model
built from a fixture tokenizer, and the rows it trained on are the inference ground truth.

LLaMA-Factory saves the tokenized rows it trains on (``tokenized_path``); every labelled run in them must be
the tokens of one assistant turn, right after the tokens of ``apply_chat_template(messages[:i],
add_generation_prompt=True)``. The Qwen3.6 run goes through LLaMA-Factory's torchrun re-launch
(``FORCE_TORCHRUN=1``, one CPU process), so the templates must be registered in the torchrun worker.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from lf_helpers import (
    LLAMA_COMPLETIONS,
    LLAMA_ROWS,
    QWEN_COMPLETIONS,
    QWEN_ROWS,
    REPO_ROOT,
    assert_rows_match_oracle,
    build_tiny_model,
    expected_turns,
    load_tokenizer,
    require_llamafactory,
    write_dataset,
)

require_llamafactory()

def _run_training(tmp_path, fixture_name, template, rows, *, torchrun: bool, workers: int = 1) -> tuple[dict, str]:
    model_dir = build_tiny_model(fixture_name, tmp_path / "model")
    write_dataset(tmp_path / "data", "parity_demo", rows)
    config = tmp_path / "train.yaml"
    config.write_text(
        "\n".join(
            [
                "stage: sft",
                "do_train: true",
                f"model_name_or_path: {model_dir}",
                "finetuning_type: full",
                "dataset: parity_demo",
                f"dataset_dir: {tmp_path / 'data'}",
                f"template: {template}",
                "cutoff_len: 1024",
                "overwrite_cache: true",
                f"preprocessing_num_workers: {workers}",
                f"tokenized_path: {tmp_path / 'tokenized'}",
                f"output_dir: {tmp_path / 'out'}",
                "overwrite_output_dir: true",
                "per_device_train_batch_size: 2",
                "gradient_accumulation_steps: 1",
                "max_steps: 2",
                "learning_rate: 1.0e-4",
                "logging_steps: 1",
                "save_strategy: 'no'",
                "report_to: none",
                "use_cpu: true",
                "swift_ext:",
                "  reasoning_policy: error",
                "  truncation: error",
                "",
            ]
        ),
        encoding="utf-8",
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf_datasets_cache")
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("SWIFT_EXT_LF_OPTIONS", None)
    if torchrun:
        env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE="1", NNODES="1", MASTER_ADDR="127.0.0.1")
    else:
        env.pop("FORCE_TORCHRUN", None)
    code = "import sys; from swift_ext.llamafactory.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "train", str(config)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    results = json.loads((tmp_path / "out" / "train_results.json").read_text())
    return results, log


def _saved_rows(path) -> list[tuple[list[int], list[int]]]:
    from datasets import load_from_disk

    train = load_from_disk(str(path))["train"]
    return [(list(r["input_ids"]), list(r["labels"])) for r in train]


def _check_run(tmp_path, fixture_name, results, log, rows, completions, n_samples):
    tokenizer = load_tokenizer(fixture_name)
    assert math.isfinite(results["train_loss"])
    steps = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    assert [s["current_steps"] for s in steps if "loss" in s] == [1, 2]  # two optimisation steps, logged
    saved = _saved_rows(tmp_path / "tokenized")
    assert len(saved) == n_samples, f"{len(saved)} rows for {len(rows)} conversations"
    assert_rows_match_oracle(saved, expected_turns(tokenizer, rows, completions), tokenizer)
    # LLaMA-Factory saved the tokenizer with its chat template untouched.
    saved_template = (tmp_path / "out" / "chat_template.jinja").read_text(encoding="utf-8")
    assert saved_template == tokenizer.chat_template


def test_qwen3_6_parity_trains_on_inference_tokens_under_torchrun(tmp_path):
    results, log = _run_training(
        tmp_path, "Qwen__Qwen3.6-35B-A3B", "qwen3_6_parity", QWEN_ROWS, torchrun=True
    )
    assert "Initializing 1 distributed tasks" in log, "LLaMA-Factory did not re-launch under torchrun"
    # 2 samples for the two-query conversation (history rewritten), 1 each for the others.
    _check_run(tmp_path, "Qwen__Qwen3.6-35B-A3B", results, log, QWEN_ROWS, QWEN_COMPLETIONS, n_samples=4)


def test_llama3_parity_trains_on_inference_tokens(tmp_path):
    results, log = _run_training(
        tmp_path, "meta-llama__Llama-3.1-8B-Instruct", "llama3_parity", LLAMA_ROWS, torchrun=False, workers=2
    )
    # Llama 3.1 never rewrites history: one sample per conversation. (Tokenized by 2 worker processes.)
    _check_run(
        tmp_path, "meta-llama__Llama-3.1-8B-Instruct", results, log, LLAMA_ROWS, LLAMA_COMPLETIONS, n_samples=3
    )
