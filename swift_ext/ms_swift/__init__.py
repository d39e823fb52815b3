"""swift-ext for ms-swift 4.6: ``<family>_parity`` templates, agent templates and a data hook.

Use it with zero code::

    swift sft --external_plugins "$(swift-ext plugin-path)" --template qwen3_6_parity --template_backend jinja ...

(``python -m swift_ext.ms_swift plugin-path`` prints the same path.) From Python, ``swift_ext.ms_swift.register()``
does what the plugin file does.

Registering also guards GRPO's importance-sampling correction: ms-swift's ``build_rollout_logps`` returns None,
which silently turns the correction off for the whole batch, when the rollout logprobs do not match the completion
tokens one for one. ``SWIFT_EXT_LOGPROB_GUARD`` says what happens instead: ``raise`` (default;
``RolloutAlignmentError`` with rule ``rollout-is-disabled``), ``warn`` (a warning, then ms-swift's behaviour) or
``off`` (ms-swift's behaviour).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_registered: list[str] | None = None

LOGPROB_GUARD_ENV = "SWIFT_EXT_LOGPROB_GUARD"
LOGPROB_GUARD_MODES = ("raise", "warn", "off")


def plugin_path() -> str:
    """Absolute path of the file to pass to ``--external_plugins``."""
    return str(Path(__file__).resolve().parent.parent / "plugin.py")


def register() -> list[str]:
    """Register every parity template and agent template, install the data hook and the GRPO logprob guard
    (``$SWIFT_EXT_LOGPROB_GUARD``; idempotent)."""
    global _registered
    if _registered is None:
        from .data import install
        from .registry import register_parity_templates

        mode = logprob_guard_mode()  # a bad $SWIFT_EXT_LOGPROB_GUARD fails before anything is registered
        _registered = register_parity_templates()
        install()
        configure_logprob_guard(mode)
    return list(_registered)


def logprob_guard_mode() -> str:
    """``$SWIFT_EXT_LOGPROB_GUARD`` (``raise`` when unset); anything but raise/warn/off is an error."""
    value = os.environ.get(LOGPROB_GUARD_ENV, "").strip().lower() or "raise"
    if value not in LOGPROB_GUARD_MODES:
        raise ValueError(f"{LOGPROB_GUARD_ENV}={value!r}: expected one of {', '.join(LOGPROB_GUARD_MODES)}")
    return value


def configure_logprob_guard(mode: str | None = None, *, module: Any = None) -> Callable[[], None] | None:
    """Guard ms-swift's ``build_rollout_logps`` (``swift_ext.rollout_swift.install_logprob_guard``) in ``mode``
    (default: ``logprob_guard_mode()``); ``off`` removes a guard installed before.

    ``module``: where ``build_rollout_logps`` lives (default ``swift.rlhf_trainers.utils``). Returns the function
    that removes the guard, or None (``off``, or the module cannot be imported: then GRPO cannot run either).
    """
    from swift.utils import get_logger

    from ..rollout_swift import install_logprob_guard

    mode = logprob_guard_mode() if mode is None else mode
    if mode not in LOGPROB_GUARD_MODES:
        raise ValueError(f"logprob guard mode {mode!r}: expected one of {', '.join(LOGPROB_GUARD_MODES)}")
    if mode == "off":
        module = module if module is not None else sys.modules.get("swift.rlhf_trainers.utils")
        original = getattr(getattr(module, "build_rollout_logps", None), "__wrapped_by_swift_ext__", None)
        if original is not None:
            module.build_rollout_logps = original
        return None
    if module is None:
        try:
            import importlib

            module = importlib.import_module("swift.rlhf_trainers.utils")
        except Exception as exc:  # a missing optional dependency of ms-swift's RL stack (msgspec, ...)
            get_logger().info(f"[swift-ext] the GRPO logprob guard is not installed: swift.rlhf_trainers.utils "
                              f"cannot be imported ({exc!r}), so ms-swift's GRPO cannot run here either.")
            return None
    return install_logprob_guard(mode, module=module)


__all__ = ["LOGPROB_GUARD_ENV", "configure_logprob_guard", "logprob_guard_mode", "plugin_path", "register"]
