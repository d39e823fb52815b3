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

The package, one module per job (importing it does not import ms-swift; ``register()`` does):

- ``template``: the parity template class, ms-swift's hooks overridden, each delegating to a module below;
- ``rows``: what the template makes of one row (training samples, token-id turns, the inference prompt), and its
  per-template state;
- ``family``: which family a template encodes with (named, or detected for ``hf_parity``);
- ``options``: what the template reads from ms-swift's arguments and the environment;
- ``conversion`` / ``side_channel``: an ms-swift row as the HF conversation the core takes, and the column that
  keeps the original messages where ms-swift's loader would lose something;
- ``encoding``: the ids handed to ms-swift (sample loss scales, contexts, the inference prompt, the sample cache);
- ``truncation``: ``--max_length`` / ``--truncation_strategy`` per sample, and the sample a row stands for;
- ``report``: errors naming their row, dropped samples, counters;
- ``grpo``: conversations whose assistant turns are token ids (ms-swift GRPO);
- ``logprob_guard``: the importance-sampling-correction guard;
- ``data``: the dataset hook; ``columns``: the columns it adds (its only contract with ``template``);
- ``registry`` / ``agent``: registration of the templates and agent templates;
- ``vision`` / ``video``: media through ms-swift's own loading, sized and placed as the model's processor does
  (and text-only use of ms-swift's vision templates);
- ``compat``: narrow fixes of ms-swift's own model code where a known broken combination is detected (ms-swift
  4.6's Gemma-4 forward with transformers >= 5.15's per-image image features);
- ``state``: every piece of module-level state, documented.
"""

from __future__ import annotations

from pathlib import Path

from . import state
from .columns import ROW_COLUMN, SAMPLE_COLUMN, SIDE_CHANNEL
from .logprob_guard import LOGPROB_GUARD_ENV, LOGPROB_GUARD_MODES, configure_logprob_guard, logprob_guard_mode


def plugin_path() -> str:
    """Absolute path of the file to pass to ``--external_plugins``."""
    return str(Path(__file__).resolve().parent.parent / "plugin.py")


def register() -> list[str]:
    """Register every parity template and agent template, install the data hook, the GRPO logprob guard
    (``$SWIFT_EXT_LOGPROB_GUARD``) and the Gemma-4 image-feature shim (``compat``; idempotent)."""
    if state.registered() is None:
        from .compat import install_gemma4_image_features
        from .data import install
        from .loss_scale import register as register_loss_scale
        from .registry import register_parity_templates

        mode = logprob_guard_mode()  # a bad $SWIFT_EXT_LOGPROB_GUARD fails before anything is registered
        register_loss_scale()
        state.set_registered(register_parity_templates())
        install()
        configure_logprob_guard(mode)
        install_gemma4_image_features()
    return state.registered()


__all__ = [
    "LOGPROB_GUARD_ENV",
    "LOGPROB_GUARD_MODES",
    "ROW_COLUMN",
    "SAMPLE_COLUMN",
    "SIDE_CHANNEL",
    "configure_logprob_guard",
    "logprob_guard_mode",
    "plugin_path",
    "register",
]
