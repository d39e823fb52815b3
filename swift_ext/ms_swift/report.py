"""What a parity template reports: samples dropped, errors by rule, the core's ``EncodeStats``.

ms-swift logs a failing row's traceback without saying which row it was, and skips a row whose encoding raises
``MaxLengthError`` without a word; the parity template names the row in its errors and counts and logs what it
drops (``Template.parity_report()``).
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any

from swift.utils import get_logger

from ..errors import ParityError
from ..types import EncodeStats, Sample
from .columns import ROW_COLUMN

logger = get_logger()


def name_row(exc: ParityError, where: str | None) -> ParityError:
    """ms-swift logs a failing row's traceback without saying which row it was: put the row in the message."""
    if where and not str(exc).startswith(where):
        exc.args = (f"{where}: {exc}",)
    return exc


class ParityReport:
    """One parity template's counters (kept when the template is pickled to a dataloader worker)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.stats = EncodeStats()

    @contextmanager
    def naming_errors(self, inputs: Any):
        """A ParityError raised inside is counted (``error:<rule>``) and names the row (``ROW_COLUMN``)."""
        try:
            yield
        except ParityError as exc:
            self.counts[f"error:{exc.rule}"] += 1
            raise name_row(exc, inputs.extra_kwargs.get(ROW_COLUMN)) from None

    def dropped(self, why: str, sample: Sample) -> None:
        """A sample is not trained on: counted, and logged (the first ten, then every thousandth)."""
        self.counts["dropped"] += 1
        turns = [t.message_index for t in sample.turns]
        if self.counts["dropped"] <= 10 or self.counts["dropped"] % 1000 == 0:
            logger.warning(
                f"[swift-ext] dropped a sample of {len(sample)} tokens (assistant turns {turns}): {why}. "
                f"Samples dropped so far: {self.counts['dropped']}.")

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "stats": self.stats}
