"""What a parity template reads from ms-swift's arguments and from the environment.

ms-swift's own options keep their meaning where the parity path can honour them exactly and are refused where it
cannot (``--loss_scale``). They are read when a row is encoded, never copied at construction: ms-swift's GRPO
trainers change ``template.max_length`` between calls, and a row's ``chat_template_kwargs`` arrive with the row.

==============================  ===================================================================
``--enable_thinking``            the family's thinking kwarg (``Switches.render_kwargs``)
``--preserve_thinking``          history reasoning ``keep`` (``template``: the template's own)
``chat_template_kwargs``         the template's and then the row's; ``preserve_thinking`` is spelled the
                                 family's way
``--loss_scale``                 any strategy, on exact tokens (``loss_scale.loss_weights``)
``SWIFT_EXT_REASONING_POLICY``   the core's ``reasoning_policy`` (``error`` when unset)
==============================  ===================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..families import Family

REASONING_POLICY_ENV = "SWIFT_EXT_REASONING_POLICY"


def check_loss_scale(loss_scale: str | None, template_type: str) -> None:
    """A ``--loss_scale`` the parity template can honour on exact tokens (``loss_scale.loss_weights``): every
    strategy of ms-swift's ``loss_scale_map`` and swift-ext's ``parity_spans``, chained or not. ``all`` trains the
    prompt tokens too: allowed, with one warning."""
    from .loss_scale import loss_weights

    if loss_weights(loss_scale).train_prompt:
        from . import state

        state.log_once(f"loss-scale-all-{template_type}",
                       f"[swift-ext] --loss_scale {loss_scale} with {template_type}: every token is trained, prompt "
                       "tokens included. The tokens are still the inference-exact ones, but the model also learns "
                       "to write the system, user and tool text it is only ever given.", warning=True)


def reasoning_policy() -> str:
    """The core's ``reasoning_policy`` (``$SWIFT_EXT_REASONING_POLICY``): a turn whose reasoning the template drops."""
    return os.environ.get(REASONING_POLICY_ENV, "error")


@dataclass(frozen=True)
class Switches:
    """``--enable_thinking`` / ``--preserve_thinking`` as the user gave them (None: not given).

    ms-swift resolves both into its template meta; the parity template keeps what the user said, since the model's
    own template decides the defaults."""

    enable_thinking: bool | None = None
    preserve_thinking: bool | None = None

    def render_kwargs(self, family: Family, template_kwargs: Mapping[str, Any] | None,
                      row_kwargs: Mapping[str, Any] | None, thinking_key: str) -> tuple[dict[str, Any], str]:
        """The chat-template kwargs and the core's ``history_reasoning`` for one row.

        ``template_kwargs``: the template's ``chat_template_kwargs``; ``row_kwargs``: the row's (they win);
        ``thinking_key``: ms-swift's name of the thinking switch, for a family that names none."""
        kwargs: dict[str, Any] = dict(template_kwargs or {})
        if self.enable_thinking is not None:
            kwargs[family.thinking_kwarg or thinking_key] = bool(self.enable_thinking)
        kwargs.update(row_kwargs or {})
        history = "keep" if self.preserve_thinking else "template"
        if "preserve_thinking" in kwargs and family.keep_history_kwarg not in (None, "preserve_thinking"):
            # ms-swift's generic switch, spelled the family's way.
            history = "keep" if kwargs.pop("preserve_thinking") else "template"
        return kwargs, history
