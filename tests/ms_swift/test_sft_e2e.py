"""End to end: ``swift sft`` for 2 steps on CPU with a tiny random model built from a fixture tokenizer, through
``--external_plugins`` and ms-swift's own dataset loader; then ``swift infer`` reloads the plugin from the
checkpoint's ``args.json``."""

from __future__ import annotations

import json
import math
import os

import pytest
from swift_helpers import ROWS, build_tiny_model, load_tokenizer, oracle_turns, require_swift

require_swift()

import swift_ext.ms_swift as ms  # noqa: E402
from swift_ext.dev.runs import run_swift, subprocess_env  # noqa: E402

DUMP_PLUGIN = '''
import json, os
from swift.template import Template
_orig = Template.data_collator
def data_collator(self, batch, *, padding_to=None):
    if not os.environ.get("SWIFT_EXT_TEST_DUMP"):  # swift infer re-imports this plugin from args.json
        return _orig(self, batch, padding_to=padding_to)
    with open(os.environ["SWIFT_EXT_TEST_DUMP"], "a") as f:
        for b in batch:
            f.write(json.dumps({"input_ids": [int(x) for x in b["input_ids"]],
                                "labels": [int(x) for x in b["labels"]],
                                "loss_scale": [float(x) for x in b["loss_scale"]] if b.get("loss_scale") else None})
                    + "\\n")
    return _orig(self, batch, padding_to=padding_to)
Template.data_collator = data_collator
'''

CASES = {
    # template, fixture, architecture, stop strings, extra env
    "qwen3_6_parity": ("Qwen__Qwen3.6-35B-A3B", "qwen3", ("<|im_end|>",), {}),
    # Llama 3.1's template never renders reasoning: drop it (counted) instead of failing the row.
    "llama3_parity": ("meta-llama__Llama-3.1-8B-Instruct", "llama", ("<|eot_id|>", "<|eom_id|>"),
                      {"SWIFT_EXT_REASONING_POLICY": "drop"}),
}


@pytest.mark.parametrize("template", sorted(CASES))
def test_swift_sft_two_steps(tmp_path, template):
    fixture_name, arch, stops, extra_env = CASES[template]
    model_dir = build_tiny_model(fixture_name, tmp_path / "model", arch)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    dump_plugin = tmp_path / "dump_plugin.py"
    dump_plugin.write_text(DUMP_PLUGIN)
    dump = tmp_path / "batches.jsonl"
    env = subprocess_env({**(extra_env if template == "qwen3_6_parity" else {}),
                          "SWIFT_EXT_TEST_DUMP": str(dump)})
    out = tmp_path / "out"
    config = {
        "model": str(model_dir), "model_type": "qwen3" if arch == "qwen3" else "llama",
        "template": template, "template_backend": "jinja",
        "external_plugins": [ms.plugin_path(), str(dump_plugin)],
        "dataset": str(data), "tuner_type": "full", "max_steps": 2, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "torch_dtype": "float32",
        "output_dir": str(out), "save_steps": 2, "logging_steps": 1, "split_dataset_ratio": 0,
        "dataloader_num_workers": 0, "report_to": "none", "seed": 0,
    }
    if template == "qwen3_6_parity":
        # command-line flags, lazy tokenization
        argv = ["sft"]
        for key, value in {**config, "lazy_tokenize": True}.items():
            argv += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    else:
        # a YAML config, `swift sft cfg.yaml`, pre-tokenized dataset (ms-swift's default for text models)
        import yaml

        cfg = tmp_path / "sft.yaml"
        cfg.write_text(yaml.safe_dump({**config, "ENV": extra_env}))
        argv = ["sft", str(cfg)]
    run_swift(argv, env, tmp_path / "sft.log")

    run = next(out.iterdir())
    logs = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    losses = [float(x["loss"]) for x in logs if "loss" in x]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses), losses

    args = json.loads((run / "args.json").read_text())
    assert ms.plugin_path() in args["external_plugins"]
    assert args["template"] == template

    # Every labelled token is an assistant completion, right after its exact inference prompt.
    tok = load_tokenizer(fixture_name)
    truth = []
    for row in ROWS:
        msgs = row["messages"]
        if template == "llama3_parity":  # what the model sees: the template drops reasoning
            msgs = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in msgs]
        hf = [dict(m) for m in msgs]
        for m in hf:
            for call in m.get("tool_calls") or []:
                if isinstance(call["function"]["arguments"], str):
                    call["function"]["arguments"] = json.loads(call["function"]["arguments"])
        truth += oracle_turns(tok, hf, tools=row.get("tools"), stops=stops)
    batches = [json.loads(line) for line in dump.read_text().splitlines()]
    assert batches, "the dump plugin saw no batch"
    for sample in batches:
        ids, labels = sample["input_ids"], sample["labels"]
        j = 0
        while j < len(labels):
            if labels[j] == -100:
                j += 1
                continue
            k = j
            while k < len(labels) and labels[k] != -100:
                k += 1
            matches = [t for t in truth if t["completion_ids"] is not None and t["prompt_ids"] == ids[:j]
                       and t["completion_ids"][:k - j] == labels[j:k] and len(t["completion_ids"]) == k - j]
            assert matches, f"labelled span {tok.decode(labels[j:k])!r} is not an assistant completion after " \
                            "its exact inference prompt"
            j = k

    if template == "qwen3_6_parity":
        # swift infer reloads the plugin recorded in args.json and uses the parity template.
        ckpt = next(p for p in run.iterdir() if p.name.startswith("checkpoint-"))
        infer_data = tmp_path / "infer.jsonl"
        infer_data.write_text(json.dumps({"messages": [{"role": "user", "content": "Say hi."}]}) + "\n")
        log = tmp_path / "infer.log"
        run_swift(["infer", "--model", str(ckpt), "--infer_backend", "transformers", "--val_dataset",
                   str(infer_data), "--max_new_tokens", "4", "--result_path", str(tmp_path / "infer_result.jsonl"),
                   "--torch_dtype", "float32"], subprocess_env({}), log)
        text = log.read_text(errors="replace")
        assert "Successfully imported external_plugins" in text and ms.plugin_path() in text
        assert "qwen3_6_parity" in text
        assert (tmp_path / "infer_result.jsonl").read_text().strip()


