"""Every piece of module-level state of the ms-swift adapter, in one place.

ms-swift calls the adapter from places that cannot hand it anything: its dataset loader runs without the template,
``--external_plugins`` imports the plugin file again in every process. What the adapter remembers across such calls
is here and nowhere else (``tests/ms_swift/test_architecture.py`` holds the other modules to that):

``_ACTIVE``
    The parity templates put in ``train`` mode, newest last, as weak references (a template that is gone is
    forgotten). The data hook asks ``active_training_template()`` for the newest one still training: ms-swift's
    ``swift sft`` builds the template, sets it to ``train`` and only then loads the dataset.
``_LOGGED``
    Keys of the messages ``log_once`` has logged in this process.
``_DATA_COUNTS``
    The data hook's counters for this process: rows expanded, samples emitted, rows dropped.
``_REGISTERED``
    The template names ``swift_ext.ms_swift.register()`` registered (None until it ran; it runs once).

State kept on ms-swift's own objects, patched once and marked so that a second install changes nothing:
``MessagesPreprocessor.preprocess`` (``_swift_ext_installed``), ``RowPreprocessor.standard_keys`` and
``cache_format_version``, ``swift.dataset.loader.hf_load_dataset`` (``data.py``), GRPO's
``build_rollout_logps`` (``__wrapped_by_swift_ext__``, ``logprob_guard.py``), and ms-swift 4.6's
``swift.model.models.gemma._patch_gemma4_forward`` with the ``get_image_features`` of each model it patches
(``__wrapped_by_swift_ext__``, ``compat.py``).

Per-template state (the family's encoder, the sample cache, the counters of ``parity_report``) lives on each
template instance (``template.ParityTemplateMixin.__init__``) and is rebuilt in a dataloader worker.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_ACTIVE: list[weakref.ref] = []
_ACTIVE_LOCK = threading.Lock()
_LOGGED: set[str] = set()
_DATA_COUNTS: dict[str, int] = {"rows": 0, "samples": 0, "dropped_rows": 0}
_REGISTERED: list[str] = []


def remember_training_template(template: Any) -> None:
    """Called when a parity template enters ``train`` mode."""
    with _ACTIVE_LOCK:
        _ACTIVE.append(weakref.ref(template))


def active_training_template():
    """The most recent parity template in ``train`` mode (SFT; used by the dataset hook), or None."""
    with _ACTIVE_LOCK:
        while _ACTIVE:
            template = _ACTIVE[-1]()
            if template is not None and template.mode == "train" and template.task_type == "causal_lm":
                return template
            _ACTIVE.pop()
    return None


def log_once(key: str, message: str, *, warning: bool = False) -> None:
    """Log ``message`` (info, or a warning; ms-swift's logger) the first time ``key`` is seen in this process."""
    if key not in _LOGGED:
        _LOGGED.add(key)
        from swift.utils import get_logger

        (get_logger().warning if warning else get_logger().info)(message)


def count_data(key: str, n: int = 1) -> int:
    """Add ``n`` to the data hook's counter ``key``; returns the new value."""
    _DATA_COUNTS[key] += n
    return _DATA_COUNTS[key]


def data_counts() -> dict[str, int]:
    """Rows seen, samples emitted and rows dropped by the data hook's expansion (this process)."""
    return dict(_DATA_COUNTS)


def registered() -> list[str] | None:
    """The names ``register()`` registered, or None before it ran."""
    return list(_REGISTERED) or None


def set_registered(names: list[str]) -> None:
    """Record what ``register()`` registered (a non-empty list: ``hf_parity`` at least)."""
    _REGISTERED[:] = names
