"""The README's CPU training example through LLaMA-Factory (``examples/cpu_sft.py --framework lf``): a tiny model
trains with ``swift-ext lf train`` and the parity template."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from lf_helpers import REPO_ROOT, fixture, require_llamafactory

require_llamafactory()


def test_cpu_example_trains_with_llamafactory(tmp_path):
    fixture("qwen3_6")  # fail or skip with the reason before a subprocess would
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("FORCE_TORCHRUN", None)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "cpu_sft.py"), "--out", str(tmp_path),
                           "--framework", "lf", "--steps", "2"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "$ swift-ext lf train" in proc.stdout and "trained 2 steps with LLaMA-Factory" in proc.stdout
    results = json.loads((tmp_path / "lf_output" / "train_results.json").read_text())
    assert math.isfinite(results["train_loss"])
    assert "qwen3_6_parity" in (tmp_path / "lf_train.yaml").read_text()
