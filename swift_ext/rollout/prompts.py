"""The prompt an engine fed the model for each generated turn, under the two history policies.

``strip`` (also spelled ``template``/``render``): the engine re-rendered the conversation with the chat template
for every turn, as an OpenAI-compatible chat server does when the client sends the messages back. The prompt of
turn i is ``tokenize(render(messages[:i], add_generation_prompt=True))``; earlier turns are whatever the
template makes of their text: the Qwen3 family drops the reasoning of turns before the last user message,
gpt-oss drops past analysis, DeepSeek-R1 never renders it (history reasoning *stripped*). Kwargs such as
``preserve_thinking`` apply as given.

``keep`` (also spelled ``raw``): the engine kept the raw token history, as a token-in/token-out agent loop does
(verl / slime / ms-swift multi-turn). The prompt of turn i is the previous turn's prompt, its sampled ids
verbatim (reasoning included), and the template's rendering of what came after that turn: the tool results or
user message and the generation prompt. That tail is cut from ``render(messages[:i], add_generation_prompt=True)``
right after the previous turn's end, which is found by rendering once more with that turn's text perturbed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..core import Encoder
from ..errors import TemplateRenderError
from ..text import common_prefix_len, common_suffix_len
from .record import GeneratedTurn, RolloutRecord

POLICIES = ("keep", "strip")
POLICY_ALIASES = {"keep": "keep", "raw": "keep", "strip": "strip", "template": "strip", "render": "strip"}
_PROBE = "\u27e6swift-ext-probe\u27e7"
_PROBE_KEY = "swift_ext_probe"


def engine_history_of(engine_history: str | None, history_reasoning: str | None) -> str | None:
    """The engine-history policy given under its name or its earlier one (``history_reasoning``)."""
    if engine_history is not None and history_reasoning is not None and \
            normalize_policy(engine_history) != normalize_policy(history_reasoning):
        from ..errors import PolicyError

        raise PolicyError(f"engine_history={engine_history!r} and history_reasoning={history_reasoning!r} (its "
                          "earlier name) disagree; pass one", rule="rollout-policy")
    return engine_history if engine_history is not None else history_reasoning


def normalize_policy(policy: str | None) -> str | None:
    if policy is None or policy == "auto":
        return None
    try:
        return POLICY_ALIASES[policy]
    except KeyError:
        from ..errors import PolicyError

        raise PolicyError(
            f"engine_history must be 'keep' (raw history), 'strip' (the template's rendering) or 'auto', got "
            f"{policy!r}", rule="rollout-policy") from None


@dataclass
class PromptBuilder:
    """Renders and tokenizes the engine prompts of one record."""

    encoder: Encoder
    record: RolloutRecord
    kwargs: dict[str, Any]
    turn_ids: dict[int, list[int]]
    """Per generated message index: the ids the engine sampled (what the raw history holds)."""

    def __post_init__(self) -> None:
        # A turn known only by its ids carries no tool_calls yet is followed by tool results: no tool-order rule.
        self.conversation = self.encoder.conversation(self.record.messages, self.record.tools, self.kwargs,
                                                      require_assistant=False, check_tool_order=False)
        self.messages = self.conversation.messages
        self.dicts = self.conversation.dicts
        self._keep: list[list[int]] | None = None
        self._strip: list[list[int]] | None = None

    # ---------------------------------------------------------------- rendering
    def render(self, upto: int, *, dicts: list[dict[str, Any]] | None = None, kwargs: dict | None = None,
               add_generation_prompt: bool = True) -> str:
        conversation = self.conversation if kwargs is None else self.conversation.with_kwargs(kwargs)
        if dicts is not None:
            changed = [j for j, (a, b) in enumerate(zip(dicts, self.dicts)) if a is not b]
            for j in changed:
                conversation = conversation.with_message(j, dicts[j])
        return conversation.render(upto, add_generation_prompt=add_generation_prompt)

    def strip_prompt(self, message_index: int, kwargs: dict | None = None) -> list[int]:
        return self.encoder.tokens.encode(self.render(message_index, kwargs=kwargs))

    def strip_prompts(self, kwargs: dict | None = None) -> list[list[int]]:
        if kwargs is not None:
            return [self.strip_prompt(t.message_index, kwargs) for t in self.record.turns]
        if self._strip is None:
            self._strip = [self.strip_prompt(t.message_index) for t in self.record.turns]
        return [list(p) for p in self._strip]

    # ------------------------------------------------------------- raw history
    def keep_prompts(self) -> list[list[int]]:
        """Raw-history prompts of the record's turns (computed once: the record's sampled ids are fixed)."""
        if self._keep is None:
            self._keep = self._keep_chain()
        return [list(p) for p in self._keep]

    def _keep_chain(self) -> list[list[int]]:
        prompts: list[list[int]] = []
        chain: list[int] | None = None
        previous: GeneratedTurn | None = None
        for turn in self.record.turns:
            i = turn.message_index
            if chain is None:
                prompt = self.strip_prompt(i)
            else:
                prompt = chain + self.encoder.tokens.encode(self.tail_after(previous, i))
            prompts.append(prompt)
            chain = prompt + self.turn_ids[i]
            previous = turn
        return prompts

    def tail_after(self, turn: GeneratedTurn, upto: int, *, add_generation_prompt: bool = True) -> str:
        """The template's text after generated turn ``turn`` in the rendering of messages[:upto]: what an engine
        that keeps raw history appends to the turn's sampled ids (its own terminator when the ids lack one)."""
        j = turn.message_index
        rendering = self.render(upto, add_generation_prompt=add_generation_prompt)
        content_end = self._turn_content_end(j, upto, rendering, add_generation_prompt)
        bound = self._next_message_start(j, upto, rendering, add_generation_prompt)
        region = rendering[content_end:bound]
        stop_at, stop = _earliest(region, self.encoder.stop_strings)
        if stop is None:
            # The template ends a past turn with its own marker (gpt-oss writes <|end|> where the model said
            # <|return|>): the first special token after the turn's text.
            stop_at, stop = _earliest(region, self._special_tokens())
        if stop is None:
            raise TemplateRenderError(
                f"cannot find where generated turn #{turn.ordinal} ends in the rendering of messages[:{upto}] "
                f"(text after it: {region[:80]!r})", rule="rollout-turn-end", message_index=j)
        start = content_end + stop_at
        ended = ends_with_stop(self.encoder, self.turn_ids[j])
        return rendering[start + len(stop):] if ended else rendering[start:]

    def _turn_content_end(self, j: int, upto: int, rendering: str, add_generation_prompt: bool) -> int:
        """Index in ``rendering`` just after turn j's last rendered text (content or tool-call arguments)."""
        perturbed = list(self.dicts)
        perturbed[j] = _perturb_turn(self.dicts[j])
        other = self.render(upto, dicts=perturbed, kwargs=self.kwargs, add_generation_prompt=add_generation_prompt)
        if other == rendering:
            raise TemplateRenderError(
                f"the template does not render message {j} (an assistant turn) in the history of messages[:{upto}]",
                rule="rollout-turn-end", message_index=j)
        return len(rendering) - common_suffix_len(rendering, other)

    def _next_message_start(self, j: int, upto: int, rendering: str, add_generation_prompt: bool) -> int:
        """Upper bound for turn j's end: where the next message's content starts (end of text if unknown)."""
        k = j + 1
        if k >= upto:
            return len(rendering)
        content = self.dicts[k].get("content")
        if not isinstance(content, str) or not content:
            return len(rendering)
        perturbed = list(self.dicts)
        perturbed[k] = {**self.dicts[k], "content": _PROBE + content}
        other = self.render(upto, dicts=perturbed, kwargs=self.kwargs, add_generation_prompt=add_generation_prompt)
        return common_prefix_len(rendering, other)

    def _special_tokens(self) -> list[str]:
        decoder = getattr(self.encoder.tokenizer, "added_tokens_decoder", None) or {}
        return [t.content for t in decoder.values() if getattr(t, "special", False) and t.content]