@pytest.mark.parametrize("loss_scale", ["last_round+hermes+ignore_empty_think", "parity_spans"])
def test_swift_sft_two_steps_with_a_loss_scale(tmp_path, loss_scale):
    """``--loss_scale`` through the whole pipeline: every batch holds the ids of ``--loss_scale default`` and the
    weights the parity template gives them (``test_loss_scale.py`` checks those against ms-swift's own split)."""
    from swift.model import get_model_processor
    from swift.template import get_template
    from swift_helpers import build_tokenizer_dir

    fixture_name = "Qwen__Qwen3.6-35B-A3B"
    model_dir = build_tiny_model(fixture_name, tmp_path / "model", "qwen3")
    data = tmp_path / "data.jsonl"
    rows = [*ROWS, {"messages": ROWS[0]["messages"][1:5], "tools": ROWS[0]["tools"]}]  # a tool call in the last round
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "dump_plugin.py").write_text(DUMP_PLUGIN)
    dump = tmp_path / "batches.jsonl"
    spans = {"SWIFT_EXT_SPAN_WEIGHTS": json.dumps({"reasoning": 0.5, "tool_call": 2.0})}
    env = subprocess_env({"SWIFT_EXT_TEST_DUMP": str(dump), **spans})
    out = tmp_path / "out"
    argv = ["sft", "--model", str(model_dir), "--model_type", "qwen3", "--template", "qwen3_6_parity",
            "--template_backend", "jinja", "--loss_scale", loss_scale,
            "--external_plugins", ms.plugin_path(), str(tmp_path / "dump_plugin.py"), "--dataset", str(data),
            "--tuner_type", "full", "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-3", "--torch_dtype", "float32", "--output_dir", str(out), "--save_strategy", "no",
            "--logging_steps", "1", "--split_dataset_ratio", "0", "--dataloader_num_workers", "0",
            "--report_to", "none", "--seed", "0"]
    run_swift(argv, env, tmp_path / "sft.log")
    logs = [json.loads(line) for line in (next(out.iterdir()) / "logging.jsonl").read_text().splitlines()]
    losses = [float(x["loss"]) for x in logs if "loss" in x]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses), losses

    ms.register()
    processor = get_model_processor(str(build_tokenizer_dir(fixture_name, tmp_path / "tok")), load_model=False,
                                    model_type="qwen3")[1]
    os.environ.update(spans)
    try:
        expected = {}
        for scale in ("default", loss_scale):
            template = get_template(processor, template_type="qwen3_6_parity", loss_scale=scale,
                                    template_backend="jinja")
            template.set_mode("train")
            encoded = [e for row in rows for e in (lambda x: x if isinstance(x, list) else [x])(template.encode(
                json.loads(json.dumps(row))))]
            expected[scale] = {tuple(e["input_ids"]): e for e in encoded}
    finally:
        for key in spans:
            os.environ.pop(key, None)
    batches = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(batches) >= 8  # 2 steps of 4 (and whatever else ms-swift collates)
    weighted = 0
    for sample in batches:
        ids = tuple(sample["input_ids"])
        assert ids in expected["default"]  # the tokens of --loss_scale default
        want = expected[loss_scale][ids]
        assert sample["labels"] == want["labels"]
        got = sample["loss_scale"] or [0.0 if x == -100 else 1.0 for x in sample["labels"]]
        assert got == pytest.approx(list(want.get("loss_scale") or [0.0 if x == -100 else 1.0 for x in want["labels"]]))
        weighted += any(w not in (0.0, 1.0) for w in got)
    assert weighted  # the batches did carry weights other than 0/1
