"""The README's multimodal example (ms-swift section) runs as written and prints what the README shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from mm_helpers import REPO_ROOT, require_vision

require_vision()

from swift_ext.dev import testing  # noqa: E402

MARKER = "<!-- multimodal example:"


def _blocks():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index(MARKER):]
    code, output = re.findall(r"```(?:python|text)\n(.*?)```", after, flags=re.S)[:2]
    return code, output


def test_readme_multimodal_example_runs_and_prints_what_it_shows(tmp_path):
    testing.fixture_dir("qwen3_6")
    code, shown = _blocks()
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if not line.startswith("[")]  # ms-swift's log lines
    assert printed == shown.strip().splitlines()
