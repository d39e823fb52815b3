"""The LLaMA-Factory template class whose encodings are swift_ext's samples.

LLaMA-Factory 0.9.5 renders with slot templates: ``Template.encode_multiturn``
returns ``(prompt_ids, response_ids)`` pairs that its supervised processor
concatenates, masking each prompt. ``ParityTemplate`` keeps that interface and
fills it from ``swift_ext.encode``: a sample becomes the alternating runs of its
labels, ``(masked run, trained run)`` pairs, so concatenating the pairs gives
back the sample token for token. It renders with the tokenizer's own chat
template and never changes it (``fix_jinja_template`` only checks there is one)
nor the vocabulary (``fix_special_tokens`` adds no token).

A conversation can need several samples (templates that rewrite history, like
Qwen3's dropping of past reasoning). A list of pairs cannot say where one sample
ends, so ``encode_multiturn`` raises for those; the dataset processors installed
by ``swift_ext.llamafactory.register`` call ``encode_sample_pairs`` instead and
emit one row per sample (see ``processor.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import swift_ext
from swift_ext.core import get_encoder
from swift_ext.errors import InputError, ParityError
from swift_ext.families import GENERIC, parity_template_of
from swift_ext.messages import REASONING_ALIASES
from swift_ext.options import EncodeOptions
from swift_ext.types import IGNORE_INDEX, EncodeStats, Sample
from swift_ext.weights import LossWeights, kind_weights, masked

from ._compat import ensure_torchaudio
from .options import ParityOptions, current_options

ensure_torchaudio()  # before LLaMA-Factory, which imports torchaudio at module level

from llamafactory.data.template import Template  # noqa: E402

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer

HF_PARITY = GENERIC.parity_template
PAYLOAD_PREFIX = "[swift_ext conversation v1]"
"""Start of the single ``_prompt`` message by which the parity dataset converter hands a
conversation through LLaMA-Factory's aligned format unchanged (JSON after the prefix)."""

Pairs = list[tuple[list[int], list[int]]]


# ----------------------------------------------------------------------------- samples <-> pairs
def sample_to_pairs(sample: Sample) -> Pairs:
    """Split a sample into ``(masked run, trained run)`` pairs; a trailing masked run gets ``[]``."""
    pairs: Pairs = []
    source: list[int] = []
    target: list[int] = []
    for token, label in zip(sample.input_ids, sample.labels):
        if label == IGNORE_INDEX:
            if target:
                pairs.append((source, target))
                source, target = [], []
            source.append(token)
        else:
            if label != token:
                raise ParityError(
                    f"sample label {label} differs from its input id {token}: not a (prompt, completion) sample",
                    rule="lf-label-shift",
                )
            target.append(token)
    if source or target:
        pairs.append((source, target))
    return pairs


def pairs_to_row(pairs: Pairs) -> tuple[list[int], list[int]]:
    """What LLaMA-Factory's supervised processor builds from pairs (no truncation, prompts masked)."""
    input_ids: list[int] = []
    labels: list[int] = []
    for source, target in pairs:
        input_ids += source + target
        labels += [IGNORE_INDEX] * len(source) + target
    return input_ids, labels


# ------------------------------------------------------------------ LLaMA-Factory rows -> messages
def encode_payload(messages: list[dict[str, Any]], tools: Any) -> str:
    return PAYLOAD_PREFIX + json.dumps({"messages": messages, "tools": tools}, ensure_ascii=False)


