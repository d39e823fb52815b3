"""The fixture resolver for tests: a fixture no source can give fails or skips the test, saying why.

A test fails where a fixture must exist (``../shared/fixtures`` or ``$SWIFT_EXT_FIXTURES`` is there, or ``$CI``
is set) and skips only where no source could give it (no local copy, no registry cache, no network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import fixtures


def _unavailable(name: str, exc: Exception) -> None:
    import pytest

    if fixtures.local_copies_expected():
        pytest.fail(f"fixture {name!r} is missing: {exc}. Put ../shared/fixtures beside the project, set "
                    f"{fixtures.ENV_VAR}, or let the registry download run.", pytrace=False)
    pytest.skip(f"fixture {name!r} unavailable on this machine (no local copy, no cache, no registry): {exc}")


def fixture_dir(name: str) -> Path:
    """The fixture's folder through the one resolver, or a failure / skip naming where it was looked for."""
    try:
        return fixtures.fixture_dir(name)
    except fixtures.FixtureUnavailable as exc:
        _unavailable(name, exc)
        raise  # unreachable: pytest.fail / skip raise


def tokenizer(name: str) -> Any:
    """The fixture's tokenizer (``fixtures.load_tokenizer``: faithful, derived for template-only fixtures)."""
    try:
        return fixtures.load_tokenizer(name)
    except fixtures.FixtureUnavailable as exc:
        _unavailable(name, exc)
        raise
