"""``<family>_parity`` templates: ms-swift templates whose training samples are the core's.

Each parity template subclasses the ms-swift template class of its family (so multimodal processing, data
collation and model-specific hooks stay ms-swift's) and overrides ``_jinja_encode``, never ``_encode`` (GRPO's
rollout path calls ``Template._encode`` directly). ``_jinja_encode`` returns token-id contexts with their loss
scales, so ms-swift tokenizes nothing again:

* training: the core's samples (``swift_ext.encode``), labels only on what the model generates at inference;
* inference / rollout: the token ids of the model's own generation prompt;
* assistant turns given as token ids (ms-swift GRPO: ``List[int]`` or ``{'token_ids', 'loss_scale'}`` content),
  in both modes: ``swift_ext.ms_swift.grpo.encode_token_turns``. The rollout engine's prompt (inference mode) and
  the training ids come from that one function, so each turn's ids sit verbatim right after exactly the prompt
  the engine was fed, labelled where their ``loss_scale`` is positive.

A conversation that needs several samples yields several (``Template.encode`` returns a list, as
``--truncation_strategy split`` does). ``--max_length`` / ``--truncation_strategy`` apply per sample; a sample
that loses all its labels is reported and dropped, never trained at zero loss.

This module only overrides ms-swift's hooks; each delegates to ``rows.ParityRows`` (the row encoding) or to the
module doing the job (see the package doc).
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import asdict, is_dataclass
from typing import Any

from .columns import ROW_COLUMN, SAMPLE_COLUMN
from .conversion import normalise_tools
from .encoding import Scored, contexts
from .family import chat_template_text, default_agent_template, resolve_family
from .grpo import has_token_id_content
from .options import Switches, check_loss_scale
from .rows import ParityRows
from .side_channel import with_side_channel
from .state import active_training_template, log_once, remember_training_template
from .truncation import ParitySampleDropped, only_sample, row_samples
from .vision import TextOnlyVisionMixin, load_media, media_ids, sample_media

_CHOSEN_SAMPLE = "_swift_ext_chosen_sample"
"""``inputs.extra_kwargs`` key by which ``_encode_truncated`` hands ``_jinja_encode`` the sample to encode.

