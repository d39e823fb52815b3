"""Deprecated: moved to ``swift_ext.ms_swift.grpo`` (token-id turns) and ``swift_ext.ms_swift.logprob_guard``."""
import warnings

from .ms_swift.grpo import *  # noqa: F403
from .ms_swift.logprob_guard import explain_logprob_mismatch, install_logprob_guard  # noqa: F401

warnings.warn("swift_ext.rollout_swift moved to swift_ext.ms_swift.grpo and swift_ext.ms_swift.logprob_guard",
              DeprecationWarning, stacklevel=2)
