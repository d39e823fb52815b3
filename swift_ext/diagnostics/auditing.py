"""Encode a whole dataset with ``swift_ext.encode`` and summarise what training will see.

Rows are cut from the file lazily in this process (as JSON text, unparsed) and
sent to worker processes in small batches, with a bounded number in flight, so
memory stays flat on large files. Every row ends as a ``RowResult``: its encode
counters, or the rule of the error that stopped it (invalid UTF-8, malformed
JSON, nesting too deep to parse, unknown format, or any ``ParityError`` of the
core). No row can stop the pass:

- a worker that dies (killed, or crashed in native code) breaks the pool; the
  pool is rebuilt and each row of the batches that were in flight is retried
  once, alone, so a row that kills its worker again is the only one counted
  (``audit-worker-died``);
- ``AuditInterrupted`` (raised by the command's SIGTERM / SIGINT handlers) or
  ``KeyboardInterrupt`` stops the pass: the workers are killed, never left
  orphaned, and the summary covers the rows finished (``interrupted``).

Counting rules (also in ``docs/cli.md``):

- token counters are ``EncodeStats``' (before truncation);
- with ``max_length`` a sample longer than it is truncated to it; a sample that
  loses every label is *dropped*; a row whose samples are all dropped, or whose
  assistant turns are all ``loss: false``, has *zero trained tokens*;
- a row that raises is *failed*, grouped by the error's rule, and listed with
  its row index and line (``failed_rows``);
- blank lines of a JSON-lines file are not rows (ms-swift skips them too); they
  are counted apart (``blank_lines``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core import Encoder, encode
from ..errors import InputError, ParityError
from ..messages import parse_messages
from ..samples import truncate
from ..types import EncodeStats, Sample
from ..verify import verify
from .options import CommandOptions
from .rows import READ_ERRORS, RawRow, Row, iter_raw, parse_raw
from .source import ModelSource, load_source

BATCH_ROWS = 16
MAX_DETAIL = 1000
"""Characters of an error message kept per failed row."""
TEST_KILL_LINE = "_SWIFT_EXT_TEST_KILL_LINE"
"""Test hook: a worker process SIGKILLs itself when it reaches this line number (never in the main process)."""


class AuditInterrupted(Exception):
    """Raised (by a signal handler) to stop an audit; ``signal_name`` says which signal."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class EngineError(RuntimeError):
    """An audit engine cannot run (``--engine ray`` without Ray, a format it does not read, a failed Ray
    pipeline): one line for the user, exit 2."""


@dataclass
class AuditSettings:
    options: CommandOptions = field(default_factory=CommandOptions)
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
    form: str | None = None


@dataclass
class FailureGroup:
    rule: str
    count: int
    first_row: int
    first_line: int | None
    example: str


@dataclass
class FailedRow:
    """One failed row, as ``--json``'s ``failed_rows`` and ``--failures FILE`` list it."""

    row: int
    line: int | None
    rule: str
    message: str


@dataclass
class HeaviestRow:
    """The row whose samples repeat the most tokens of its conversation (history rewriting), as ``--json`` lists
    it: ``extra_tokens`` is emitted minus one render of the whole conversation."""

    row: int
    line: int | None
    samples: int
    emitted_tokens: int
    full_render_tokens: int
    extra_tokens: int


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
    failed: list[FailedRow] = field(default_factory=list)
    max_length: int | None = None
    seconds: float = 0.0
    blank_lines: int = 0
    worker_restarts: int = 0
    interrupted: str | None = None
    """The signal that stopped the pass (``SIGTERM``, ``SIGINT``); None when every row was read."""
    rows_several_samples: int = 0
    """Rows encoded into more than one sample: the template rewrites their history (Qwen3 drops past reasoning),
    so each sample repeats the conversation so far."""
    heaviest_row: HeaviestRow | None = None
    row_forms: Counter = field(default_factory=Counter)
    """Rows per form (``messages``, ``conversations``, ``query/response``, ...): ms-swift reads a file that mixes
    forms with one preprocessor and drops the rows of the others."""

    def add(self, result: RowResult) -> None:
        self.rows += 1
        if result.form is not None:
            self.row_forms[result.form] += 1
        if result.rule is not None:
            self._fail(result)
            return
        self.stats.merge(result.stats)
        self._count_history(result)
        self.rows_zero_trained += result.zero_trained
        self.rows_truncated += result.samples_truncated > 0
        self.rows_reasoning_dropped += result.stats.reasoning_dropped > 0
        self.samples_truncated += result.samples_truncated
        self.samples_dropped += result.samples_dropped
        self.tokens_cut += result.tokens_cut
        self.trained_tokens_cut += result.labels_cut

    def _count_history(self, result: RowResult) -> None:
        stats = result.stats
        if stats.samples <= 1:
            return
        self.rows_several_samples += 1
        extra = stats.emitted_tokens - stats.full_render_tokens
        best = self.heaviest_row
        # results arrive out of order (workers): the lowest row index wins a tie, whatever the engine
        if best is None or (extra, -result.index) > (best.extra_tokens, -best.row):
            self.heaviest_row = HeaviestRow(result.index, result.line, stats.samples, stats.emitted_tokens,
                                            stats.full_render_tokens, extra)

    def _fail(self, result: RowResult) -> None:
        self.rows_failed += 1
        self.failed.append(FailedRow(result.index, result.line, result.rule, result.detail))
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

    def failed_rows(self) -> list[FailedRow]:
        """Every failed row, in dataset order."""
        return sorted(self.failed, key=lambda f: f.row)

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
            "rows_several_samples": self.rows_several_samples,
            "heaviest_row": asdict(self.heaviest_row) if self.heaviest_row is not None else None,
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
            "failed_rows": [asdict(failed) for failed in self.failed_rows()],
            "row_forms": dict(sorted(self.row_forms.items())),
            "blank_lines": self.blank_lines,
            "worker_restarts": self.worker_restarts,
            "interrupted": self.interrupted,
            "seconds": self.seconds,
            "rows_per_second": self.rows / self.seconds if self.seconds else 0.0,
            "tokens_per_second": stats.emitted_tokens / self.seconds if self.seconds else 0.0,
        }


