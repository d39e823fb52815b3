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

from pathlib import Path

from .logprob_guard import LOGPROB_GUARD_ENV, LOGPROB_GUARD_MODES, configure_logprob_guard, logprob_guard_mode

_registered: list[str] | None = None


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


__all__ = ["LOGPROB_GUARD_ENV", "LOGPROB_GUARD_MODES", "configure_logprob_guard", "logprob_guard_mode", "plugin_path",
           "register"]
