"""``swift-ext audit --engine ray``: the same audit on Ray Data, for datasets one machine cannot encode in time.

The pass is the process pool's (``auditing.run_audit``), distributed:

- **reading** is a Ray Data datasource (``ray.data.read_datasource``) whose read tasks cut the file into rows of
  JSON text exactly as ``rows.iter_raw`` does: a JSON-lines file in byte ranges that start at a line, a parquet
  file by row group. Nothing is parsed while reading, so a line that is not JSON or not UTF-8 reaches the encoder
  as a row like any other (one failed row, never a failed read task);
- **encoding** is ``Dataset.map_batches`` with a class-based UDF (``RowEncoder``): Ray starts ``--workers``
  actors, each loads the tokenizer once and encodes batches with ``auditing.audit_raw``, the function the pool's
  workers call;
- **the report** is aggregated in the driver by the same ``AuditSummary`` from the same ``RowResult``s, so
  ``--json`` is byte for byte the pool's apart from the timings (``seconds``, ``rows_per_second``,
  ``tokens_per_second``).

Row indices and line numbers are global (error messages name them), so the driver first walks the JSON-lines
file once to find where each range starts (its first line number and row index) and to count blank lines; for
parquet it reads the row counts from the file's metadata. The file must be readable at the same path from the
driver and every Ray node (a shared filesystem), as for ``swift sft``.

Ray is an optional dependency (``pip install "swift-ext[ray]"``), imported only when this engine runs.

What differs from the pool: a worker that dies (killed, out of memory, a crash in native code) stops the pass with
an error naming Ray's (exit 2), where the pool rebuilds itself and retries the lost rows one by one. Ray Data's
default, restarting the actor and retrying its batch forever, would loop on a row that kills its worker.
JSON arrays and ``save_to_disk`` folders are read by the pool engine only.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auditing import (
    TEST_KILL_LINE,
    AuditInterrupted,
    AuditSettings,
    AuditSummary,
    EngineError,
    RowResult,
    audit_raw,
)
from .rows import BOM, RawRow, _raw_objects
from .source import ModelSource, load_source

RANGE_BYTES = 4 << 20
"""A JSON-lines read task covers about this many bytes (more tasks when there are more workers than ranges)."""
BATCH_ROWS = 16
"""Rows per ``map_batches`` call: small, so a long conversation does not hold up the progress bar."""
INSTALL_HINT = 'pip install "swift-ext[ray]"'


@dataclass(frozen=True)
class LineRange:
    """Bytes ``[start, end)`` of a JSON-lines file, starting at line ``first_line`` (1-based), row ``first_row``."""

    path: str
    start: int
    end: int
    first_line: int
    first_row: int


def import_ray() -> Any:
    """``ray`` and ``ray.data``, or an ``EngineError`` telling the user how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineError(f"--engine ray needs Ray Data ({exc.name or 'ray'} is not installed): "
                          f"{INSTALL_HINT}") from None
    return ray


