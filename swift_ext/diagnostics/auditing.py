"""Encode a whole dataset with ``swift_ext.encode`` and summarise what training will see.

Rows are read lazily and sent to worker processes in small batches, with a
bounded number in flight, so memory stays flat on large files. Every row ends
as a ``RowResult``: its encode counters, or the rule of the error that stopped
it (malformed JSON, unknown format, or any ``ParityError`` of the core).

Counting rules (also in ``docs/cli.md``):

- token counters are ``EncodeStats``' (before truncation);
- with ``max_length`` a sample longer than it is truncated to it; a sample that
  loses every label is *dropped*; a row whose samples are all dropped, or whose
  assistant turns are all ``loss: false``, has *zero trained tokens*;
- a row that raises is *failed*, grouped by the error's rule.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core import Encoder, encode
from ..errors import InputError, ParityError
from ..messages import parse_messages
from ..types import IGNORE_INDEX, EncodeStats, Sample
from ..verify import verify
from .options import EncodeOptions
from .rows import Row, iter_rows
from .source import ModelSource, load_source

BATCH_ROWS = 16


@dataclass
class AuditSettings:
    options: EncodeOptions = field(default_factory=EncodeOptions)
    max_length: int | None = None
    verify: bool = False


@dataclass
class RowResult:
    index: int
    line: int | None
    rule: str | None = None
    detail: str = ""
    zero_trained: bool = False
    stats: EncodeStats = field(default_factory=EncodeStats)
    samples_truncated: int = 0
    samples_dropped: int = 0
    tokens_cut: int = 0
    labels_cut: int = 0


@dataclass
class FailureGroup:
    rule: str
    count: int
    first_row: int
    first_line: int | None
    example: str


@dataclass
class AuditSummary:
    """Totals over a dataset; ``to_dict`` adds the ratios."""

    rows: int = 0
    rows_failed: int = 0
    rows_zero_trained: int = 0
    rows_truncated: int = 0
    rows_reasoning_dropped: int = 0
    samples_truncated: int = 0
    samples_dropped: int = 0
    tokens_cut: int = 0
    trained_tokens_cut: int = 0
    stats: EncodeStats = field(default_factory=EncodeStats)
    failures: dict[str, FailureGroup] = field(default_factory=dict)
    max_length: int | None = None
    seconds: float = 0.0

    def add(self, result: RowResult) -> None:
        self.rows += 1
        if result.rule is not None:
            self._fail(result)
            return
        self.stats.merge(result.stats)
        self.rows_zero_trained += result.zero_trained
        self.rows_truncated += result.samples_truncated > 0
        self.rows_reasoning_dropped += result.stats.reasoning_dropped > 0
        self.samples_truncated += result.samples_truncated
        self.samples_dropped += result.samples_dropped
        self.tokens_cut += result.tokens_cut
        self.trained_tokens_cut += result.labels_cut

    def _fail(self, result: RowResult) -> None:
        self.rows_failed += 1
        group = self.failures.get(result.rule)
        if group is None:
            self.failures[result.rule] = FailureGroup(result.rule, 1, result.index, result.line, result.detail)
            return
        group.count += 1
        if result.index < group.first_row:  # results from workers arrive out of order
            group.first_row, group.first_line, group.example = result.index, result.line, result.detail

    @property
    def samples_emitted(self) -> int:
        return self.stats.samples - self.samples_dropped

    def to_dict(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "rows": self.rows,
            "rows_ok": self.rows - self.rows_failed,
            "rows_failed": self.rows_failed,
            "rows_zero_trained": self.rows_zero_trained,
            "rows_truncated": self.rows_truncated,
            "rows_reasoning_dropped": self.rows_reasoning_dropped,
            "samples": stats.samples,
            "samples_emitted": self.samples_emitted,
            "samples_truncated": self.samples_truncated,
            "samples_dropped": self.samples_dropped,
            "emitted_tokens": stats.emitted_tokens,
            "full_render_tokens": stats.full_render_tokens,
            "emitted_token_ratio": stats.emitted_ratio,
            "trained_tokens": stats.trained_tokens,
            "trained_token_share": stats.trained_tokens / stats.emitted_tokens if stats.emitted_tokens else 0.0,
            "trained_turns": stats.trained_turns,
            "spliced_turns": stats.spliced_turns,
            "reasoning_dropped_turns": stats.reasoning_dropped,
            "reasoning_formatted_turns": stats.reasoning_formatted,
            "max_length": self.max_length,
            "tokens_cut": self.tokens_cut,
            "trained_tokens_cut": self.trained_tokens_cut,
            "failures": {rule: asdict(group) for rule, group in sorted(self.failures.items())},
            "seconds": self.seconds,
            "rows_per_second": self.rows / self.seconds if self.seconds else 0.0,
            "tokens_per_second": stats.emitted_tokens / self.seconds if self.seconds else 0.0,
        }


# ------------------------------------------------------------------ one row
def encode_row(source: ModelSource, settings: AuditSettings, row: Row) -> RowResult:
    """Encode one row into counters; every error becomes the result's rule, never an exception."""
    result = RowResult(row.index, row.line, row.rule, row.detail)
    if row.rule is not None:
        return result
    options = settings.options
    try:
        if trains_nothing(row.messages, options.train_turns):
            result.zero_trained = True
            return result
        samples = encode(source.tokenizer, row.messages, row.tools, options.chat_template_kwargs,
                         family=options.family, conversation_index=row.index, stats=result.stats,
                         **source.encoder_kwargs(), **options.encode_kwargs())
        if settings.verify:
            verify(source.tokenizer, row.messages, samples, row.tools, options.chat_template_kwargs,
                   family=options.family, history_reasoning=options.history_reasoning,
                   conversation_index=row.index, **source.encoder_kwargs())
    except ParityError as exc:
        result.rule, result.detail, result.stats = exc.rule, str(exc), EncodeStats()
        return result
    except Exception as exc:  # a bug must cost one row, not the whole pass
        result.rule, result.detail, result.stats = f"crash-{type(exc).__name__}", str(exc), EncodeStats()
        return result
    if settings.max_length is not None:
        truncate(result, samples, settings.max_length)
    return result