def _payload(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    if messages and isinstance(messages[0].get("content"), str) and messages[0]["content"].startswith(PAYLOAD_PREFIX):
        return json.loads(messages[0]["content"][len(PAYLOAD_PREFIX):])
    return None


_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def _function_message(content: str) -> dict[str, Any]:
    """LLaMA-Factory's ``function`` turn (tool-call JSON, optionally after text or inline reasoning)."""
    from swift_ext.messages import split_inline_reasoning

    reasoning, rest = split_inline_reasoning(content)
    blocks = _TOOL_CALL_BLOCK.findall(rest)
    text, payloads = (_TOOL_CALL_BLOCK.sub("", rest), blocks) if blocks else ("", [rest])
    calls: list[dict[str, Any]] = []
    for payload in payloads:
        try:
            parsed = json.loads(payload.strip())
        except json.JSONDecodeError as exc:
            raise InputError(
                f"a function turn does not hold tool-call JSON ({exc.msg}): {payload[:80]!r}",
                rule="input-bad-arguments",
            ) from None
        for call in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(call, Mapping) or "name" not in call:
                raise InputError(f"a function turn's tool call has no name: {call!r}", rule="input-tool-call-name")
            calls.append({"type": "function", "function": {"name": call["name"], "arguments": call.get("arguments")}})
    message = {"role": "assistant", "content": text.strip() or None, "tool_calls": calls}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return message


def _is_empty(message: Mapping[str, Any]) -> bool:
    return not message.get("content") and not message.get("tool_calls") and not any(
        message.get(k) for k in REASONING_ALIASES
    )


_LF_ROLES = {"user": "user", "assistant": "assistant", "observation": "tool", "system": "system"}


def _parse_tools(tools: Any) -> list[Any] | None:
    if tools is None or tools == "":
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise InputError(f"the tools column is not JSON ({exc.msg}): {tools[:80]!r}", rule="input-tools") from None
    if isinstance(tools, Mapping):
        tools = [tools]
    if not isinstance(tools, list):
        raise InputError(f"tools must be a list of tool schemas, got {type(tools).__name__}", rule="input-tools")
    return tools or None


def to_hf_conversation(
    messages: Sequence[Mapping[str, Any]], system: str | None, tools: Any, default_system: str = ""
) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """HF/OpenAI messages and tools from LLaMA-Factory's aligned example.

    Rows of the parity converter carry the dataset's messages verbatim. Rows of
    LLaMA-Factory's own converters (alpaca, sharegpt) are mapped back: observation
    turns become tool messages, function turns assistant messages with tool calls,
    and ``<think>`` blocks in content are left for swift_ext to read as reasoning.
    """
    payload = _payload(messages)
    if payload is not None:
        conversation = [dict(m) for m in payload["messages"]]
        hf_tools = _parse_tools(payload.get("tools"))
        if default_system and not any(m.get("role") == "system" for m in conversation):
            conversation.insert(0, {"role": "system", "content": default_system})
        return conversation, hf_tools
    conversation: list[dict[str, Any]] = []
    system_text = system or default_system
    if system_text:
        conversation.append({"role": "system", "content": system_text})
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role == "function":
            conversation.append(_function_message(content or ""))
        elif role in _LF_ROLES:
            conversation.append({"role": _LF_ROLES[role], "content": content})
        else:
            raise InputError(f"unexpected LLaMA-Factory role {role!r}", rule="input-unknown-role", message_index=index)
    return conversation, _parse_tools(tools)


# --------------------------------------------------------------------------------- the template
@dataclass
class ParityTemplate(Template):
    """A LLaMA-Factory ``Template`` whose encodings are ``swift_ext.encode`` samples."""

    parity_name: str = HF_PARITY
    parity_family: str | None = None
    """The family of ``<family>_parity``; None (``hf_parity``): the options' family, else detected."""

    # ------------------------------------------------------------------ settings
    def family_for(self, options: ParityOptions) -> str | None:
        if self.parity_family is not None:
            if options.family not in (None, self.parity_family):
                raise ValueError(
                    f"template {self.parity_name!r} is the {self.parity_family!r} family, but swift_ext.family says "
                    f"{options.family!r}: use template: {parity_template_of(options.family)} or hf_parity"
                )
            return self.parity_family
        return options.family

    def encoder(self, tokenizer: PreTrainedTokenizer, options: ParityOptions | None = None):
        options = options or current_options()
        return get_encoder(
            tokenizer, family=self.family_for(options), strict=options.strict, stop_strings=options.stop_strings
        )

    # ------------------------------------------------------- samples and pairs
    def encode_samples(
        self,
        tokenizer: PreTrainedTokenizer,
        messages: Sequence[Mapping[str, Any]],
        system: str | None = None,
        tools: Any = None,
        *,
        options: ParityOptions | None = None,
        last_turn_only: bool = False,
        conversation_index: int | None = None,
        stats: EncodeStats | None = None,
    ) -> list[Sample]:
        """``swift_ext.encode`` of one LLaMA-Factory example (``last_turn_only``: ``mask_history``)."""
        conversation, hf_tools = to_hf_conversation(messages, system, tools, self.default_system)
        return self._encode(
            tokenizer, conversation, hf_tools, options or current_options(), last_turn_only, conversation_index, stats
        )

    def _encode(self, tokenizer, conversation, hf_tools, options, last_turn_only=False, conversation_index=None,
                stats=None) -> list[Sample]:
        samples = swift_ext.encode(
            tokenizer,
            conversation,
            hf_tools,
            options.chat_template_kwargs or None,
            family=self.family_for(options),
            strict=options.strict,
            stop_strings=options.stop_strings,
            options=EncodeOptions.of(options.policies, train_turns="last" if last_turn_only else "all"),
            conversation_index=conversation_index,
            stats=stats,
        )
        if options.span_weights is None:
            return samples
        weights = LossWeights(kinds=kind_weights(options.span_weights), name="swift_ext.span_weights")
        offsets = self.encoder(tokenizer, options).tokens.offsets
        return [masked(sample, weights.sample(sample, offsets)) for sample in samples]

    def encode_sample_pairs(
        self,
        tokenizer: PreTrainedTokenizer,
        messages: Sequence[Mapping[str, Any]],
        system: str | None = None,
        tools: Any = None,
        **kwargs: Any,
    ) -> list[Pairs]:
        """One list of ``(masked run, trained run)`` pairs per sample."""
        return [sample_to_pairs(s) for s in self.encode_samples(tokenizer, messages, system, tools, **kwargs)]

    # ------------------------------------------------ LLaMA-Factory interface
    def encode_multiturn(
        self,
        tokenizer: PreTrainedTokenizer,
        messages: list[dict[str, str]],
        system: str | None = None,
        tools: str | None = None,
        discarding_history_cot: bool = False,
    ) -> Pairs:
        """The conversation's sample as ``(masked run, trained run)`` pairs.

        ``discarding_history_cot`` is ignored: past reasoning is whatever the model's
        own template renders (``swift_ext.history_reasoning`` selects its switch).
        Raises when the conversation needs several samples.
        """
        samples = self.encode_samples(tokenizer, messages, system, tools)
        if len(samples) != 1:
            raise ParityError(
                f"this conversation needs {len(samples)} samples (the chat template renders history differently "
                "from what the model saw when it answered each turn), and a list of (prompt, response) pairs can "
                "hold only one: LLaMA-Factory's stock processor would concatenate them into one sequence with the "
                "wrong context. Call swift_ext.llamafactory.register() before the dataset is built (swift-ext lf "
                "train does) so that the parity processor emits one row per sample",
                rule="lf-several-samples",
            )
        return sample_to_pairs(samples[0])

    def encode_oneturn(
        self,
        tokenizer: PreTrainedTokenizer,
        messages: list[dict[str, str]],
        system: str | None = None,
        tools: str | None = None,
    ) -> tuple[list[int], list[int]]:
        """``(prompt, response)`` of the last turn: the inference prompt and the tokens generated for it.

        A conversation that ends in an empty assistant message (LLaMA-Factory's chat and
        predict paths) or in no assistant message gives the generation prompt and no response.
        """
        options = current_options()
        conversation, hf_tools = to_hf_conversation(messages, system, tools, self.default_system)
        if conversation and conversation[-1].get("role") == "assistant" and _is_empty(conversation[-1]):
            conversation = conversation[:-1]
        if not conversation or conversation[-1].get("role") != "assistant":
            return self._generation_prompt(tokenizer, conversation, hf_tools, options), []
        sample = self._encode(tokenizer, conversation, hf_tools, options, last_turn_only=True)[-1]
        turn = sample.turns[-1]
        return sample.input_ids[: turn.prompt_end], sample.input_ids[turn.label_start : turn.label_end]

    def generation_prompt_ids(
        self,
        tokenizer: PreTrainedTokenizer,
        messages: Sequence[Mapping[str, Any]],
        system: str | None = None,
        tools: Any = None,
        *,
        options: ParityOptions | None = None,
    ) -> list[int]:
        """Tokens an inference server feeds the model after these (LLaMA-Factory) messages."""
        conversation, hf_tools = to_hf_conversation(messages, system, tools, self.default_system)
        return self._generation_prompt(tokenizer, conversation, hf_tools, options or current_options())

    def _generation_prompt(self, tokenizer, conversation, hf_tools, options) -> list[int]:
        encoder = self.encoder(tokenizer, options)
        prompt = encoder.conversation(conversation, hf_tools, options.chat_template_kwargs, options.policies,
                                      require_assistant=False)
        return prompt.prompt_ids(len(prompt.dicts))

    def get_stop_token_ids(self, tokenizer: PreTrainedTokenizer) -> list[int]:
        """The eos token and every stop string of the family that is one token."""
        encoder = self.encoder(tokenizer)
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for stop in encoder.stop_strings:
            token_id = encoder.tokens.token_id(stop)
            if token_id is not None and token_id not in ids:
                ids.append(token_id)
        return ids

    # -------------------------------------------- the tokenizer stays as it is
    def fix_jinja_template(self, tokenizer: PreTrainedTokenizer) -> None:
        """Leave the tokenizer's own chat template alone; there must be one."""
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"template {self.parity_name!r} trains on the tokenizer's own chat template, and this tokenizer "
                "has none: use a model folder with a chat template (tokenizer_config.json or chat_template.jinja)"
            )

    def fix_special_tokens(self, tokenizer: PreTrainedTokenizer) -> None:
        """Add no token: only borrow eos as the pad token when there is none (padding is never trained)."""
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(
                    f"template {self.parity_name!r}: the tokenizer has neither a pad nor an eos token, and parity "
                    "templates add no tokens; set pad_token in the model's tokenizer_config.json"
                )
            tokenizer.pad_token = tokenizer.eos_token

    def _get_jinja_template(self, tokenizer: PreTrainedTokenizer) -> str:
        return tokenizer.chat_template

    def get_ollama_modelfile(self, tokenizer: PreTrainedTokenizer) -> str:
        """A Modelfile without TEMPLATE: slots cannot express the real chat template."""
        lines = [
            "# ollama modelfile auto-generated by swift_ext (template "
            f"{self.parity_name}); no TEMPLATE: use the chat template in the model's files",
            "",
            "FROM .",
            "",
        ]
        for token_id in self.get_stop_token_ids(tokenizer):
            lines.append(f'PARAMETER stop "{tokenizer.convert_ids_to_tokens(token_id)}"')
        return "\n".join(lines) + "\n"
