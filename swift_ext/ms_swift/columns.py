"""The columns the data hook adds to a dataset row, read back by the parity template.

They are the whole contract between ``data.py`` (which writes them while a parity template trains) and
``template.py`` (which reads them from ``inputs.extra_kwargs``): neither module imports the other. ms-swift keeps
them because ``data.install`` adds them to ``RowPreprocessor.standard_keys``.
"""

from __future__ import annotations

SIDE_CHANNEL = "swift_ext_messages"
"""The row's original messages as JSON text, for rows ms-swift's loader would rewrite lossily
(``side_channel.needs_side_channel``); the template reads them instead of ms-swift's form."""
SAMPLE_COLUMN = "swift_ext_sample"
"""Which sample of its conversation a row stands for (0, 1, ...), when the conversation needs several."""
ROW_COLUMN = "swift_ext_row"
"""Where a dataset file's row is (``row 12 (line 14 of train.jsonl)``), so an error can name it."""

COLUMNS = (SIDE_CHANNEL, SAMPLE_COLUMN, ROW_COLUMN)
