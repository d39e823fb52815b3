"""Shared setup for the doctor / inspect / audit command tests.

The real tokenizer fixtures come through the one resolver (``swift_ext.dev.fixtures``: ``$SWIFT_EXT_FIXTURES``,
``../shared/fixtures``, the registry cache, a registry download); a missing fixture fails or skips with the reason
(``swift_ext.dev.testing``). Commands run in-process through ``swift_ext.cli.main`` so fixture tokenizers load once
per session.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

if importlib.util.find_spec("swift_ext") is None:  # a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytest  # noqa: E402

from swift_ext.cli import main  # noqa: E402
from swift_ext.dev import fixtures  # noqa: E402

from .cli_helpers import require_fixture  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _fixtures_present() -> None:
    """Every CLI test needs the real fixtures: resolve them all first (fail or skip naming where they were
    looked for)."""
    for name in fixtures.FIXTURES:
        require_fixture(name)


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, err={self.err[-500:]!r})"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run ``swift-ext ARGS`` in this process; returns exit code and captured output.

    ``SWIFT_EXT_DEBUG=1``: an exception no command turned into a message of its own fails the test with its
    traceback instead of becoming cli.main's one-line exit 2 (tests assert the specific messages)."""
    monkeypatch.setenv("SWIFT_EXT_DEBUG", "1")

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
