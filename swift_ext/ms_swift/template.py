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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import weakref
from collections import Counter, OrderedDict
from copy import deepcopy
from dataclasses import asdict, is_dataclass
from typing import Any

from swift.template import MaxLengthError, Template
from swift.utils import get_logger

from .. import encode as core_encode
from ..core import get_encoder
from ..errors import ParityError, PolicyError
from ..families import detect_family, load_family
from ..messages import parse_message
from ..types import IGNORE_INDEX, EncodeStats, Sample
from .convert import SIDE_CHANNEL, apply_last_round, check_same_conversation, from_side_channel, from_swift_messages
from .grpo import TokenTurnEncoding, encode_token_turns, has_token_id_content, message_parser_for

logger = get_logger()

SAMPLE_COLUMN = "swift_ext_sample"
"""Column the data hook adds when it expands a conversation into one row per sample."""
ROW_COLUMN = "swift_ext_row"
"""Column the data hook adds to a dataset file's rows: where the row is (``row 12 (line 14 of train.jsonl)``)."""

SUPPORTED_BASE_STRATEGIES = ("default", "last_round")
_MEDIA_TAG = re.compile(r"(<image>|<video>|<audio>)")


def name_row(exc: ParityError, where: str | None) -> ParityError:
    """ms-swift logs a failing row's traceback without saying which row it was: put the row in the message."""
    if where and not str(exc).startswith(where):
        exc.args = (f"{where}: {exc}",)
    return exc


class ParitySampleDropped(MaxLengthError):
    """Every sample of a conversation lost all its labels to --max_length (ms-swift skips such rows)."""


_ACTIVE: list[weakref.ref] = []
_ACTIVE_LOCK = threading.Lock()


def active_training_template():
    """The most recent parity template in ``train`` mode (SFT; used by the dataset hook), or None."""
    with _ACTIVE_LOCK:
        while _ACTIVE:
            template = _ACTIVE[-1]()
            if template is not None and template.mode == "train" and template.task_type == "causal_lm":
                return template
            _ACTIVE.pop()
    return None


