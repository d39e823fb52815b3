"""``--max_length`` / ``--truncation_strategy`` for parity samples, and the sample a row stands for.

ms-swift truncates the ids of one encoded row; a parity row can be several samples, so the parity template applies
the same rules per sample, before ms-swift sees them, with one difference: a sample left with no label is dropped
and reported, never trained at zero loss (``--truncation_strategy delete``, ms-swift's ``raise``, drops every
over-long sample). Turn offsets of a truncated piece stay those of the untruncated sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from swift.template import MaxLengthError

from ..types import IGNORE_INDEX, Sample
from .encoding import Scored

Drop = Callable[[str, Sample], None]
"""Told why a sample is dropped (``report.ParityReport.dropped``)."""


class ParitySampleDropped(MaxLengthError):
    """Every sample of a conversation lost all its labels to --max_length (ms-swift skips such rows)."""


def truncate(sample: Sample, scales: list[float], max_length: int | None, strategy: str, drop: Drop) -> list[Scored]:
    """The pieces of ``sample`` to train on under ``--max_length`` and ``--truncation_strategy``."""
    if max_length is None or len(sample) <= max_length:
        return [(sample, scales)]
    if strategy == "raise":
        drop(f"longer than --max_length {max_length} (--truncation_strategy delete)", sample)
        return []
    out = []
    for cut in _cuts(len(sample), max_length, strategy):
        labels = list(sample.labels[cut])
        piece_scales = list(scales[cut])
        labels[0] = IGNORE_INDEX  # nothing predicts the first token (ms-swift does the same)
        piece_scales[0] = 0.0
        stop = cut.stop if cut.stop is not None else len(sample)
        kept = [t for t in sample.turns if t.label_start < stop and t.label_end > cut.start]
        piece = Sample(list(sample.input_ids[cut]), labels, kept)
        if piece.num_labels == 0:
            drop(f"no label left after --truncation_strategy {strategy} to {max_length}", sample)
            continue
        out.append((piece, piece_scales))
    return out


def _cuts(length: int, max_length: int, strategy: str) -> list[slice]:
    if strategy == "left":
        return [slice(length - max_length, None)]
    if strategy == "right":
        return [slice(0, max_length)]
    if strategy == "split":
        return [slice(i, i + max_length) for i in range(0, length, max_length)]
    raise ValueError(f"Invalid truncation_strategy: {strategy}")


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
