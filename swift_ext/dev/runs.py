"""ms-swift's command line run from tests: a subprocess that imports this checkout's ``swift_ext``, offline, with
its output kept in a log whose last lines a failure shows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
"""The folder holding this ``swift_ext`` package (a clone's root): first on a subprocess's ``PYTHONPATH``."""


def subprocess_env(extra: Mapping[str, str] | None = None, *, drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment with ``extra``, this checkout first on ``PYTHONPATH``, no hub (``HF_HUB_OFFLINE``,
    ``USE_HF``: ms-swift would otherwise try ModelScope), and the ``drop`` variables removed."""
    env = dict(os.environ)
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT), env.get("PYTHONPATH", "")])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("USE_HF", "1")
    for name in drop:
        env.pop(name, None)
    return env


def run_swift(args: Sequence[str], env: Mapping[str, str], log: Path, timeout: float = 900) -> None:
    """``swift <args>`` (``python -m swift.cli.main``) with its output in ``log``; an assertion error showing the
    log's last 40 lines if it fails."""
    cmd = [sys.executable, "-m", "swift.cli.main", *args]
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=dict(env), stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    assert proc.returncode == 0, f"swift {args[0]} failed; last lines:\n" + "\n".join(
        log.read_text(errors="replace").splitlines()[-40:])