class ParityTemplateMixin:
    """Put before the ms-swift template class in the bases: ``class X(ParityTemplateMixin, Qwen3_5Template)``."""

    parity_family: str = "hf"
    _parity_logged: set = set()

    def __init__(self, processor, template_meta, *args, enable_thinking=None, preserve_thinking=None, **kwargs):
        self._parity_user_thinking = enable_thinking
        self._parity_user_preserve = preserve_thinking
        self._parity_pending: Sample | None = None
        self._parity_pending_scales: list[float] | None = None
        self._parity_cache: OrderedDict[str, list] = OrderedDict()
        self._parity_counts: Counter = Counter()
        self.parity_stats = EncodeStats()
        self._parity_encoder = None
        super().__init__(processor, template_meta, *args, enable_thinking=enable_thinking,
                         preserve_thinking=preserve_thinking, **kwargs)
        self._parity_check_loss_scale()

    # ------------------------------------------------------------------ setup
    def _parity_log_once(self, key: str, message: str) -> None:
        if key not in ParityTemplateMixin._parity_logged:
            ParityTemplateMixin._parity_logged.add(key)
            logger.info(message)

    def _parity_check_loss_scale(self) -> None:
        parts = (self._loss_scale or "default").split("+")
        base = parts[0] if parts[0] in ("default", "last_round", "all") else "default"
        extra = [p for p in (parts[1:] if parts[0] == base else parts) if p != "base"]
        if base not in SUPPORTED_BASE_STRATEGIES or extra:
            raise ValueError(
                f"--loss_scale {self._loss_scale!r} cannot be honoured by the parity template "
                f"{self.template_meta.template_type!r}: it trains exactly the tokens the model generates at "
                "inference. Supported: 'default' (every assistant turn; per-message 'loss: false' and "
                "'loss_scale' are honoured) and 'last_round' (only the turns after the last user message). "
                "'all' would train prompt tokens and the agent/think modifiers re-weight template text; "
                "use a non-parity template for those."
            )

    def init_processor(self, processor) -> None:
        if processor is None or self._processor_inited:
            return
        super().init_processor(processor)
        template_text = self.tokenizer.chat_template
        if isinstance(template_text, dict):  # named templates: the one apply_chat_template uses by default
            template_text = template_text.get("default")
        if not isinstance(template_text, str) or not template_text:
            raise PolicyError(
                f"{self.template_meta.template_type}: the tokenizer has no chat template, so there is no "
                "inference rendering to match", rule="no-chat-template")
        detected = detect_family(template_text)
        if self.parity_family == "hf":
            family = detected.name if detected is not None else "hf"
            if self._agent_template in (None, "hf_parity"):
                from swift.agent_template import agent_template_map

                name = f"{family}_parity"
                self._agent_template = name if name in agent_template_map else None
        else:
            family = self.parity_family
            if detected is not None and detected.name != family:
                logger.warning(
                    f"{self.template_meta.template_type}: the tokenizer's chat template looks like family "
                    f"{detected.name!r}, not {family!r}; the stop strings of {family!r} are used. "
                    f"Did you mean --template {detected.name}_parity?")
        self.parity_family_name = family
        self.parity_family_obj = load_family(family)
        self._parity_encoder = get_encoder(self.tokenizer, family=None if family == "hf" else family)

    def set_mode(self, mode) -> None:
        super().set_mode(mode)
        if self.mode == "train":
            with _ACTIVE_LOCK:
                _ACTIVE.append(weakref.ref(self))

    def __getstate__(self):
        state = super().__getstate__()
        state["_parity_encoder"] = None  # rebuilt lazily (its cache holds the tokenizer object)
        state["_parity_cache"] = OrderedDict()
        return state

    @property
    def parity_encoder(self):
        if self._parity_encoder is None:
            family = getattr(self, "parity_family_name", self.parity_family)
            self._parity_encoder = get_encoder(self.tokenizer, family=None if family == "hf" else family)
        return self._parity_encoder

    # --------------------------------------------------------- conversion
    def _parity_kwargs(self, inputs) -> tuple[dict[str, Any], str]:
        family = self.parity_encoder.family
        kwargs: dict[str, Any] = dict(self.chat_template_kwargs or {})
        if self._parity_user_thinking is not None:
            kwargs[family.thinking_kwarg or self.jinja_enable_thinking_key] = bool(self._parity_user_thinking)
        kwargs.update(inputs.chat_template_kwargs or {})
        history = "keep" if self._parity_user_preserve else "template"
        if "preserve_thinking" in kwargs and family.keep_history_kwarg not in (None, "preserve_thinking"):
            # ms-swift's generic switch, spelled the family's way.
            history = "keep" if kwargs.pop("preserve_thinking") else "template"
        return kwargs, history

    def _parity_media(self, messages: list[dict[str, Any]], inputs) -> None:
        """``<image>`` tags (ms-swift's media form) -> HF content parts, so the template renders its vision tokens."""
        if not inputs.is_multimodal:
            return
        for message in messages:
            content = message.get("content")
            if not isinstance(content, str) or not _MEDIA_TAG.search(content):
                continue
            parts = []
            for piece in _MEDIA_TAG.split(content):
                if piece in ("<image>", "<video>", "<audio>"):
                    parts.append({"type": piece[1:-1]})
                elif piece:
                    parts.append({"type": "text", "text": piece})
            message["content"] = parts

    def _parity_conversation(self, inputs):
        system = inputs.system if inputs.system is not None else self.template_meta.default_system
        converted = from_swift_messages(inputs.messages, system)
        side = inputs.extra_kwargs.get(SIDE_CHANNEL)
        if side:
            original = from_side_channel(side, system)
            check_same_conversation(original, converted)
            converted = original
        if self._loss_scale.split("+")[0] == "last_round":
            apply_last_round(converted.messages)
        self._parity_media(converted.messages, inputs)
        tools = inputs.tools or None
        return converted, tools

    # ----------------------------------------------------------- samples
    def _parity_key(self, converted, tools, kwargs, history) -> str:
        blob = json.dumps([converted.messages, tools, kwargs, history], sort_keys=True, default=str,
                          ensure_ascii=False)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()

    def parity_samples(self, inputs) -> list[tuple[Sample, list[float]]]:
        """The core's samples for this row after --max_length handling, each with per-token loss scales.

        A conversation with token-id assistant turns (GRPO) is one sample, built by ``parity_token_turns``;
        --max_length is then ms-swift's own handling (``_encode_truncated``), as for any GRPO template."""
        if has_token_id_content(inputs.messages):
            encoded = self.parity_token_turns(inputs, is_training=True)
            return [(Sample(encoded.input_ids, encoded.labels, []), list(encoded.loss_scale))]
        converted, tools = self._parity_conversation(inputs)
        kwargs, history = self._parity_kwargs(inputs)
        key = self._parity_key(converted, tools, kwargs, history)
        cached = self._parity_cache.get(key)
        if cached is not None:
            self._parity_cache.move_to_end(key)
            return cached
        try:
            samples = core_encode(
                self.tokenizer, converted.messages, tools=tools, chat_template_kwargs=kwargs,
                family=self.parity_encoder.family, history_reasoning=history, stats=self.parity_stats,
                reasoning_policy=os.environ.get("SWIFT_EXT_REASONING_POLICY", "error"),
            )
        except ParityError as exc:
            self._parity_counts[f"error:{exc.rule}"] += 1
            raise name_row(exc, inputs.extra_kwargs.get(ROW_COLUMN)) from None
        out = []
        for sample in samples:
            scales = self._parity_scales(sample, converted.loss_scales)
            out.extend(self._parity_truncate(sample, scales))
        self._parity_cache[key] = out
        while len(self._parity_cache) > 64:
            self._parity_cache.popitem(last=False)
        return out

    def parity_token_turns(self, inputs, *, is_training: bool | None = None) -> TokenTurnEncoding:
        """A conversation whose assistant turns are token ids (ms-swift GRPO), as ``encode_token_turns`` encodes it.

        In inference mode (the rollout engine's prompt) and in training mode alike, so the part of the training
        ids before each turn is exactly the prompt the engine was fed for it. Token-id turns are raw history: their
        ids stay verbatim (reasoning included), labelled where their ``loss_scale`` is positive; ``loss: false``
        and ``--loss_scale last_round`` do not apply to them (the rollout's loss mask and logprobs decide).
        """
        system = inputs.system if inputs.system is not None else self.template_meta.default_system
        # ms-swift's messages as they are: a swift_ext_messages side channel holds the dataset row's prompt, from
        # before the rollout, without the generated turns.
        converted = from_swift_messages(inputs.messages, system)
        self._parity_media(converted.messages, inputs)
        kwargs, history = self._parity_kwargs(inputs)
        encoder = self.parity_encoder
        prefix = self._get_response_prefix(inputs)
        try:
            return encode_token_turns(
                encoder, converted.messages, tools=inputs.tools or None,
                # the kwargs _parity_prompt_ids renders the first turn's prompt with (before any id turn exists)
                chat_template_kwargs=encoder.template_kwargs(kwargs, history),
                is_training=self.is_training if is_training is None else is_training,
                # ms-swift puts this (masked) in front of the sampled ids; it was prompt context, never sampled
                response_prefix_ids=self.tokenizer.encode(prefix, add_special_tokens=False) if prefix else None,
                # gpt-oss's template needs a harmony turn split into analysis / final / tool call
                message_parser=message_parser_for(encoder.family),
            )
        except ParityError as exc:
            self._parity_counts[f"error:{exc.rule}"] += 1
            raise name_row(exc, inputs.extra_kwargs.get(ROW_COLUMN)) from None

    @staticmethod
    def _parity_scales(sample: Sample, loss_scales: dict[int, float]) -> list[float]:
        scales = [0.0 if label == IGNORE_INDEX else 1.0 for label in sample.labels]
        for turn in sample.turns:
            scale = loss_scales.get(turn.message_index)
            if scale is not None:
                for i in range(turn.label_start, turn.label_end):
                    scales[i] = scale
        return scales

    def _parity_drop(self, why: str, sample: Sample) -> None:
        self._parity_counts["dropped"] += 1
        turns = [t.message_index for t in sample.turns]
        if self._parity_counts["dropped"] <= 10 or self._parity_counts["dropped"] % 1000 == 0:
            logger.warning(
                f"[swift-ext] dropped a sample of {len(sample)} tokens (assistant turns {turns}): {why}. "
                f"Samples dropped so far: {self._parity_counts['dropped']}.")

    def _parity_truncate(self, sample: Sample, scales: list[float]) -> list[tuple[Sample, list[float]]]:
        max_length = self.max_length
        if max_length is None or len(sample) <= max_length:
            return [(sample, scales)]
        strategy = self.truncation_strategy
        if strategy == "raise":
            self._parity_drop(f"longer than --max_length {max_length} (--truncation_strategy delete)", sample)
            return []
        if strategy in ("left", "right"):
            cut = slice(len(sample) - max_length, None) if strategy == "left" else slice(0, max_length)
            pieces = [(cut, sample.input_ids[cut], sample.labels[cut], scales[cut])]
        elif strategy == "split":
            pieces = [(slice(i, i + max_length), sample.input_ids[i:i + max_length], sample.labels[i:i + max_length],
                       scales[i:i + max_length]) for i in range(0, len(sample), max_length)]
        else:
            raise ValueError(f"Invalid truncation_strategy: {strategy}")
        out = []
        for cut, ids, labels, piece_scales in pieces:
            labels = list(labels)
            piece_scales = list(piece_scales)
            labels[0] = IGNORE_INDEX  # nothing predicts the first token (ms-swift does the same)
            piece_scales[0] = 0.0
            stop = cut.stop if cut.stop is not None else len(sample)
            kept = [t for t in sample.turns if t.label_start < stop and t.label_end > cut.start]
            piece = Sample(list(ids), labels, kept)  # turn offsets stay those of the untruncated sample
            if piece.num_labels == 0:
                self._parity_drop(f"no label left after --truncation_strategy {strategy} to {max_length}", sample)
                continue
            out.append((piece, piece_scales))
        return out

    def _parity_probe_inputs(self, row: dict[str, Any]):
        """The ``StdTemplateInputs`` ``encode`` would build from this dataset row (no media loading)."""
        from swift.template.template_inputs import TemplateInputs

        inputs = TemplateInputs.from_dict(deepcopy(row)).chosen
        self._preprocess_tools(inputs)
        return inputs

    # ------------------------------------------------------ ms-swift hooks
    def _preprocess_tools(self, inputs) -> None:
        if not inputs.tools or self._agent_template is not None:
            return super()._preprocess_tools(inputs)
        # No agent template for this family (gpt-oss has none): the parity path renders tools with the model's own
        # chat template, so only ms-swift's normalisation of them is needed (JSON text parsed, OpenAI wrapping).
        from swift.agent_template.base import BaseAgentTemplate
        from swift.utils import remove_arrow_padding

        tools = inputs.tools
        if isinstance(tools, str):
            tools = BaseAgentTemplate._parse_json(tools)
            tools = tools if isinstance(tools, (list, tuple)) else [tools]
        elif not isinstance(tools, (list, tuple)):
            raise ValueError(f"inputs.tools: {tools}")
        tools = [BaseAgentTemplate._parse_json(tool) for tool in tools]
        inputs.tools = [BaseAgentTemplate.wrap_tool(remove_arrow_padding(tool) if isinstance(tool, dict) else tool)
                        for tool in tools]
        return None

    def _swift_prepare_inputs(self, inputs) -> None:
        # Keep ms-swift's message list as it is: the parity path converts it back to the HF form itself.
        return None

    def _swift_encode(self, inputs):
        self._parity_log_once(
            f"swift-backend-{self.template_meta.template_type}",
            f"[swift-ext] --template_backend swift with {self.template_meta.template_type}: the parity template "
            "renders the model's own chat template (the swift backend re-implements it by hand, which is what "
            "parity templates exist to avoid), so the jinja/parity path is used.")
        return self._jinja_encode(inputs)

    @staticmethod
    def _add_dynamic_eos(*args, **kwargs) -> None:
        # The parity labels already end exactly where the model stops; adding the template suffix would label
        # glue the model never generates.
        return None

    @staticmethod
    def _parity_contexts(sample: Sample, scales: list[float]):
        contexts: list[list[int]] = []
        loss_scales: list[float] = []
        for token, scale in zip(sample.input_ids, scales):
            if loss_scales and loss_scales[-1] == scale:
                contexts[-1].append(token)
            else:
                contexts.append([token])
                loss_scales.append(scale)
        return contexts, loss_scales

    def _parity_prompt_ids(self, inputs) -> list[int]:
        """Inference: exactly what a server feeds the model (generation prompt of the conversation so far)."""
        converted, tools = self._parity_conversation(inputs)
        messages = [m for m in converted.messages if not (m.get("role") == "assistant" and m.get("content") is None
                                                          and not m.get("tool_calls"))]
        kwargs, history = self._parity_kwargs(inputs)
        return self._parity_render_ids(messages, tools, kwargs, history)

    def _parity_render_ids(self, messages, tools, kwargs, history) -> list[int]:
        """Token ids of the model's rendering of ``messages`` (+ generation prompt unless the last is assistant)."""
        encoder = self.parity_encoder
        kwargs = encoder.template_kwargs(kwargs, history)
        parsed = [parse_message(i, m) for i, m in enumerate(messages)]  # no 'needs an assistant turn' rule
        dicts = [encoder.template_message(m) for m in parsed]
        add_generation_prompt = not dicts or dicts[-1]["role"] != "assistant"
        text = encoder.render(dicts, tools, kwargs, add_generation_prompt=add_generation_prompt, upto=len(dicts))
        return encoder.tokens.encode_whole(text)

    def _jinja_encode(self, inputs):
        if self._parity_pending is not None:
            contexts, scales = self._parity_contexts(self._parity_pending, self._parity_pending_scales)
            return contexts, scales, 1
        if has_token_id_content(inputs.messages):  # GRPO: the rollout engine's prompt, or the training ids
            return self.parity_token_turns(inputs).swift_contexts()
        if not self.is_training:
            return [self._parity_prompt_ids(inputs)], [0.0], 0
        samples = self.parity_samples(inputs)
        pick = inputs.extra_kwargs.get(SAMPLE_COLUMN)
        if pick is not None:
            samples = samples[int(pick):int(pick) + 1]
        if len(samples) != 1:
            raise ValueError(
                f"this conversation gives {len(samples)} parity samples; call Template.encode (which returns "
                "a list), not Template._encode")
        sample, scales = samples[0]
        contexts, loss_scales = self._parity_contexts(sample, scales)
        return contexts, loss_scales, 1

    def encode(self, inputs, return_template_inputs: bool = False, return_length: bool = False):
        # ms-swift's StdTemplateInputs.from_dict drops reasoning_content from turns with tool calls and parses
        # argument text; keep the caller's conversation beside it, as the dataset hook does.
        if is_dataclass(inputs) and not isinstance(inputs, type) and hasattr(inputs, "messages"):
            inputs = asdict(inputs)  # an InferRequest (swift infer / deploy)
        if isinstance(inputs, dict) and SIDE_CHANNEL not in inputs:
            from .data import needs_side_channel

            messages = inputs.get("messages")
            if needs_side_channel(messages):
                try:
                    inputs = {**inputs, SIDE_CHANNEL: json.dumps(messages, ensure_ascii=False)}
                except (TypeError, ValueError):
                    pass
        return super().encode(inputs, return_template_inputs=return_template_inputs, return_length=return_length)

    def _encode_truncated(self, inputs):
        if has_token_id_content(inputs.messages):
            # GRPO: ms-swift's own encode and --max_length handling (one sample; _jinja_encode gives the ids).
            return super()._encode_truncated(inputs)
        if not self.is_training or self.task_type != "causal_lm" or self.mode not in ("train",):
            return super()._encode_truncated(inputs)
        self._preprocess_inputs(inputs)
        samples = self.parity_samples(inputs)
        pick = inputs.extra_kwargs.get(SAMPLE_COLUMN)
        if pick is not None:
            pick = int(pick)
            if pick >= len(samples):
                raise ParitySampleDropped(f"sample {pick} of this conversation no longer exists "
                                          f"({len(samples)} samples); was the dataset cached with other settings?")
            samples = samples[pick:pick + 1]
        if not samples:
            raise ParitySampleDropped("every sample of this conversation lost all its labels to --max_length")
        batched = []
        for sample, scales in samples:
            self._parity_pending, self._parity_pending_scales = sample, scales
            try:
                encoded = self._encode(deepcopy(inputs))
            finally:
                self._parity_pending = self._parity_pending_scales = None
            encoded["length"] = self._get_length(encoded.get("input_ids"), encoded.get("labels"))
            batched.append(encoded)
        return batched[0] if len(batched) == 1 else batched

    def parity_report(self) -> dict[str, Any]:
        """Counters for logs and tests: samples dropped, errors by rule, the core's EncodeStats."""
        return {"counts": dict(self._parity_counts), "stats": self.parity_stats}


class TextOnlyVisionMixin:
    """For Qwen3.5/3.6 (a vision-language template in ms-swift): with a text-only model the vision hooks are
    skipped, so no vision stack (torchvision, qwen_vl_utils) is needed; with a multimodal model ms-swift's
    own multimodal path runs unchanged."""

    def _parity_text_only(self) -> bool:
        model_meta = getattr(self, "model_meta", None)
        return model_meta is None or not model_meta.is_multimodal

    def _post_encode(self, model, inputs):
        if self._parity_text_only():
            return Template._post_encode(self, model, inputs)
        return super()._post_encode(model, inputs)

    def _data_collator(self, batch, *, padding_to=None):
        if self._parity_text_only():
            return Template._data_collator(self, batch, padding_to=padding_to)
        return super()._data_collator(batch, padding_to=padding_to)

    def packing_row(self, row):
        if self._parity_text_only():
            return Template.packing_row(self, row)
        return super().packing_row(row)

    def forward_context(self, model, inputs):
        if self._parity_text_only():
            return Template.forward_context(self, model, inputs)
        return super().forward_context(model, inputs)