def trains_nothing(messages: list[dict[str, Any]], train_turns: str) -> bool:
    """True when every assistant turn that would be trained says ``loss: false``."""
    try:
        Encoder.trained_turns(parse_messages(messages), train_turns)
    except InputError as exc:
        if exc.rule == "I5-zero-label":
            return True
        raise
    return False


def truncate(result: RowResult, samples: list[Sample], max_length: int) -> None:
    """Count what cutting each sample to ``max_length`` tokens costs."""
    for sample in samples:
        if len(sample) <= max_length:
            continue
        kept = sum(1 for label in sample.labels[:max_length] if label != IGNORE_INDEX)
        result.samples_truncated += 1
        result.tokens_cut += len(sample) - max_length
        result.labels_cut += sample.num_labels - kept
        result.samples_dropped += kept == 0
    result.zero_trained = bool(samples) and result.samples_dropped == len(samples)


# ------------------------------------------------------------------ whole dataset
_WORKER: tuple[ModelSource, AuditSettings] | None = None


def _init_worker(spec: str, tokenizer: str | None, settings: AuditSettings) -> None:
    """Load the tokenizer once per worker (a forked worker inherits the parent's)."""
    global _WORKER
    if _WORKER is None or _WORKER[0].spec != spec:
        _WORKER = (load_source(spec, tokenizer), settings)


def _run_batch(rows: list[Row]) -> list[RowResult]:
    assert _WORKER is not None, "worker not initialised"
    source, settings = _WORKER
    return [encode_row(source, settings, row) for row in rows]


def _batched(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run_parallel(source: ModelSource, tokenizer: str | None, settings: AuditSettings, batches: Iterable[list[Row]],
                  workers: int, done: Callable[[list[RowResult]], None]) -> None:
    global _WORKER
    _WORKER = (source, settings)  # inherited by forked workers: no reload
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(source.spec, tokenizer, settings)) as pool:
        pending: set[Future] = set()
        for batch in batches:
            pending.add(pool.submit(_run_batch, batch))
            if len(pending) >= workers * 4:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(future.result())
        for future in wait(pending).done:
            done(future.result())


def run_audit(source: ModelSource, path: str, settings: AuditSettings, *, workers: int = 1,
              tokenizer: str | None = None, on_rows: Callable[[int], None] | None = None) -> AuditSummary:
    """Encode every row of ``path``; ``on_rows(n)`` is called as rows complete (for a progress bar)."""
    summary = AuditSummary(max_length=settings.max_length)
    start = time.perf_counter()

    def done(results: list[RowResult]) -> None:
        for result in results:
            summary.add(result)
        if on_rows is not None:
            on_rows(len(results))

    batches = _batched(iter_rows(path), BATCH_ROWS)
    if workers <= 1:
        for batch in batches:
            done([encode_row(source, settings, row) for row in batch])
    else:
        _run_parallel(source, tokenizer, settings, batches, workers, done)
    summary.seconds = time.perf_counter() - start
    return summary