# ------------------------------------------------------------------ one row
def encode_row(source: ModelSource, settings: AuditSettings, row: Row) -> RowResult:
    """Encode one row into counters; every error becomes the result's rule, never an exception."""
    result = RowResult(row.index, row.line, row.rule, row.detail, form=row.form)
    if row.rule is not None:
        return result
    options = settings.options
    try:
        if trains_nothing(row.messages, options.policies.train_turns):
            result.zero_trained = True
            return result
        samples = encode(source.tokenizer, row.messages, row.tools, options.chat_template_kwargs,
                         conversation_index=row.index, stats=result.stats, options=options.policies,
                         **source.encoder_kwargs(), **options.encoder_kwargs())
        if settings.verify:
            verify(source.tokenizer, row.messages, samples, row.tools, options.chat_template_kwargs,
                   options=options.policies, conversation_index=row.index,
                   **source.encoder_kwargs(), **options.encoder_kwargs())
    except ParityError as exc:
        return _failed(result, exc.rule, str(exc))
    except READ_ERRORS:
        return _failed(result, "input-too-deep", f"[input-too-deep] {row.where}: the conversation is nested deeper "
                                                 "than Python's recursion limit allows to encode")
    except Exception as exc:  # a bug must cost one row, not the whole pass
        return _failed(result, f"crash-{type(exc).__name__}", str(exc))
    if settings.max_length is not None:
        count_truncation(result, samples, settings.max_length)
    return result


def _failed(result: RowResult, rule: str, detail: str) -> RowResult:
    result.rule, result.detail, result.stats = rule, detail[:MAX_DETAIL], EncodeStats()
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


def count_truncation(result: RowResult, samples: list[Sample], max_length: int) -> None:
    """Count what cutting each sample to its first ``max_length`` tokens costs (``samples.truncate``, ``right``:
    a sample left without a label is dropped)."""
    for sample in samples:
        if len(sample) <= max_length:
            continue
        cut = truncate(sample, [1.0] * len(sample), max_length, "right")
        kept = cut.pieces[0].sample.num_labels if cut.pieces else 0
        result.samples_truncated += 1
        result.tokens_cut += len(sample) - max_length
        result.labels_cut += sample.num_labels - kept
        result.samples_dropped += cut.dropped
    result.zero_trained = bool(samples) and result.samples_dropped == len(samples)


def audit_raw(source: ModelSource, settings: AuditSettings, raw: RawRow) -> RowResult:
    """Parse and encode one row as cut from the file."""
    return encode_row(source, settings, parse_raw(raw))


# ------------------------------------------------------------------ worker processes
_WORKER: tuple[ModelSource, AuditSettings] | None = None


