"""What a parity template makes of one ms-swift row: the part of the template swift-ext's own code calls.

``ParityRows`` holds a template's per-row work and its per-template state (the family's encoder, the sample cache,
the report); ``template.ParityTemplateMixin`` adds ms-swift's hooks on top and calls into it:

* ``parity_samples``: training, the core's samples of the row with their per-token loss scales, after
  ``--max_length`` (the data hook calls it too, to give each sample its own dataset row);
* ``parity_token_turns``: a conversation whose assistant turns are token ids (ms-swift GRPO), in both modes;
* ``_parity_prompt_ids``: inference, the model's own generation prompt.

It reads the template's live ms-swift attributes (``tokenizer``, ``max_length``, ``truncation_strategy``,
``_loss_scale``, ``chat_template_kwargs``, ...), so it must come before an ms-swift ``Template`` in the bases.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from .. import encode as core_encode
from ..core import get_encoder
from ..families import Family
from ..options import EncodeOptions
from ..weights import LossWeights, last_queries
from .conversion import Converted, row_conversation
from .encoding import SampleCache, Scored, prompt_ids
from .grpo import TokenTurnEncoding, encode_token_turns, has_token_id_content, message_parser_for
from .loss_scale import loss_weights
from .options import Switches, reasoning_policy
from .report import ParityReport
from .truncation import truncate


class ParityRows:
    """The parity encoding of ms-swift rows, for one template (see the module doc)."""

    parity_family: str | None = None
    """The family of ``<family>_parity`` (set by ``registry``); None for ``hf_parity``: detected from the
    tokenizer's chat template."""

    def _parity_init_state(self, switches: Switches) -> None:
        """Per-template state, set before ms-swift's ``__init__`` (which calls ``init_processor``)."""
        self.parity_switches = switches
        self.parity_family_obj: Family | None = None
        self._parity_encoder = None
        self._parity_cache = SampleCache()
        self._parity_report = ParityReport()

    def _parity_use_family(self, family: Family) -> None:
        self.parity_family_obj = family
        self._parity_encoder = get_encoder(self.tokenizer, family=family)

    def _parity_fresh_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """``__getstate__``: what a dataloader worker rebuilds (the encoder's cache holds the tokenizer object)."""
        state["_parity_encoder"] = None
        state["_parity_cache"] = SampleCache()
        return state

    @property
    def parity_encoder(self):
        """The core's ``Encoder`` for this template's tokenizer and family."""
        if self._parity_encoder is None:
            self._parity_encoder = get_encoder(self.tokenizer, family=self.parity_family_obj)
        return self._parity_encoder

    @property
    def parity_family_name(self) -> str:
        """The name of the family this template encodes with (``hf`` when ``hf_parity`` recognised none)."""
        return self.parity_family_obj.name

    @property
    def parity_stats(self):
        """The core's ``EncodeStats`` of this template's rows."""
        return self._parity_report.stats

    def _parity_conversation(self, inputs) -> tuple[Converted, list | None]:
        return row_conversation(inputs, self.template_meta.default_system,
                                last_round=self.parity_weights.last_round)

    def _parity_kwargs(self, inputs) -> tuple[dict[str, Any], str]:
        return self.parity_switches.render_kwargs(self.parity_encoder.family, self.chat_template_kwargs,
                                                  inputs.chat_template_kwargs, self.jinja_enable_thinking_key)

    def parity_samples(self, inputs) -> list[Scored]:
        """The core's samples for this row after --max_length handling, each with per-token loss scales.

        A conversation with token-id assistant turns (GRPO) is one sample, built by ``parity_token_turns``;
        --max_length is then ms-swift's own handling (``_encode_truncated``), as for any GRPO template."""
        if has_token_id_content(inputs.messages):
            encoded = self.parity_token_turns(inputs, is_training=True)
            return [(encoded, list(encoded.loss_scale or []))]
        converted, tools = self._parity_conversation(inputs)
        kwargs, history = self._parity_kwargs(inputs)
        key = SampleCache.key(converted.messages, tools, kwargs, history)
        cached = self._parity_cache.get(key)
        if cached is not None:
            return cached
        report = self._parity_report
        with report.naming_errors(inputs):
            samples = core_encode(
                self.tokenizer, converted.messages, tools=tools, chat_template_kwargs=kwargs,
                family=self.parity_encoder.family, stats=report.stats,
                options=EncodeOptions(history_reasoning=history, reasoning_policy=reasoning_policy()),
            )
        weights = self.parity_weights
        queries = last_queries(converted.messages)
        return self._parity_cache.put(key, [
            piece for sample in samples
            for piece in truncate(sample, weights.sample(sample, self.parity_encoder.tokens.offsets,
                                                         converted.loss_scales, queries),
                                  self.max_length, self.truncation_strategy, report.dropped)])

    @property
    def parity_weights(self) -> LossWeights:
        """``--loss_scale`` on this template's samples (read when used: trainers may change it between rows)."""
        if getattr(self, "_parity_weights_for", None) != self._loss_scale:
            self._parity_weights = loss_weights(self._loss_scale)
            self._parity_weights_for = self._loss_scale
        return self._parity_weights

    def parity_token_turns(self, inputs, *, is_training: bool | None = None) -> TokenTurnEncoding:
        """A conversation whose assistant turns are token ids (ms-swift GRPO), as ``encode_token_turns`` encodes it.

        In inference mode (the rollout engine's prompt) and in training mode alike, so the part of the training
        ids before each turn is exactly the prompt the engine was fed for it. Token-id turns are raw history: their
        ids stay verbatim (reasoning included), labelled where their ``loss_scale`` is positive; ``loss: false``
        and ``--loss_scale last_round`` do not apply to them (the rollout's loss mask and logprobs decide).
        """
        # ms-swift's messages as they are: a swift_ext_messages side channel holds the dataset row's prompt, from
        # before the rollout, without the generated turns.
        converted, tools = row_conversation(inputs, self.template_meta.default_system, side_channel=False)
        kwargs, history = self._parity_kwargs(inputs)
        encoder = self.parity_encoder
        prefix = self._get_response_prefix(inputs)
        with self._parity_report.naming_errors(inputs):
            return encode_token_turns(
                encoder, converted.messages, tools=tools,
                # the kwargs prompt_ids renders the first turn's prompt with (before any id turn exists)
                chat_template_kwargs=encoder.template_kwargs(kwargs, history),
                is_training=self.is_training if is_training is None else is_training,
                # ms-swift puts this (masked) in front of the sampled ids; it was prompt context, never sampled
                response_prefix_ids=self.tokenizer.encode(prefix, add_special_tokens=False) if prefix else None,
                message_parser=message_parser_for(encoder.family),
            )

    def _parity_prompt_ids(self, inputs) -> list[int]:
        """Inference: exactly what a server feeds the model (generation prompt of the conversation so far)."""
        converted, tools = self._parity_conversation(inputs)
        kwargs, history = self._parity_kwargs(inputs)
        return prompt_ids(self.parity_encoder, converted.messages, tools, kwargs, history)

    def parity_probe_inputs(self, row: dict[str, Any]):
        """The ``StdTemplateInputs`` ``encode`` would build from this dataset row (no media loading)."""
        from swift.template.template_inputs import TemplateInputs

        inputs = TemplateInputs.from_dict(deepcopy(row)).chosen
        self._preprocess_tools(inputs)
        return inputs

    def parity_report(self) -> dict[str, Any]:
        """Counters for logs and tests: samples dropped, errors by rule, the core's EncodeStats."""
        return self._parity_report.as_dict()
