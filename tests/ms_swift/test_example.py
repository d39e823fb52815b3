"""The README's CPU training example (``examples/cpu_sft.py``) runs as a user runs it: a tiny model trains with
``swift sft`` and the parity template, and ``swift infer`` answers from the checkpoint, reloading the plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from swift_helpers import REPO_ROOT, fixture, require_swift

require_swift()

import swift_ext.ms_swift as ms  # noqa: E402


def test_cpu_example_trains_and_infers(tmp_path):
    fixture("qwen3_6")  # fail or skip with the reason before a subprocess would
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "cpu_sft.py"), "--out", str(tmp_path),
                           "--steps", "2"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "$ swift sft --external_plugins" in out and "--template qwen3_6_parity" in out
    assert "trained 2 steps, loss" in out and "$ swift infer --model" in out
    run = next((tmp_path / "output").iterdir())
    args = json.loads((run / "args.json").read_text())
    assert ms.plugin_path() in args["external_plugins"] and args["template"] == "qwen3_6_parity"
    infer_log = (tmp_path / "infer.log").read_text(errors="replace")
    assert "Successfully imported external_plugins" in infer_log and "qwen3_6_parity" in infer_log
    answer = json.loads((tmp_path / "infer_result.jsonl").read_text().splitlines()[0])
    assert answer["response"], answer
