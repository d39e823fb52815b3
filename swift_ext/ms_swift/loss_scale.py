"""ms-swift's ``--loss_scale`` on exact tokens.

ms-swift applies a loss scale by splitting the response *string* into spans (``LossScale.get_loss_scale``) and
tokenizing each span on its own, which changes the tokens at every span edge. The parity templates keep the
tokens of ``--loss_scale default`` and only weigh them (``swift_ext.weights``: the strategy's split runs on each
trained turn's exact completion text; a token gets the largest weight of the characters it covers). Prompt tokens
get no weight, except under ``--loss_scale all``, which the user picks to train every token.

Every strategy of ``loss_scale_map`` works, chains included (``last_round+hermes+ignore_empty_think``), and so do
strategies a user registers there from a plugin. ``parity_spans`` is swift-ext's own: a weight per part of the
completion (``swift_ext.spans``: reasoning, empty_reasoning, answer, tool_call, stop, other), from the JSON in
``$SWIFT_EXT_SPAN_WEIGHTS`` (the text, or a file path), e.g. ``{"reasoning": 0.5, "tool_call": 2.0,
"empty_reasoning": 0}``; kinds not named weigh 1. Per-message ``loss`` / ``loss_scale`` win over any strategy, as
in ms-swift.
"""

from __future__ import annotations

import os
from typing import Any

from swift.loss_scale import LossScale, get_loss_scale, loss_scale_map

from ..errors import PolicyError
from ..weights import LossWeights, kind_weights

PARITY_SPANS = "parity_spans"
SPAN_WEIGHTS_ENV = "SWIFT_EXT_SPAN_WEIGHTS"
BASE_STRATEGIES = ("default", "last_round", "all")


def span_weights() -> dict[str, float]:
    """The weight of each part kind for ``parity_spans``: ``$SWIFT_EXT_SPAN_WEIGHTS`` (JSON text or a file)."""
    return kind_weights(os.environ.get(SPAN_WEIGHTS_ENV, ""), source=f"${SPAN_WEIGHTS_ENV}")


class ParitySpansLossScale(LossScale):
    """``--loss_scale parity_spans``: weights per part of the completion. Only the parity templates know the
    parts; with any other template there is no exact completion to read them from, and it raises."""

    def get_loss_scale(self, context: Any, **kwargs: Any):
        raise ValueError(f"--loss_scale {PARITY_SPANS} needs a *_parity template (swift-ext): other templates "
                         "split the response string, the parity templates read the completion's own parts")

    @property
    def is_binary_loss_scale(self) -> bool:
        return all(weight in (0.0, 1.0) for weight in span_weights().values())


def register() -> None:
    """Make ``parity_spans`` a name ``--loss_scale`` accepts (idempotent)."""
    loss_scale_map.setdefault(PARITY_SPANS, ParitySpansLossScale)


def loss_weights(loss_scale: str | None) -> LossWeights:
    """``--loss_scale`` as ``LossWeights``: the base (``default`` / ``last_round`` / ``all``), ``parity_spans``'
    kind weights, and the other strategies of the chain as one text split."""
    name = loss_scale or "default"
    names = name.split("+")
    base = names[0] if names[0] in BASE_STRATEGIES else "default"
    rest = [n for n in (names[1:] if names[0] in BASE_STRATEGIES else names) if n not in ("base", "")]
    unknown = [n for n in rest if n not in loss_scale_map]
    if unknown:
        raise PolicyError(f"--loss_scale {name!r}: no loss scale named {unknown} (known: "
                          f"{', '.join(sorted(loss_scale_map))})", rule="policy-loss-scale")
    kinds = span_weights() if PARITY_SPANS in rest else None
    others = [n for n in rest if n != PARITY_SPANS]
    split = None
    if others:
        strategy = get_loss_scale("+".join(others))

        def split(text: str, query: str | None) -> tuple[list[str], list[float]]:
            return strategy.get_loss_scale(text, query=query)

    return LossWeights(kinds=kinds, split=split, train_prompt=base == "all", last_round=base == "last_round", name=name)