def stop_length(encoder: Encoder, ids: list[int]) -> int:
    """How many trailing ids are a stop string (0: the turn did not end with one), compared as tokens."""
    for stop in encoder.stop_strings:
        stop_ids = encoder.tokens.encode(stop)
        if stop_ids and ids[-len(stop_ids):] == stop_ids:
            return len(stop_ids)
    return 0


def ends_with_stop(encoder: Encoder, ids: list[int]) -> bool:
    """Whether the sampled ids end with a stop string (as its tokens, or as decoded text)."""
    if stop_length(encoder, ids):
        return True
    text = encoder.tokens.decode(ids[-8:])
    return any(text.endswith(stop) for stop in encoder.stop_strings)


def _perturb_turn(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    content = out.get("content")
    if isinstance(content, str) and content.strip():
        out["content"] = content + _PROBE
        return out
    calls = out.get("tool_calls")
    if calls:
        calls = [dict(c) for c in calls]
        last = dict(calls[-1])
        function = dict(last.get("function", {}))
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                parsed = None
            function["arguments"] = (json.dumps({**parsed, _PROBE_KEY: _PROBE}, ensure_ascii=False)
                                     if isinstance(parsed, dict) else arguments + _PROBE)
        else:
            function["arguments"] = {**(arguments or {}), _PROBE_KEY: _PROBE}
        last["function"] = function
        calls[-1] = last
        out["tool_calls"] = calls
        return out
    out["content"] = _PROBE
    return out


def _earliest(text: str, needles) -> tuple[int, str | None]:
    best, found = len(text) + 1, None
    for needle in needles:
        pos = text.find(needle)
        if 0 <= pos < best or (pos == best and found is not None and len(needle) > len(found)):
            best, found = pos, needle
    return (best, found) if found is not None else (-1, None)
