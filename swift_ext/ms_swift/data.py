"""Make the data reach the template intact, and give every sample its own dataset row.

ms-swift's dataset loader keeps only role/content/loss/loss_scale on each message: ``reasoning_content`` is
dropped, OpenAI ``tool_calls`` become ``tool_call`` messages (a JSON string of arguments is parsed, so its exact
text is lost), tool-call ids disappear. Without touching ms-swift's files, :func:`install` wraps
``MessagesPreprocessor.preprocess`` (the preprocessor ms-swift picks for any ``messages``/``conversations``
dataset, including ``--dataset file.jsonl``) so that, while a parity template is training:

* the row's original messages are kept, as JSON text, in a ``swift_ext_messages`` column that the template
  reads instead of ms-swift's rewritten form (only for rows where the rewrite would lose something);
* a conversation that needs several samples becomes several rows (``swift_ext_sample`` = 0, 1, ...), so that
  lazy (``--lazy_tokenize true``) and pre-tokenized datasets both keep every sample, and a sample that lost
  all its labels to ``--max_length`` never becomes a row.

A third column, ``swift_ext_row``, names each row of a dataset file (``row 12 (line 14 of train.jsonl)``) so that
an error the parity template raises for it says which row it is (ms-swift logs the traceback of a failing row
without its index). The columns are added to ``RowPreprocessor.standard_keys`` so ms-swift keeps them. Nothing
changes while no parity template is training (ms-swift's behaviour is then untouched). Rows with no assistant
turn (the prompts of a GRPO / GKD dataset: ms-swift puts the template in ``train`` mode for those too) and rows
whose assistant turns are token ids are never expanded.

This module and ``template.py`` do not import each other: the columns are their contract (``columns.py``), the
template in train mode is found through ``state.active_training_template``, and the template's public
``parity_probe_inputs`` / ``parity_samples`` do the encoding.
"""

from __future__ import annotations

import os
from typing import Any

from swift.dataset.preprocessor import MessagesPreprocessor, RowPreprocessor
from swift.utils import get_logger

from . import state
from .columns import COLUMNS, ROW_COLUMN, SAMPLE_COLUMN, SIDE_CHANNEL
from .grpo import has_token_id_content
from .side_channel import needs_side_channel, side_channel_text
from .state import active_training_template

logger = get_logger()

__all__ = ["counts", "install", "needs_side_channel"]


def _has_turn_to_expand(messages: Any) -> bool:
    """False for rows the hook leaves as they are: prompts with no assistant turn (GRPO / GKD datasets, whose
    template is in ``train`` mode too) and conversations with token-id assistant turns (one sample each)."""
    if not isinstance(messages, list):
        return False
    if has_token_id_content([m for m in messages if isinstance(m, dict)]):
        return False
    return any(isinstance(m, dict) and m.get("role") in ("assistant", "tool_call") for m in messages)


def _expand(template, row: dict[str, Any]) -> list[dict[str, Any]]:
    if not _has_turn_to_expand(row.get("messages")):
        return [row]
    probe = {k: v for k, v in row.items() if k != SAMPLE_COLUMN}
    # A ParityError propagates, naming the row (ROW_COLUMN): ms-swift logs it and drops the row (or stops, with
    # --strict true).
    samples = template.parity_samples(template.parity_probe_inputs(probe))
    state.count_data("rows")
    if not samples:
        dropped = state.count_data("dropped_rows")
        logger.warning(f"[swift-ext] a conversation lost every sample to --max_length and is not used "
                       f"({dropped} so far)")
        return []
    state.count_data("samples", len(samples))
    if len(samples) == 1:
        return [row]
    return [{**row, SAMPLE_COLUMN: k} for k in range(len(samples))]


def install() -> None:
    """Idempotent. Set ``SWIFT_EXT_KEEP_MESSAGES=0`` to keep ms-swift's loader exactly as it is."""
    if getattr(MessagesPreprocessor, "_swift_ext_installed", False):
        return
    if os.environ.get("SWIFT_EXT_KEEP_MESSAGES", "1") == "0":
        return
    for key in COLUMNS:
        if key not in RowPreprocessor.standard_keys:
            RowPreprocessor.standard_keys.append(key)
    # Cached preprocessing from before the hook would lack the new columns.
    RowPreprocessor.cache_format_version = f"{RowPreprocessor.cache_format_version}+swift_ext1"
    original = MessagesPreprocessor.preprocess

    def preprocess(self, row):
        template = active_training_template()
        if template is None:
            return original(self, row)
        side = side_channel_text(row.get("messages"))
        result = original(self, row)
        if result is None:
            return None
        rows = [result] if isinstance(result, dict) else list(result)
        out = []
        for r in rows:
            if side is not None:
                r[SIDE_CHANNEL] = side
            out.extend(_expand(template, r))
        return out

    preprocess.__wrapped__ = original
    MessagesPreprocessor.preprocess = preprocess
    MessagesPreprocessor._swift_ext_installed = True
    _name_file_rows()


def _name_file_rows() -> None:
    """Wrap the ``datasets.load_dataset`` call of ms-swift's loader for dataset files (``--dataset train.jsonl``):
    while a parity template trains, each row gets ``ROW_COLUMN``, its index and, in JSON lines, its line."""
    from swift.dataset import loader

    load = loader.hf_load_dataset

    def hf_load_dataset(file_type, *args, data_files=None, **kwargs):
        dataset = load(file_type, *args, data_files=data_files, **kwargs)
        if active_training_template() is None or not isinstance(data_files, str):
            return dataset
        lines = _line_numbers(data_files) if file_type == "json" else None
        if lines is not None and hasattr(dataset, "__len__") and len(lines) != len(dataset):
            lines = None  # not one row per line (a JSON array, a multi-line object): the line cannot be known

        def where(index: int) -> str:
            known = lines is not None and index < len(lines)
            return f"row {index} ({f'line {lines[index]} of ' if known else ''}{data_files})"

        if hasattr(dataset, "add_column"):
            return dataset.add_column(ROW_COLUMN, [where(i) for i in range(len(dataset))])
        return dataset.map(lambda row, i: {ROW_COLUMN: where(i)}, with_indices=True)  # streaming

    loader.hf_load_dataset = hf_load_dataset


def _line_numbers(path: str) -> list[int] | None:
    """The line of each row of a JSON-lines file: ``datasets`` skips blank (whitespace-only) lines."""
    try:
        with open(path, "rb") as fh:
            numbers = [n for n, line in enumerate(fh, 1) if line.strip()]
            fh.seek(0)
            array = fh.read(4096).lstrip().removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"[")
    except OSError:
        return None
    return None if array else numbers


def counts() -> dict[str, int]:
    """Rows seen, samples emitted and rows dropped by the expansion (this process)."""
    return state.data_counts()
