"""``--max_length`` / ``--truncation_strategy`` for parity samples, and the sample a row stands for.

ms-swift truncates the ids of one encoded row; a parity row can be several samples, so the parity template applies
the same rules per sample, before ms-swift sees them, with one difference: a sample left with no label is dropped
and reported, never trained at zero loss (``--truncation_strategy delete``, ms-swift's ``raise``, drops every
over-long sample). Turn offsets of a truncated piece stay those of the untruncated sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from swift.template import MaxLengthError

from ..samples import truncate as truncate_sample
from ..types import Sample
from .encoding import Scored

Drop = Callable[[str, Sample], None]
"""Told why a sample is dropped (``report.ParityReport.dropped``)."""


class ParitySampleDropped(MaxLengthError):
    """Every sample of a conversation lost all its labels to --max_length (ms-swift skips such rows)."""


def truncate(sample: Sample, scales: list[float], max_length: int | None, strategy: str, drop: Drop) -> list[Scored]:
    """The pieces of ``sample`` to train on under ``--max_length`` and ``--truncation_strategy`` (the core's one
    truncation rule, ``samples.truncate``); each dropped piece is reported through ``drop``."""
    if strategy not in ("raise", "left", "right", "split"):
        raise ValueError(f"Invalid truncation_strategy: {strategy}")
    # ms-swift hands --truncation_strategy delete over as 'raise'; the core calls it 'delete'.
    cut = truncate_sample(sample, scales, max_length, "delete" if strategy == "raise" else strategy)
    for _ in range(cut.dropped):
        why = (f"longer than --max_length {max_length} (--truncation_strategy delete)" if strategy == "raise"
               else f"no label left after --truncation_strategy {strategy} to {max_length}")
        drop(why, sample)
    return [(piece.sample, piece.loss_scale) for piece in cut.pieces]


def row_samples(samples: Sequence[Scored], pick: int | str | None) -> list[Scored]:
    """The samples a training row stands for: all of them, or the ``SAMPLE_COLUMN`` one the data hook chose.

    ParitySampleDropped when none is left (ms-swift then skips the row)."""
    if pick is not None:
        pick = int(pick)
        if pick >= len(samples):
            raise ParitySampleDropped(f"sample {pick} of this conversation no longer exists "
                                      f"({len(samples)} samples); was the dataset cached with other settings?")
        samples = samples[pick:pick + 1]
    if not samples:
        raise ParitySampleDropped("every sample of this conversation lost all its labels to --max_length")
    return list(samples)


def only_sample(samples: Sequence[Scored], pick: int | str | None) -> Scored:
    """The one sample of a row encoded by ``Template._encode`` directly (no list can be returned there)."""
    if pick is not None:
        samples = samples[int(pick):int(pick) + 1]
    if len(samples) != 1:
        raise ValueError(
            f"this conversation gives {len(samples)} parity samples; call Template.encode (which returns "
            "a list), not Template._encode")
    return samples[0]