def _init_worker(spec: str, tokenizer: str | None, settings: AuditSettings) -> None:
    """Load the tokenizer once per worker (a forked worker inherits the parent's); the main process owns the
    signals (it kills the workers), and a worker dies with it."""
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    if _WORKER is None or _WORKER[0].spec != spec:
        _WORKER = (load_source(spec, tokenizer), settings)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the main process dies, however it dies (even SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the executor's own shutdown still stops the workers
        pass


def _run_batch(raws: list[RawRow]) -> list[RowResult]:
    assert _WORKER is not None, "worker not initialised"
    source, settings = _WORKER
    kill_line = os.environ.get(TEST_KILL_LINE)
    results = []
    for raw in raws:
        if kill_line and str(raw.line) == kill_line:
            os.kill(os.getpid(), signal.SIGKILL)
        results.append(audit_raw(source, settings, raw))
    return results


class _Pool:
    """A process pool that can be rebuilt after a worker died, and killed outright."""

    def __init__(self, workers: int, initargs: tuple) -> None:
        methods = multiprocessing.get_all_start_methods()
        self.context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.workers, self.initargs = workers, initargs
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_init_worker,
                                   initargs=self.initargs)

    def submit(self, batch: list[RawRow]) -> Future:
        return self.executor.submit(_run_batch, batch)

    def restart(self) -> None:
        self.kill()
        self.executor = self._start()

    def kill(self) -> None:
        """Stop every worker now (running ones included) and reap them: none is left orphaned."""
        processes = list((getattr(self.executor, "_processes", None) or {}).values())
        for process in processes:
            if process.is_alive():
                process.kill()
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=5)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _batched(rows: Iterable[RawRow], size: int) -> Iterator[list[RawRow]]:
    batch: list[RawRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Parallel:
    """Batches through a pool; what a broken pool lost is retried row by row."""

    def __init__(self, pool: _Pool, done: Callable[[list[RowResult]], None], summary: AuditSummary) -> None:
        self.pool, self.done, self.summary = pool, done, summary
        self.pending: dict[Future, list[RawRow]] = {}
        self.lost: list[RawRow] = []

    def run(self, batches: Iterable[list[RawRow]]) -> None:
        in_flight = self.pool.workers * 4
        for batch in batches:
            self.pending[self.pool.submit(batch)] = batch
            if len(self.pending) >= in_flight:
                self._collect(FIRST_COMPLETED)
        self._collect(ALL_COMPLETED)

    def _collect(self, how: str) -> None:
        self._gather(how)
        if self.lost:
            self._recover()

    def _gather(self, how: str) -> None:
        """Report the finished batches; a failed one's rows are lost (to be retried)."""
        finished, _ = wait(self.pending, return_when=how)
        for future in finished:
            batch = self.pending.pop(future)
            if future.exception() is None:
                self.done(future.result())
            else:
                self.lost += batch

    def _recover(self) -> None:
        """A worker died (or a batch could not come back): every batch in flight is lost with the pool. Rebuild
        it and retry each lost row once, alone, so only a row that fails again is counted against itself."""
        self._gather(ALL_COMPLETED)  # a broken pool fails the rest at once
        rows, self.lost = sorted(self.lost, key=lambda r: r.index), []
        self._restart()
        for raw in rows:
            future = self.pool.submit([raw])
            wait([future])
            error = future.exception()
            if error is None:
                self.done(future.result())
                continue
            self.done([_lost_row(raw, error)])
            if isinstance(error, BrokenProcessPool):
                self._restart()

    def _restart(self) -> None:
        self.pool.restart()
        self.summary.worker_restarts += 1


def _lost_row(raw: RawRow, error: BaseException) -> RowResult:
    where = f"row {raw.index}" + (f" (line {raw.line})" if raw.line is not None else "")
    if isinstance(error, BrokenProcessPool):
        rule = "audit-worker-died"
        detail = (f"[{rule}] {where}: the worker process encoding this row died, and died again when the row was "
                  "retried alone (killed, out of memory, or a crash in native code); the row was not encoded")
    else:
        rule = "audit-worker-error"
        detail = f"[{rule}] {where}: its result could not come back from the worker: {type(error).__name__}: {error}"
    return RowResult(raw.index, raw.line, rule, detail[:MAX_DETAIL])


def _run_parallel(source: ModelSource, tokenizer: str | None, settings: AuditSettings,
                  batches: Iterable[list[RawRow]], workers: int, done: Callable[[list[RowResult]], None],
                  summary: AuditSummary) -> None:
    global _WORKER
    _WORKER = (source, settings)  # inherited by forked workers: no reload
    pool = _Pool(workers, (source.spec, tokenizer, settings))
    try:
        _Parallel(pool, done, summary).run(batches)
    except BaseException:
        pool.kill()  # interrupted: the workers go now, with the main process
        raise
    pool.close()


def run_audit(source: ModelSource, path: str, settings: AuditSettings, *, workers: int = 1,
              tokenizer: str | None = None, on_rows: Callable[[int], None] | None = None) -> AuditSummary:
    """Encode every row of ``path``; ``on_rows(n)`` is called as rows complete (for a progress bar).

    Stops early, with ``summary.interrupted`` set and the workers gone, on ``AuditInterrupted`` or
    ``KeyboardInterrupt``."""
    summary = AuditSummary(max_length=settings.max_length)
    start = time.perf_counter()

    def done(results: list[RowResult]) -> None:
        for result in results:
            summary.add(result)
        if on_rows is not None:
            on_rows(len(results))

    counts: Counter = Counter()
    batches = _batched(iter_raw(path, counts), BATCH_ROWS)
    try:
        if workers <= 1:
            for batch in batches:
                done([audit_raw(source, settings, raw) for raw in batch])
        else:
            _run_parallel(source, tokenizer, settings, batches, workers, done, summary)
    except AuditInterrupted as exc:
        summary.interrupted = exc.signal_name
    except KeyboardInterrupt:
        summary.interrupted = "SIGINT"
    summary.blank_lines = counts["blank_lines"]
    summary.seconds = time.perf_counter() - start
    return summary
