"""Make ms-swift's silent switch-off of GRPO importance-sampling correction loud.

ms-swift turns rollout importance-sampling correction off for the whole batch, without a word, when the rollout
logprobs do not match the completion tokens one for one: ``build_rollout_logps`` returns None (and its multi-turn
loop empties a trajectory's ``rollout_logprobs``). ``install_logprob_guard`` wraps ``build_rollout_logps`` to raise
(or warn) instead; registering the plugin installs it in the mode ``$SWIFT_EXT_LOGPROB_GUARD`` says
(``configure_logprob_guard``): ``raise`` (default; ``RolloutAlignmentError`` with rule ``rollout-is-disabled``),
``warn`` (a warning, then ms-swift's behaviour) or ``off`` (ms-swift's behaviour).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ..rollout.diagnose import RolloutAlignmentError

logger = logging.getLogger(__name__)

LOGPROB_GUARD_ENV = "SWIFT_EXT_LOGPROB_GUARD"
LOGPROB_GUARD_MODES = ("raise", "warn", "off")


def logprob_guard_mode() -> str:
    """``$SWIFT_EXT_LOGPROB_GUARD`` (``raise`` when unset); anything but raise/warn/off is an error."""
    value = os.environ.get(LOGPROB_GUARD_ENV, "").strip().lower() or "raise"
    if value not in LOGPROB_GUARD_MODES:
        raise ValueError(f"{LOGPROB_GUARD_ENV}={value!r}: expected one of {', '.join(LOGPROB_GUARD_MODES)}")
    return value


def configure_logprob_guard(mode: str | None = None, *, module: Any = None) -> Callable[[], None] | None:
    """Guard ms-swift's ``build_rollout_logps`` (``install_logprob_guard``) in ``mode``
    (default: ``logprob_guard_mode()``); ``off`` removes a guard installed before.

    ``module``: where ``build_rollout_logps`` lives (default ``swift.rlhf_trainers.utils``). Returns the function
    that removes the guard, or None (``off``, or the module cannot be imported: then GRPO cannot run either).
    """
    from swift.utils import get_logger

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


def explain_logprob_mismatch(rollout_logprobs: Sequence[Any], completion_counts: Sequence[int]) -> list[str]:
    """Why ms-swift's ``build_rollout_logps`` would return None for this batch (empty list: it would not).

    ``rollout_logprobs``: per sample, nested per turn (``OnPolicySample.rollout_logprobs``) or None/empty;
    ``completion_counts``: per sample, the number of completion (labelled) tokens.
    """
    problems = []
    present = [bool(lp) for lp in rollout_logprobs]
    if not any(present):
        return []
    for i, (nested, count) in enumerate(zip(rollout_logprobs, completion_counts)):
        if not nested:
            problems.append(f"sample {i} has no rollout logprobs (ms-swift empties them when a multi-turn "
                            "rollout's logprobs do not match its loss mask) while other samples have them")
            continue
        flat = [lp for turn in nested for lp in (turn if isinstance(turn, (list, tuple)) else [turn])]
        if any(lp is None for lp in flat):
            problems.append(f"sample {i} has a None logprob")
        elif len(flat) not in (count, count + 1):
            problems.append(f"sample {i}: {len(flat)} rollout logprobs for {count} completion tokens")
    return problems


def install_logprob_guard(mode: str = "raise", module: Any = None):
    """Wrap ms-swift's ``build_rollout_logps`` so a mismatch that would silently disable importance-sampling
    correction raises ``RolloutAlignmentError`` (``mode="raise"``) or logs a warning (``"warn"``).

    ``module``: where ``build_rollout_logps`` lives (default ``swift.rlhf_trainers.utils``, whose
    ``collate_to_grpo_micro_batch`` looks it up at call time). Returns a function that removes the guard.
    """
    if mode not in ("raise", "warn"):
        raise ValueError("mode must be 'raise' or 'warn'")
    if module is None:
        from swift.rlhf_trainers import utils as module
    swift_utils = module

    original = getattr(swift_utils.build_rollout_logps, "__wrapped_by_swift_ext__", swift_utils.build_rollout_logps)

    def guarded(rollout_logprobs_list, completion_mask, device):
        result = original(rollout_logprobs_list, completion_mask, device)
        if result is None:
            counts = [int(row.sum().item()) for row in completion_mask]
            problems = explain_logprob_mismatch(list(rollout_logprobs_list), counts)
            if problems:
                message = ("[swift-ext] ms-swift would silently turn off rollout importance-sampling correction "
                           "for this batch: " + "; ".join(problems) + ". The completion tokens (labels != -100) "
                           "must be exactly the sampled tokens with loss_mask 1.")
                if mode == "raise":
                    raise RolloutAlignmentError(message, rule="rollout-is-disabled")
                warnings.warn(message, stacklevel=2)
                logger.warning(message)
        return result

    guarded.__wrapped_by_swift_ext__ = original
    swift_utils.build_rollout_logps = guarded

    def uninstall() -> None:
        swift_utils.build_rollout_logps = original

    return uninstall


__all__ = [
    "LOGPROB_GUARD_ENV",
    "LOGPROB_GUARD_MODES",
    "configure_logprob_guard",
    "explain_logprob_mismatch",
    "install_logprob_guard",
    "logprob_guard_mode",
]
