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

Both columns are added to ``RowPreprocessor.standard_keys`` so ms-swift keeps them. Nothing changes while no
parity template is training (ms-swift's behaviour is then untouched). Rows with no assistant turn (the prompts of
a GRPO / GKD dataset: ms-swift puts the template in ``train`` mode for those too) and rows whose assistant turns are
token ids are never expanded.
"""

from __future__ import annotations

import json
import os
from typing import Any

from swift.dataset.preprocessor import MessagesPreprocessor, RowPreprocessor
from swift.utils import get_logger

from ..rollout_swift import has_token_id_content
from .convert import SIDE_CHANNEL
from .template import SAMPLE_COLUMN, active_training_template

logger = get_logger()

_SWIFT_KEYS = {"role", "content", "loss", "loss_scale"}
_counts = {"rows": 0, "samples": 0, "dropped_rows": 0}


def needs_side_channel(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            return False  # sharegpt or another form: ms-swift's conversion is the only one
    for m in messages:
        extra = set(m) - _SWIFT_KEYS - ({"name"} if m.get("role") in ("tool", "tool_response") else set())
        if any(m.get(k) is not None for k in extra):
            return True
    return False


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
    # A ParityError propagates: ms-swift reports the row and drops it (or stops, with --strict true).
    samples = template.parity_samples(template._parity_probe_inputs(probe))
    _counts["rows"] += 1
    if not samples:
        _counts["dropped_rows"] += 1
        logger.warning("[swift-ext] a conversation lost every sample to --max_length and is not used "
                       f"({_counts['dropped_rows']} so far)")
        return []
    _counts["samples"] += len(samples)
    if len(samples) == 1:
        return [row]
    return [{**row, SAMPLE_COLUMN: k} for k in range(len(samples))]


def install() -> None:
    """Idempotent. Set ``SWIFT_EXT_KEEP_MESSAGES=0`` to keep ms-swift's loader exactly as it is."""
    if getattr(MessagesPreprocessor, "_swift_ext_installed", False):
        return
    if os.environ.get("SWIFT_EXT_KEEP_MESSAGES", "1") == "0":
        return
    for key in (SIDE_CHANNEL, SAMPLE_COLUMN):
        if key not in RowPreprocessor.standard_keys:
            RowPreprocessor.standard_keys.append(key)
    # Cached preprocessing from before the hook would lack the new columns.
    RowPreprocessor.cache_format_version = f"{RowPreprocessor.cache_format_version}+swift_ext1"
    original = MessagesPreprocessor.preprocess

    def preprocess(self, row):
        template = active_training_template()
        if template is None:
            return original(self, row)
        raw = row.get("messages")
        side = None
        if needs_side_channel(raw):
            try:
                side = json.dumps(raw, ensure_ascii=False)
            except (TypeError, ValueError):
                side = None
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


def counts() -> dict[str, int]:
    """Rows seen, samples emitted and rows dropped by the expansion (this process)."""
    return dict(_counts)
