"""Samples from turns: the one merge rule and the one truncation rule.

Merge (invariant I4): consecutive turns share a sample while each next prompt extends the sample built so far,
token for token; a new sample starts exactly where it does not. The core (``Encoder``) and the rollout code build
samples through ``SampleBuilder``.

Truncation: ``truncate`` cuts a sample to ``max_length`` tokens by a strategy, and drops a piece left without a
label; the ms-swift adapter (``--truncation_strategy``) and ``swift-ext audit --max-length`` use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .types import IGNORE_INDEX, Sample, TurnSpan


class SampleBuilder:
    """Appends turns to the current sample while their prompts extend it, else starts a new one."""

    def __init__(self, *, with_logprobs: bool = False) -> None:
        self.samples: list[Sample] = []
        self._with_logprobs = with_logprobs

    @property
    def current(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def extends(self, prompt_ids: Sequence[int], known: int = 0) -> bool:
        """The prompt continues the current sample token for token (its first ``known`` ids are known to)."""
        current = self.current
        if current is None or len(prompt_ids) < len(current.input_ids):
            return False
        known = min(known, len(current.input_ids))
        part = prompt_ids[known:len(current.input_ids)]
        part = part if isinstance(part, list) else list(part)
        return part == (current.input_ids[known:] if known else current.input_ids)

    def add(self, prompt_ids: Sequence[int], ids: Sequence[int], span: TurnSpan, *,
            logprobs: Sequence[float] | None = None,
            on_new_sample: Callable[[Sample], None] | None = None, known: int = 0) -> TurnSpan:
        """Add one turn: its prompt (masked; only the part the current sample lacks) and its ``ids`` (labelled
        when ``span.trained``). ``span``'s positions are filled in; ``on_new_sample(previous)`` is called before a
        new sample starts after another (a caller that needs one sequence raises there). ``known``: how many
        leading prompt ids the caller knows equal the current sample's (the fast path of a long conversation,
        where comparing them again would cost the whole sample per turn); ``prompt_ids`` may be any sequence
        whose slices are lists or tuples."""
        current = self.current
        if current is not None and self.extends(prompt_ids, known):
            extra = list(prompt_ids[len(current.input_ids):len(prompt_ids)])
            current.input_ids.extend(extra)
            current.labels.extend([IGNORE_INDEX] * len(extra))
        else:
            if current is not None and on_new_sample is not None:
                on_new_sample(current)
            head = prompt_ids[0:len(prompt_ids)]
            current = Sample(head if isinstance(head, list) else list(head), [IGNORE_INDEX] * len(prompt_ids), [],
                             [] if self._with_logprobs else None)
            self.samples.append(current)
        start = len(current.input_ids)
        current.input_ids.extend(ids)
        current.labels.extend(ids if span.trained else [IGNORE_INDEX] * len(ids))
        logprob_start = None
        if span.trained and current.logprobs is not None and logprobs is not None:
            logprob_start = len(current.logprobs)
            current.logprobs.extend(logprobs)
        placed = replace(span, prompt_end=start, label_start=start, label_end=start + len(ids),
                         logprob_start=logprob_start)
        current.turns.append(placed)
        return placed


TRUNCATION_STRATEGIES = ("delete", "left", "right", "split", "turns")


@dataclass
class Piece:
    """One piece of a truncated sample, with the per-token loss scales cut alike."""

    sample: Sample
    loss_scale: list[float]


@dataclass
class Truncation:
    """What ``truncate`` kept, and how many pieces it dropped (a longer sample under ``delete``, or a piece left
    without a label): the caller reports them, never silently."""

    pieces: list[Piece]
    dropped: int


def truncate(sample: Sample, loss_scale: list[float], max_length: int | None, strategy: str) -> Truncation:
    """Cut ``sample`` to pieces of at most ``max_length`` tokens.

    ``delete`` drops a longer sample; ``left`` / ``right`` keep its last / first ``max_length`` tokens; ``split``
    cuts it into consecutive pieces; ``turns`` keeps its leading whole turns that fit (no turn loses its end or
    its context). Nothing predicts a piece's first token, so its label is masked (ms-swift does the same). A piece
    with no label left is dropped: training it would be a step at zero loss. Turn offsets stay those of the
    untruncated sample; a piece keeps the turns it overlaps."""
    if strategy not in TRUNCATION_STRATEGIES:
        raise ValueError(f"truncation strategy must be one of {TRUNCATION_STRATEGIES}, got {strategy!r}")
    if max_length is None or len(sample) <= max_length:
        return Truncation([Piece(sample, loss_scale)], 0)
    if strategy == "delete":
        return Truncation([], 1)
    if strategy == "split":
        cuts = [slice(i, i + max_length) for i in range(0, len(sample), max_length)]
    elif strategy == "turns":
        fitting = [t.label_end for t in sample.turns if t.label_end <= max_length]
        if not fitting:
            return Truncation([], 1)
        cuts = [slice(0, max(fitting))]
    else:
        cuts = [slice(len(sample) - max_length, None) if strategy == "left" else slice(0, max_length)]
    pieces = []
    for cut in cuts:
        labels, scales = sample.labels[cut], loss_scale[cut]
        labels[0], scales[0] = IGNORE_INDEX, 0.0
        stop = cut.stop if cut.stop is not None else len(sample)
        start = cut.start or 0
        kept = [t for t in sample.turns if t.label_start < stop and t.label_end > start]
        piece = Sample(sample.input_ids[cut], labels, kept)
        if piece.num_labels:
            pieces.append(Piece(piece, scales))
    return Truncation(pieces, len(cuts) - len(pieces))


__all__ = ["TRUNCATION_STRATEGIES", "Piece", "SampleBuilder", "Truncation", "truncate"]