ms-swift's ``Template._encode`` is the one place that turns ``_jinja_encode``'s contexts into input_ids / labels /
loss_scale (context simplification, the encoder-decoder split, masking the first label, clearing labels outside
training), and it calls ``_jinja_encode(inputs)`` with the row's inputs alone. ``_encode_truncated`` must pick the
samples of a row and apply ``--max_length`` to them before that, so the chosen sample can only travel inside those
inputs: it is set on a copy of them, for that one ``_encode`` call, and ``_jinja_encode`` takes it out."""


class ParityTemplateMixin(ParityRows):
    """Put before the ms-swift template class in the bases: ``class X(ParityTemplateMixin, Qwen3_5Template)``.

    ms-swift's hooks, overridden; the row encoding they call is ``rows.ParityRows``."""

    def __init__(self, processor, template_meta, *args, enable_thinking=None, preserve_thinking=None, **kwargs):
        self._parity_init_state(Switches(enable_thinking, preserve_thinking))
        super().__init__(processor, template_meta, *args, enable_thinking=enable_thinking,
                         preserve_thinking=preserve_thinking, **kwargs)
        check_loss_scale(self._loss_scale, self.template_meta.template_type)

    # ------------------------------------------------------------------ setup
    def init_processor(self, processor) -> None:
        if processor is None or self._processor_inited:
            return
        super().init_processor(processor)
        template_type = self.template_meta.template_type
        text = chat_template_text(self.tokenizer, template_type)
        family = resolve_family(self.parity_family, text, template_type)
        if self.parity_family is None:
            self._agent_template = default_agent_template(family, self._agent_template)
        self._parity_use_family(family)

    def set_mode(self, mode) -> None:
        super().set_mode(mode)
        if self.mode == "train":
            remember_training_template(self)

    def __getstate__(self):
        return self._parity_fresh_state(super().__getstate__())

    # ------------------------------------------------------ ms-swift hooks
    def _preprocess_tools(self, inputs) -> None:
        if not inputs.tools or self._agent_template is not None:
            return super()._preprocess_tools(inputs)
        # No agent template for this family (gpt-oss has none): the parity path renders tools with the model's own
        # chat template, so only ms-swift's normalisation of them is needed (JSON text parsed, OpenAI wrapping).
        inputs.tools = normalise_tools(inputs.tools)
        return None

    def _swift_prepare_inputs(self, inputs) -> None:
        # Keep ms-swift's message list as it is: the parity path converts it back to the HF form itself.
        return None

    def _swift_encode(self, inputs):
        template_type = self.template_meta.template_type
        log_once(
            f"swift-backend-{template_type}",
            f"[swift-ext] --template_backend swift with {template_type}: the parity template "
            "renders the model's own chat template (the swift backend re-implements it by hand, which is what "
            "parity templates exist to avoid), so the jinja/parity path is used.")
        return self._jinja_encode(inputs)

    @staticmethod
    def _add_dynamic_eos(*args, **kwargs) -> None:
        # The parity labels already end exactly where the model stops; adding the template suffix would label
        # glue the model never generates.
        return None

    def _jinja_encode(self, inputs):
        chosen = inputs.extra_kwargs.pop(_CHOSEN_SAMPLE, None)
        if chosen is not None:  # the sample _encode_truncated picked (its media already chosen)
            tags = self._parity_load_media(inputs)
            return (*contexts(*media_ids(self, chosen[0].input_ids, chosen[1], tags)), 1)
        if has_token_id_content(inputs.messages):  # GRPO: the rollout engine's prompt, or the training ids
            return self.parity_token_turns(inputs).swift_contexts()
        if not self.is_training:
            ids = self._parity_prompt_ids(inputs)
            tags = self._parity_load_media(inputs)  # the prompt holds every item of the row
            return [media_ids(self, ids, [0.0] * len(ids), tags)[0]], [0.0], 0
        # training, but not SFT (modes rlhf / kto, other task types): ms-swift's own _encode_truncated called us
        sample, scales = only_sample(self.parity_samples(inputs), inputs.extra_kwargs.get(SAMPLE_COLUMN))
        return (*contexts(sample.input_ids, scales), 1)

    def encode(self, inputs, return_template_inputs: bool = False, return_length: bool = False):
        # ms-swift's StdTemplateInputs.from_dict drops reasoning_content from turns with tool calls and parses
        # argument text; keep the caller's conversation beside it, as the dataset hook does.
        if is_dataclass(inputs) and not isinstance(inputs, type) and hasattr(inputs, "messages"):
            inputs = asdict(inputs)  # an InferRequest (swift infer / deploy)
        if isinstance(inputs, dict):
            inputs = with_side_channel(inputs)
        return super().encode(inputs, return_template_inputs=return_template_inputs, return_length=return_length)

    def _encode_truncated(self, inputs):
        if has_token_id_content(inputs.messages) or not self._parity_trains():
            # GRPO (token-id turns), inference, other tasks: ms-swift's own encode and --max_length handling
            # (one sample; _jinja_encode gives the ids).
            return super()._encode_truncated(inputs)
        if inputs.is_multimodal:
            # Media tags checked against the row's items before ms-swift's _preprocess_inputs adds the tags it
            # finds missing in front of the first message (conversion.check_media_count).
            with self._parity_report.naming_errors(inputs):
                self._parity_conversation(inputs)
        self._preprocess_inputs(inputs)
        samples = row_samples(self.parity_samples(inputs), inputs.extra_kwargs.get(SAMPLE_COLUMN))
        batched = [self._parity_encode_sample(inputs, chosen) for chosen in samples]
        return batched[0] if len(batched) == 1 else batched

    def _parity_load_media(self, inputs) -> dict[str, list[int]]:
        """ms-swift's media loading, for a multimodal model (``vision.load_media``): the ids ms-swift expands
        for one item of each kind (none for a text-only model)."""
        model_meta = getattr(self, "model_meta", None)
        if inputs.is_multimodal and model_meta is not None and model_meta.is_multimodal:
            return load_media(self, inputs)
        return {}

    def _parity_trains(self) -> bool:
        return self.is_training and self.task_type == "causal_lm" and self.mode == "train"

    def _parity_encode_sample(self, inputs, chosen: Scored) -> dict[str, Any]:
        """ms-swift's ``_encode`` of one chosen sample of the row (see ``_CHOSEN_SAMPLE``)."""
        row = deepcopy(inputs)
        row.extra_kwargs[_CHOSEN_SAMPLE] = chosen
        if row.is_multimodal:
            with self._parity_report.naming_errors(inputs):
                sample_media(self, row, self._parity_conversation(row)[0].messages, chosen[0])
        encoded = self._encode(row)
        encoded["length"] = self._get_length(encoded.get("input_ids"), encoded.get("labels"))
        if row.is_multimodal and self.max_length is not None and encoded["length"] > self.max_length:
            # --max_length applied to the parity sample counts each media item as its placeholder; the model's
            # processor has just expanded them. A sample is never cut through an image: dropped, and reported.
            why = (f"{encoded['length']} tokens once its media are expanded, longer than --max_length "
                   f"{self.max_length} (media are never cut)")
            if getattr(self, "_parity_last_media_drop", None) is not chosen[0]:  # ms-swift's encode retries 3x
                self._parity_report.dropped(why, chosen[0])
                self._parity_last_media_drop = chosen[0]
            raise ParitySampleDropped(f"a sample of this row is {why}")
        return encoded


__all__ = ["ROW_COLUMN", "SAMPLE_COLUMN", "ParitySampleDropped", "ParityTemplateMixin", "TextOnlyVisionMixin",
           "active_training_template"]
