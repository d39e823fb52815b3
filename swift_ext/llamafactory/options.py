"""Settings of the parity templates, read from the ``swift_ext:`` section of a LLaMA-Factory YAML.

LLaMA-Factory rejects keys it does not know, so ``swift-ext lf train`` takes the
``swift_ext`` section out of the config before LLaMA-Factory parses it, and hands
the settings to every process (including the ones torchrun starts) in the
``SWIFT_EXT_LF_OPTIONS`` environment variable as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ParityError
from ..options import EncodeOptions
from ..weights import kind_weights

ENV_VAR = "SWIFT_EXT_LF_OPTIONS"

TRUNCATION_MODES = ("turns", "drop", "error")
ON_ERROR_MODES = ("raise", "skip")


POLICY_KEYS = tuple(f.name for f in fields(EncodeOptions))
"""The core's policies, written flat in the YAML section (``reasoning_policy: drop``)."""


@dataclass(frozen=True)
class ParityOptions:
    """What ``swift_ext.encode`` is called with (the core's ``EncodeOptions`` and what selects the encoder), plus
    how LLaMA-Factory's ``cutoff_len`` and a rejected conversation are handled."""

    policies: EncodeOptions = field(default_factory=EncodeOptions)
    """``reasoning_policy``, ``history_reasoning``, ``train_turns``, ``arguments_policy`` (flat keys in the YAML;
    ``train_turns`` is set by LLaMA-Factory's ``mask_history``)."""
    family: str | None = None
    """Family for ``hf_parity`` (``<family>_parity`` names it already); None: detect from the template."""
    strict: bool = False
    """Raise when no family description recognises the template (``hf_parity`` only)."""
    stop_strings: tuple[str, ...] | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    truncation: str = "turns"
    """A sample longer than ``cutoff_len``: ``turns`` keeps its whole turns that fit (drops the
    sample when not even the first fits), ``drop`` drops the sample, ``error`` raises."""
    on_error: str = "raise"
    """A conversation the core rejects: ``raise`` stops, ``skip`` leaves it out and counts it."""
    span_weights: dict[str, float] | None = None
    """Parts of each completion not to train (``swift_ext.spans`` kinds: reasoning, empty_reasoning, answer,
    tool_call, stop, other), e.g. ``{empty_reasoning: 0}``. LLaMA-Factory has no per-token weights, so a kind is
    masked (0) or trained (1); a token that straddles two kinds is trained when either is."""

    def __post_init__(self) -> None:
        if self.truncation not in TRUNCATION_MODES:
            raise ValueError(f"swift_ext.truncation must be one of {TRUNCATION_MODES}, got {self.truncation!r}")
        if self.on_error not in ON_ERROR_MODES:
            raise ValueError(f"swift_ext.on_error must be one of {ON_ERROR_MODES}, got {self.on_error!r}")
        if not isinstance(self.chat_template_kwargs, Mapping):
            raise ValueError("swift_ext.chat_template_kwargs must be a mapping")
        if self.stop_strings is not None:
            stops = (self.stop_strings,) if isinstance(self.stop_strings, str) else tuple(self.stop_strings)
            if not stops or not all(isinstance(s, str) and s for s in stops):
                raise ValueError("swift_ext.stop_strings must be a list of non-empty strings")
            object.__setattr__(self, "stop_strings", stops)
        object.__setattr__(self, "chat_template_kwargs", dict(self.chat_template_kwargs))
        if self.span_weights is not None:
            given = self.span_weights
            weights = kind_weights(given, source="swift_ext.span_weights")  # PolicyError: unknown kind, not a number
            odd = {k: v for k, v in dict(given).items() if weights[k] not in (0.0, 1.0)}
            if odd:
                raise ValueError(f"swift_ext.span_weights {odd}: LLaMA-Factory has no per-token loss weights, so a "
                                 "kind can only be masked (0) or trained (1); use ms-swift's --loss_scale "
                                 "parity_spans for other weights")
            object.__setattr__(self, "span_weights", {k: weights[k] for k in given})

    @property
    def reasoning_policy(self) -> str:
        return self.policies.reasoning_policy.value

    @property
    def history_reasoning(self) -> str:
        return self.policies.history_reasoning.value

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> ParityOptions:
        data = dict(data or {})
        known = {f.name for f in fields(cls)} - {"policies"} | set(POLICY_KEYS) - {"train_turns"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown key(s) in the swift_ext section: {unknown}; known: {sorted(known)}")
        try:
            policies = EncodeOptions(**{key: data.pop(key) for key in POLICY_KEYS if key in data})
        except ParityError as exc:
            raise ValueError(f"swift_ext.{exc.detail}") from None
        return cls(policies=policies, **data)

    def to_json(self) -> str:
        data = asdict(self)
        data.update(self.policies.as_kwargs())
        del data["policies"], data["train_turns"]
        if data["stop_strings"] is not None:
            data["stop_strings"] = list(data["stop_strings"])
        return json.dumps(data, sort_keys=True)


def current_options() -> ParityOptions:
    """The options of this process: ``SWIFT_EXT_LF_OPTIONS`` when set, else the defaults."""
    text = os.environ.get(ENV_VAR)
    if not text:
        return ParityOptions()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_VAR} is not valid JSON: {exc}") from None
    return ParityOptions.from_mapping(data)


def configure(options: ParityOptions | Mapping[str, Any] | None = None, **kwargs: Any) -> ParityOptions:
    """Set the options of this process and of the processes it starts (torchrun workers)."""
    if options is None:
        options = ParityOptions.from_mapping(kwargs)
    elif not isinstance(options, ParityOptions):
        options = ParityOptions.from_mapping({**dict(options), **kwargs})
    elif kwargs:
        options = ParityOptions.from_mapping({**json.loads(options.to_json()), **kwargs})
    os.environ[ENV_VAR] = options.to_json()
    return options