# ------------------------------------------------------------------ reading
def plan_line_ranges(path: str, target_bytes: int, min_ranges: int = 1) -> tuple[list[LineRange], int]:
    """Cut a JSON-lines file into ranges of about ``target_bytes`` that start at a line, with the line number and
    row index each starts at, and count its blank lines (not rows, as in ``rows.iter_raw``)."""
    size = os.path.getsize(path)
    step = max(1, min(target_bytes, size // max(1, min_ranges)))
    ranges: list[LineRange] = []
    offset = start = 0
    start_line, start_row = 1, 0
    row = blank = 0
    with open(path, "rb") as fh:
        for number, data in enumerate(fh, start=1):
            if offset - start >= step:
                ranges.append(LineRange(path, start, offset, start_line, start_row))
                start, start_line, start_row = offset, number, row
            offset += len(data)
            if number == 1 and data.startswith(BOM):
                data = data[len(BOM):]
            if data.strip():
                row += 1
            else:
                blank += 1
    if offset > start:
        ranges.append(LineRange(path, start, offset, start_line, start_row))
    return ranges, blank


def read_line_range(part: LineRange) -> Iterator[RawRow]:
    """The rows of one range, as ``rows._raw_lines`` cuts them: the same bytes, line numbers and row indices."""
    with open(part.path, "rb") as fh:
        fh.seek(part.start)
        chunk = fh.read(part.end - part.start)
    index = part.first_row
    pieces = chunk.split(b"\n")
    last = len(pieces) - 1
    for offset, data in enumerate(pieces):
        if offset < last:
            data += b"\n"
        elif not data:  # the range ends with its last line's newline
            break
        number = part.first_line + offset
        if number == 1 and data.startswith(BOM):
            data = data[len(BOM):]
        if not data.strip():
            continue
        yield RawRow(index, number, data)
        index += 1


def parquet_groups(path: str) -> list[tuple[str, int, int]]:
    """``(path, row group, first row index)`` for each row group of a parquet file."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    groups, first = [], 0
    for group in range(meta.num_row_groups):
        groups.append((path, group, first))
        first += meta.row_group(group).num_rows
    return groups


def read_parquet_group(path: str, group: int, first_row: int) -> Iterator[RawRow]:
    """The rows of one row group as ``rows._raw_objects`` makes them (one JSON text per row)."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(path).read_row_group(group).to_pylist()
    for raw in _raw_objects(iter(rows)):
        yield RawRow(raw.index + first_row, raw.line, raw.text, raw.rule, raw.detail)


def _block(rows: Iterator[RawRow]) -> Any:
    """One Arrow block: each row pickled whole (index, line, text, rule), so nothing is parsed before encoding."""
    import pyarrow as pa

    return pa.table({"raw": pa.array([pickle.dumps(raw) for raw in rows], type=pa.binary())})


def make_datasource(path: str, workers: int) -> Any:
    """A Ray Data ``Datasource`` over ``path`` whose read tasks yield the rows ``rows.iter_raw`` yields; also the
    number of blank lines (counted while planning)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    suffix = Path(path).suffix
    if Path(path).is_dir():
        raise EngineError(f"--engine ray reads JSON lines and parquet files; {path} is a folder (a saved Hugging "
                          "Face dataset): audit it with --engine pool, or write it as parquet")
    blank = 0
    if suffix == ".parquet":
        try:
            tasks = [(read_parquet_group, spec) for spec in parquet_groups(path)]
        except ImportError:
            raise EngineError("reading parquet needs pyarrow: pip install pyarrow") from None
    elif suffix == ".json" and _starts_like_array(path):
        raise EngineError(f"--engine ray reads JSON lines and parquet files; {path} is a JSON array: audit it with "
                          "--engine pool, or write it as JSON lines")
    else:
        ranges, blank = plan_line_ranges(path, RANGE_BYTES, min_ranges=2 * workers)
        tasks = [(read_line_range, (part,)) for part in ranges]

    class AuditRows(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return os.path.getsize(path)

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            return [ReadTask(lambda read=read, args=args: [_block(read(*args))],
                             BlockMetadata(num_rows=None, size_bytes=None, input_files=[path], exec_stats=None))
                    for read, args in tasks]

        def get_name(self) -> str:
            return "SwiftExtAuditRows"

    return AuditRows(), blank


def _starts_like_array(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4096).removeprefix(BOM).lstrip().startswith(b"[")


# ------------------------------------------------------------------ encoding
class RowEncoder:
    """The ``map_batches`` UDF: one per Ray actor, loading the tokenizer once, encoding rows as the pool does."""

    spec: str = ""
    tokenizer: str | None = None
    settings: AuditSettings | None = None

    def __init__(self) -> None:
        assert self.settings is not None, "use encoder_class(...), which binds the audit's settings"
        self.source: ModelSource = load_source(self.spec, self.tokenizer)
        self.audit_settings: AuditSettings = self.settings

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        kill_line = os.environ.get(TEST_KILL_LINE)  # the pool's test hook: this worker dies on that line
        results = []
        for blob in batch["raw"]:
            raw = pickle.loads(blob)
            if kill_line and str(raw.line) == kill_line:
                os.kill(os.getpid(), signal.SIGKILL)
            results.append(audit_raw(self.source, self.audit_settings, raw))
        return {"result": np.array([pickle.dumps(result) for result in results], dtype=object)}


def encoder_class(spec: str, tokenizer: str | None, settings: AuditSettings) -> type[RowEncoder]:
    """``RowEncoder`` bound to this audit's model and settings, as class attributes: Ray ships the class by value,
    so no constructor argument sits in the object store (which an actor restart would need)."""
    return type("RowEncoder", (RowEncoder,), {"spec": spec, "tokenizer": tokenizer, "settings": settings})


# ------------------------------------------------------------------ the pass
def run_audit_ray(source: ModelSource, path: str, settings: AuditSettings, *, workers: int = 1,
                  tokenizer: str | None = None, address: str | None = None,
                  on_rows: Callable[[int], None] | None = None) -> AuditSummary:
    """``auditing.run_audit`` on Ray Data: ``workers`` encoder actors; a local Ray started (and stopped) here
    unless ``address`` names a cluster to join (or Ray is already initialised in this process)."""
    ray = import_ray()
    summary = AuditSummary(max_length=settings.max_length)
    start = time.perf_counter()
    datasource, summary.blank_lines = make_datasource(path, workers)  # before Ray starts: a bad format fails fast
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    started = _connect(ray, address, workers)
    for sig, handler in handlers.items():  # ray.init installs its own SIGTERM handler, which kills the driver
        if callable(handler):
            signal.signal(sig, handler)
    try:
        try:
            for result in _results(ray, datasource, source.spec, tokenizer, settings, workers):
                summary.add(result)
                if on_rows is not None:
                    on_rows(1)
        except AuditInterrupted as exc:
            summary.interrupted = exc.signal_name
        except KeyboardInterrupt:
            summary.interrupted = "SIGINT"
        except ray.exceptions.RayError as exc:
            raise EngineError(f"the Ray pipeline failed after {summary.rows:,} rows: {_first_line(exc)}") from None
    finally:
        if started:
            ray.shutdown()  # the local Ray this command started, workers included
    summary.seconds = time.perf_counter() - start
    return summary


def _connect(ray: Any, address: str | None, workers: int) -> bool:
    """Join ``address``, or start a local Ray with a CPU for each encoder plus one for the read tasks; True when
    this call started (or joined) Ray and must shut it down."""
    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "configure_logging": True, "logging_level": "ERROR",
              "log_to_driver": False}
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO lines would interleave with the report
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise EngineError(f"cannot join the Ray cluster at {address}: {_first_line(exc)}") from None
    else:
        # "local": a Ray of its own, even where a cluster runs on this machine (ray.init() would join that one)
        ray.init(address="local", num_cpus=workers + 1, **common)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command draws its own
    context.print_on_execution_start = False
    return True


def _results(ray: Any, datasource: Any, spec: str, tokenizer: str | None, settings: AuditSettings,
             workers: int) -> Iterator[RowResult]:
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for these two yet and warns about **kwargs
        warnings.simplefilter("ignore")
        # Ray Data restarts a dead actor and retries its batch forever by default, so a row that kills its worker
        # would loop; here a dead worker stops the pass with Ray's error (the pool engine retries row by row).
        dataset = ray.data.read_datasource(datasource).map_batches(
            encoder_class(spec, tokenizer, settings), batch_size=BATCH_ROWS, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, max_restarts=0,
        )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        for blob in batch["result"]:
            yield pickle.loads(blob)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


__all__ = ["EngineError", "LineRange", "RowEncoder", "import_ray", "make_datasource", "plan_line_ranges",
           "read_line_range", "run_audit_ray"]
