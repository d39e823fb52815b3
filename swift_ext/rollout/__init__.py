"""Rollout records (sampled ids + logprobs per generated turn) -> training samples that line up by construction.

    from swift_ext.rollout import encode_rollout
    result = encode_rollout(tokenizer, record, engine_history="keep")
    for sample in result.samples:
        sample.input_ids, sample.labels, sample.loss_mask, sample.logprobs

The sampled ids are kept verbatim at their turn's position (generated text is never re-tokenized); everything
else is rendered by the chat template exactly as the engine rendered its prompt; labels and ``loss_mask`` cover
the sampled ids only; ``logprobs`` has one value per labelled position. Any disagreement between the record and
the template raises ``RolloutAlignmentError`` naming the turn, tokens consumed vs logprobs expected, the first
differing token with context, and the likely cause. See ``docs/rollout.md``.

``engine_history`` (``keep`` / ``strip``) says how the engine built its prompts; it was called
``history_reasoning`` before, which is still accepted, but that name is the core's policy for a template's own
keep-history switch (``swift_ext.encode(..., history_reasoning="keep")``), a different thing.
"""

from .build import (
    RolloutEncoding,
    RolloutSample,
    RolloutTurnSpan,
    detect_engine_history,
    detect_history_reasoning,
    encode_rollout,
    engine_prompts,
    verify_rollout,
)
from .diagnose import CAUSES, RolloutAlignmentError
from .prompts import POLICIES
from .record import GeneratedTurn, RolloutRecord, parse_record

__all__ = [
    "CAUSES",
    "POLICIES",
    "GeneratedTurn",
    "RolloutAlignmentError",
    "RolloutEncoding",
    "RolloutRecord",
    "RolloutSample",
    "RolloutTurnSpan",
    "detect_engine_history",
    "detect_history_reasoning",
    "encode_rollout",
    "engine_prompts",
    "parse_record",
    "verify_rollout",
]
