"""The parity core: a conversation in, inference-exact training samples out.

For each trained assistant turn i (generation-prompt splicing; the rationale is in ``docs/design.md``):

1. ``G_i`` = render(messages[:i], add_generation_prompt=True): what an
   inference server feeds the model; its tokens are the turn's prompt.
2. ``R_i`` = render(messages[:i+1]): the template's own rendering with the
   turn last. The turn's *completion* is what follows the generation prompt in
   it, cut after the first stop string. Where ``R_i`` does not start with
   ``G_i`` (the generation prompt holds text the turn's rendering puts
   elsewhere or omits, or the template rewrote history for this render) the
   turn's text is located in ``R_i`` and placed after ``G_i``: what inference
   really produced.
3. Reasoning the template drops is written back in the family's format, or
   raises, or (by request) is dropped and counted.
4. Consecutive turns share a sample while each next prompt extends the sample
   token for token; a new sample starts where the template rewrote history
   (``samples.SampleBuilder``).

The renders come from a ``Conversation`` (``conversation.py``); the checks the
core shares with ``verify`` live in ``invariants.py``. Nothing here imports a
training framework.
"""

from __future__ import annotations

import json
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .conversation import Conversation
from .errors import (
    InputError,
    ParityError,
    PolicyError,
    ReasoningDroppedError,
    TemplateRenderError,
    VerificationError,
    unexpected,
)
from .families import Family, resolve_family, template_sha256
from .invariants import check_no_foreign_text, check_rendered, open_block, rendered_beyond
from .messages import content_text
from .options import (
    ARGUMENTS_POLICIES,
    HISTORY_POLICIES,
    REASONING_POLICIES,
    TRAIN_TURNS,
    EncodeOptions,
    HistoryReasoning,
    ReasoningPolicy,
    TrainTurns,
)
from .render import ChatRenderer, template_of, tokenizer_template_kwargs
from .samples import SampleBuilder
from .spans import completion_parts
from .template_facts import reads_content_parts
from .text import common_prefix_len, common_suffix_len, first_difference, suffix_prefix_overlap
from .tokens import PrefixIds, SegmentTokenizer
from .types import EncodeStats, Message, Part, Sample, TurnSpan

__all__ = [
    "ARGUMENTS_POLICIES",
    "HISTORY_POLICIES",
    "REASONING_POLICIES",
    "TRAIN_TURNS",
    "Encoder",
    "encode",
    "get_encoder",
]


@dataclass
class _Turn:
    """One trained turn before tokenization."""

    message_index: int
    prompt_text: str
    completion_text: str
    spliced: bool
    reasoning_formatted: bool
    reasoning_dropped: bool
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True)
class _TurnText:
    """A turn's rendering and where the text the model generated starts in it."""

    rendering: str
    start: int
    spliced: bool

    @property
    def completion(self) -> str:
        return self.rendering[self.start:]


def default_stop_strings(tokenizer: Any) -> tuple[str, ...]:
    """Stop strings of a template no family describes: the tokenizer's eos and,
    when the tokenizer was loaded from a folder, its generation config's eos ids."""
    stops: list[str] = []
    eos = getattr(tokenizer, "eos_token", None)
    if eos:
        stops.append(str(eos))
    path = getattr(tokenizer, "name_or_path", None)
    if path:
        import os

        config = os.path.join(str(path), "generation_config.json")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as fh:
                ids = json.load(fh).get("eos_token_id", [])
            for token_id in [ids] if isinstance(ids, int) else ids:
                text = tokenizer.convert_ids_to_tokens(int(token_id))
                if text and text not in stops:
                    stops.append(text)
    return tuple(stops)


def _starts_with_own_text(message: Any, text: str, overlap: int) -> bool:
    """``text`` (a turn's rendering where it parts from the generation prompt) starts with the message's own
    content or reasoning for at least ``overlap`` characters: the prompt's tail that repeats them is markup that
    happens to end like the message begins (Gemma-4's prompt after a tool response ends ``<|channel>thought\n``,
    and an answer ``t\n...`` rendered without the channel block is not a continuation of ``thought\n``)."""
    for own in (content_text(message.content), message.reasoning or ""):
        if len(own) >= overlap and text.startswith(own[:overlap]):
            return True
    return False


class Encoder:
    """Turns conversations into samples for one tokenizer and chat template.

    Holds what is reused across conversations: the compiled template, the
    family description, the memoised tokenizer. Build one per dataset (the
    module-level ``encode`` keeps a small cache of them).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        chat_template: str | None = None,
        family: str | Family | None = None,
        strict: bool = False,
        stop_strings: Sequence[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template_of(tokenizer, chat_template)
        self.family = resolve_family(self.template, family, strict=strict)
        self.renderer = ChatRenderer(self.template, tokenizer_template_kwargs(tokenizer))
        self.stop_strings = tuple(stop_strings or self.family.stop_strings or default_stop_strings(tokenizer))
        if not self.stop_strings:
            raise PolicyError(
                "no stop strings: the template matches no family and the tokenizer has no eos token; "
                "pass stop_strings=[...]",
                rule="no-stop-strings",
            )
        self.tokens = SegmentTokenizer(tokenizer, split_on=self.template + "".join(self.stop_strings))
        self.content_parts = reads_content_parts(self.template)
        """The template loops over message content: text parts reach it as parts, else joined (as vLLM does)."""
        self.prefix = (self.family.prefix_rewritten_by is not None
                       and template_sha256(self.template) in self.family.match_sha256)
        """The family states its prefix property (``[prefix]``) for exactly this template: the fast path."""
        self.prefix_checked = 0
        """Conversations encoded on the fast path so far (the run-time check samples them: ``_check_due``)."""
        _warn_if_lossy(self.tokens)

    # ------------------------------------------------------------------ encode
    def encode(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        *,
        options: EncodeOptions | None = None,
        reasoning_policy: str | None = None,
        history_reasoning: str | None = None,
        train_turns: str | None = None,
        arguments_policy: str | None = None,
        conversation_index: int | None = None,
        stats: EncodeStats | None = None,
    ) -> list[Sample]:
        """Samples of one conversation (see ``swift_ext.encode``); ``options`` or the policy keywords."""
        try:
            options = EncodeOptions.of(options, reasoning_policy=reasoning_policy, history_reasoning=history_reasoning,
                                       train_turns=train_turns, arguments_policy=arguments_policy)
            with self.renderer.memo():
                return self._encode(self.conversation(messages, tools, chat_template_kwargs, options), stats)
        except ParityError as exc:
            raise exc.with_conversation(conversation_index) from None
        except Exception as exc:  # a bug or an unforeseen input: one row's error, never a raw crash mid-dataset
            raise unexpected(exc, conversation_index) from exc

    def conversation(self, messages: Sequence[Mapping[str, Any]], tools: Any = None,
                     chat_template_kwargs: Mapping[str, Any] | None = None, options: EncodeOptions | None = None,
                     *, require_assistant: bool = True, check_tool_order: bool = True) -> Conversation:
        """The conversation parsed and prepared for this template (see ``Conversation.build``)."""
        return Conversation.build(self, messages, tools, chat_template_kwargs, options,
                                  require_assistant=require_assistant, check_tool_order=check_tool_order)

    def _encode(self, conversation: Conversation, stats: EncodeStats | None) -> list[Sample]:
        trained = conversation.trained_turns()
        fast = self._encode_or_recheck(conversation, trained) if self.prefix else None
        if fast is None:
            turns = [self._derive_turn(conversation, i) for i in trained]
            samples = self._assemble(turns)
        else:
            samples, turns = fast
        if stats is not None:
            self._count(stats, samples, turns, conversation)
        return samples

    # ----------------------------------------------------------- conversation
    def template_kwargs(self, chat_template_kwargs: Mapping[str, Any] | None,
                        history_reasoning: str | HistoryReasoning) -> dict:
        """Template kwargs for a history-reasoning policy (``keep`` uses the template's own switch)."""
        history = EncodeOptions.of(history_reasoning=history_reasoning).history_reasoning
        if chat_template_kwargs is not None and not isinstance(chat_template_kwargs, Mapping):
            raise InputError(f"chat_template_kwargs must be a mapping such as {{'enable_thinking': False}}, got "
                             f"{type(chat_template_kwargs).__name__}", rule="input-kwargs-type")
        kwargs = dict(chat_template_kwargs or {})
        if history is HistoryReasoning.KEEP:
            if self.family.keep_history_kwarg is None:
                raise PolicyError(
                    f"history_reasoning='keep' needs a template switch that keeps past reasoning, and the "
                    f"{self.family.name!r} family's template has none; use 'template' (the template's own behaviour) "
                    "or a model whose template has one (Qwen3.6 preserve_thinking, GLM-4.7 clear_thinking)",
                    rule="policy-keep-history",
                )
            kwargs[self.family.keep_history_kwarg] = self.family.keep_history_value
        return kwargs

    @staticmethod
    def trained_turns(messages: list[Message], train_turns: str | TrainTurns) -> list[int]:
        turns = [i for i, m in enumerate(messages) if m.role == "assistant" and m.train]
        if EncodeOptions.of(train_turns=train_turns).train_turns is TrainTurns.LAST:
            last = max(i for i, m in enumerate(messages) if m.role == "assistant")
            turns = [i for i in turns if i == last]
        if not turns:
            raise InputError("no assistant turn is trained (all have loss: false)", rule="I5-zero-label")
        for i in turns:
            message = messages[i]
            if message.content in (None, []) and message.reasoning is None and not message.tool_calls:
                raise InputError(
                    "the assistant turn has no content (null), reasoning or tool calls: there is nothing to train. "
                    "Give it content (\"\" if the model should answer with nothing at all), or keep it as context "
                    "with loss: false", rule="input-empty-turn", message_index=i)
        return turns

    def template_message(self, message: Message, *, drop_reasoning: bool = False,
                         arguments_policy: str = "parse") -> dict[str, Any]:
        """The dict the chat template sees for one message, in the family's field names."""
        # A None value means "absent", as transformers >= 5.2x and OpenAI-style servers treat it (5.19 would
        # render the text 'None' into GLM-4.7's history).
        out: dict[str, Any] = {"role": message.role}
        if message.content is not None:
            out["content"] = self._content(message.content)
        reasoning = None if drop_reasoning else message.reasoning
        if reasoning is not None:
            # The names transformers itself passes reasoning under, plus the family's own.
            out["reasoning_content"] = reasoning
            out["thinking"] = reasoning
            if self.family.reasoning_field:
                out[self.family.reasoning_field] = reasoning
        if message.tool_calls:
            out["tool_calls"] = [self._tool_call(call, arguments_policy) for call in message.tool_calls]
        if message.tool_call_id is not None:
            out["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            out["name"] = message.name
        for key, value in message.extra.items():
            if value is not None:
                out.setdefault(key, value)
        return out

    def _content(self, content: str | list[Any]) -> str | list[Any]:
        """Content as an OpenAI-compatible server hands it to this template (vLLM's chat endpoint): text parts
        joined by a newline unless the template loops over content parts itself; media parts always as parts,
        for the template (or the model's processor) to place."""
        if isinstance(content, str) or self.content_parts:
            return content
        if all(part.get("type") == "text" for part in content):
            return content_text(content)
        return content

    def _tool_call(self, call: Any, arguments_policy: str = "parse") -> dict[str, Any]:
        """The call as the template receives it. ``parse`` (default) is what vLLM's chat endpoint does: JSON-text
        arguments become an object; a template that concatenates text (family ``tool_arguments = "json"``) gets
        that object serialised. ``verbatim`` keeps the JSON text as written wherever the template accepts text."""
        form = self.family.tool_arguments
        verbatim = arguments_policy == "verbatim" and call.arguments_json is not None
        if form == "dict":
            arguments: Any = call.arguments
        elif form == "json":
            arguments = call.arguments_json if verbatim else json.dumps(call.arguments, ensure_ascii=False)
        else:
            arguments = call.arguments_json if verbatim else call.arguments
        function = {"name": call.name, "arguments": arguments}
        out: dict[str, Any] = {"type": call.type, "function": function}
        if call.id is not None:
            out["id"] = call.id
        return out

    def render(self, dicts, tools, kwargs, *, add_generation_prompt: bool, upto: int) -> str:
        try:
            return self.renderer.render(
                dicts[:upto], tools=tools, add_generation_prompt=add_generation_prompt, kwargs=kwargs
            )
        except TemplateRenderError as exc:
            what = "generation prompt" if add_generation_prompt else "rendering"
            raise TemplateRenderError(
                f"{exc.detail} (while building the {what} of messages[:{upto}])", rule=exc.rule,
                message_index=upto - 1 if upto else None,
            ) from None

    def render_marked(self, dicts, tools, kwargs, *, upto: int) -> tuple[str, dict[int, int]]:
        """``render(..., add_generation_prompt=False)`` with where each message's loop step starts."""
        try:
            return self.renderer.render_marked(dicts[:upto], tools=tools, kwargs=kwargs)
        except TemplateRenderError as exc:
            raise TemplateRenderError(
                f"{exc.detail} (while building the rendering of messages[:{upto}])", rule=exc.rule,
                message_index=upto - 1 if upto else None,
            ) from None

    # ------------------------------------------------------------------- turns
    def _derive_turn(self, conversation: Conversation, i: int) -> _Turn:
        message = conversation.messages[i]
        policy = conversation.options.reasoning_policy
        prompt = conversation.generation_prompt(i)
        thinking = self.family.thinking_enabled(conversation.kwargs)
        dropped = False
        if thinking is False and message.reasoning and message.reasoning.strip():
            if policy is not ReasoningPolicy.DROP:
                raise ReasoningDroppedError(
                    f"the turn carries reasoning ({message.reasoning[:40]!r}...) but thinking is off "
                    f"({self.family.thinking_kwarg}=False): a model in non-thinking mode does not generate it. "
                    "Turn thinking on, remove the reasoning, or pass reasoning_policy='drop'",
                    rule="reasoning-thinking-off",
                    message_index=i,
                )
            conversation = conversation.without_reasoning(i)
            dropped = True
        try:
            text = self._turn_text(conversation, i, prompt)
        except ReasoningDroppedError:
            if not (message.reasoning and policy is ReasoningPolicy.DROP):
                raise
            conversation = conversation.without_reasoning(i)
            text = self._turn_text(conversation, i, prompt)
            dropped = True
        completion = self._cut_at_stop(text.completion, message, i)
        self._check_calls_rendered(conversation, i, text, len(completion))
        return self._finish_turn(conversation, i, prompt, completion, text.spliced, dropped, thinking)

    def _finish_turn(self, conversation: Conversation, i: int, prompt: str, completion: str, spliced: bool,
                     dropped: bool, thinking: bool | None) -> _Turn:
        """Reasoning restored, an open block closed, the checks, the parts. Only the prompt's tail is read (its
        last 4,096 characters suffice: ``_PrefixPlan.tail``)."""
        message, policy = conversation.messages[i], conversation.options.reasoning_policy
        formatted = False
        if message.reasoning and message.reasoning.strip() and not dropped:
            completion, formatted, dropped = self._restore_reasoning(prompt, completion, message, i, thinking, policy,
                                                                     conversation)
        completion, closed = self._close_open_block(prompt, completion, i)
        formatted = formatted or closed
        check_rendered(completion, message, i)
        if spliced:
            check_no_foreign_text(completion, conversation.messages, i)
        parts = completion_parts(completion, message, self.family.reasoning_tags, self._open_block(prompt),
                                 self.stop_strings)
        return _Turn(i, prompt, completion, spliced, formatted, dropped, parts)

    # ------------------------------------------------------------ fast path
    # A trained turn needs its generation prompt G_i and its rendering R_i: two renders of a prefix per turn, so
    # the cost grows with the square of the conversation's length. Where the family states the template's prefix
    # property ([prefix] in templates/*.toml, proven in tests/test_structural.py against apply_chat_template), one
    # marked render of messages[:j] (j: the next message that may rewrite history) holds every prefix before j:
    # render(messages[:k]) is that text cut where message k's step of the template's message loop starts, and
    # G_k is render(messages[:k]) plus the generation prompt. The turn is then the text between two cuts, and the
    # prompt's ids come from one tokenization of that text (tokens.PrefixIds). Every turn the property does not
    # cover (spliced, several tool calls, reasoning dropped, a last turn that renders differently) takes the
    # per-turn path, and a sample of conversations is encoded both ways (_check_due): any difference is a loud
    # family-prefix-mismatch, never a wrong sample.
    PREFIX_CHECK_FIRST = 2
    PREFIX_CHECK_EVERY = 256

    def _encode_fast(self, conversation: Conversation, trained: list[int]) -> tuple[list[Sample], list[_Turn]] | None:
        """The samples and turns from the reference renders (``_PrefixPlan``), or None where the conversation
        gives the fast path nothing to cut (the per-turn path then encodes it)."""
        first = trained[0]
        if first == 0:
            return None  # a conversation that opens with the turn: no prefix to cut
        history, prompt = conversation.history(first), conversation.generation_prompt(first)
        if not prompt.startswith(history):
            return None
        plan = _PrefixPlan(self, conversation, prompt[len(history):])
        builder = SampleBuilder()
        turns: list[_Turn] = []
        known: tuple[PrefixIds, int] | None = None  # the ids the current sample is known to share with a text
        for i in trained:
            fast = plan.turn(i)
            if fast is None:
                turn = self._derive_turn(conversation, i)
                cut = plan.prompt_ids(i, turn.prompt_text)
                if cut is not None:
                    turn.prompt_text = ""
                    fast = (turn, *cut)
            if fast is None:
                prompt_ids: Any = self.tokens.encode(turn.prompt_text)
                shared, known = 0, None
            else:
                turn, ids, count, rest = fast
                prompt_ids = _Joined(ids, count, rest) if ids.memoised else rest
                shared = known[1] if known is not None and known[0] is ids and ids.memoised else 0
                known = (ids, count)
            self._add(builder, turn, prompt_ids, shared)
            turns.append(turn)
        samples = builder.samples
        if self._check_due():
            self._check_fast(conversation, trained, samples)
        return samples, turns

    def _encode_or_recheck(self, conversation: Conversation,
                           trained: list[int]) -> tuple[list[Sample], list[_Turn]] | None:
        """The fast path; where it raises, the per-turn path decides: its own error (today's, exactly), or a
        family-prefix-mismatch when it encodes what the fast path refused."""
        try:
            return self._encode_fast(conversation, trained)
        except ParityError as exc:
            if exc.rule == "family-prefix-mismatch":
                raise
            expected = self._assemble([self._derive_turn(conversation, i) for i in trained])
            self._mismatch(exc.message_index if exc.message_index is not None else
                           (expected[0].turns[0].message_index if expected and expected[0].turns else None))

    def _check_due(self) -> bool:
        """The first conversations an encoder takes the fast path for, then one in ``PREFIX_CHECK_EVERY``."""
        self.prefix_checked += 1
        return self.prefix_checked <= self.PREFIX_CHECK_FIRST or not self.prefix_checked % self.PREFIX_CHECK_EVERY

    def _check_fast(self, conversation: Conversation, trained: list[int], samples: list[Sample]) -> None:
        """The per-turn path on the same conversation must give the same samples, else the family's stated prefix
        property is wrong for this template: a loud error, never a sample built on it."""
        expected = self._assemble([self._derive_turn(conversation, i) for i in trained])
        for got, want in zip(samples, expected):
            if got != want:
                index = next((a.message_index for a, b in zip(got.turns, want.turns) if a != b),
                             got.turns[0].message_index if got.turns else None)
                break
        else:
            if len(samples) == len(expected):
                return
            index = None
        self._mismatch(index)

    def _mismatch(self, index: int | None) -> NoReturn:
        raise ParityError(
            f"the {self.family.name!r} family states a prefix property ([prefix] in its description) that this "
            "conversation breaks: the fast path and the per-turn path give different samples. Report it with the "
            "conversation; meanwhile pass family=... with the generic family, 'hf', to encode every turn on its own",
            rule="family-prefix-mismatch", message_index=index)

    def _turn_text(self, conversation: Conversation, i: int, prompt: str) -> _TurnText:
        """The text the model generated for turn i (before the stop cut), and where it sits in the rendering.

        The completion is the turn's text after its longest overlap with the generation prompt: the header they
        share, and then whatever the prompt's tail already holds of the turn (DeepSeek-V3.2's thinking-off prompt
        ends ``<think></think>`` where the turn renders a bare ``</think>``): the model never writes it again.
        """
        rendering = conversation.rendering(i)
        if rendering.startswith(prompt):
            return _TurnText(rendering, len(prompt), False)
        history = conversation.history(i)
        if not prompt.startswith(history):
            raise TemplateRenderError(
                "the generation prompt does not extend the rendering of the history: "
                + first_difference(history, prompt),
                rule="generation-prompt-not-suffix",
                message_index=i,
            )
        gen_prompt = prompt[len(history):]
        if rendering.startswith(history):
            turn_start = len(history)
        else:
            turn_start = self._locate_turn(rendering, gen_prompt, history, i, prompt)
        turn = rendering[turn_start:]
        # Both cuts fall on token boundaries of the turn's text: a shared '<' of '<think>' and '</think>'
        # (DeepSeek-V3.1) is no overlap, but '<think>\n' of a prompt ending '<think>\n\n' is.
        bounds = {0, *self.tokens.boundaries(turn)}
        shared = max(end for end in bounds if end <= common_prefix_len(turn, gen_prompt))
        leftover = gen_prompt[shared:]
        overlap = suffix_prefix_overlap(leftover, turn[shared:])
        while overlap and (shared + overlap not in bounds or not leftover.endswith(turn[shared:shared + overlap])):
            overlap -= 1
        if overlap and _starts_with_own_text(conversation.messages[i], turn[shared:], overlap):
            overlap = 0  # the message's own words, which the prompt's markup happens to end with
        shared += overlap
        completion = turn[shared:]
        if leftover.strip() and leftover.strip() in completion:
            raise ReasoningDroppedError(
                f"the generation prompt already holds {leftover!r}, which the turn's own rendering writes after "
                f"its text ({completion[:60]!r}...): the turn carries reasoning while thinking is off. Turn thinking "
                "on, remove the reasoning, or pass reasoning_policy='drop'",
                rule="reasoning-thinking-off",
                message_index=i,
            )
        return _TurnText(rendering, turn_start + shared, shared < len(gen_prompt))

    def _locate_turn(self, rendering: str, gen_prompt: str, history: str, i: int, prompt: str) -> int:
        """Where turn i's text starts in a rendering whose history differs from the prompt's.

        The rewrite (a past turn's reasoning dropped, say) is somewhere inside the
        history; what comes right before the turn, the rendering of the message it
        answers, is the same in both. So the turn starts at the copy of the
        generation prompt's first token whose preceding text shares the longest
        suffix with the prompt's history.
        """
        bounds = self.tokens.boundaries(gen_prompt)
        head = gen_prompt[: bounds[0]] if bounds else gen_prompt
        best, best_shared = -1, -1
        # The rewrite is inside the history, so the turn starts after the first place the two histories part.
        start = rendering.find(head, common_prefix_len(history, rendering))
        while head and start >= 0:
            shared = common_suffix_len(history, rendering[:start])
            if shared >= best_shared:
                best, best_shared = start, shared
            start = rendering.find(head, start + 1)
        if best < 0 or best_shared == 0:
            raise TemplateRenderError(
                "cannot find the turn in the template's rendering (history was rewritten and the generation "
                "prompt's header does not follow the history): " + first_difference(prompt, rendering),
                rule="turn-not-located",
                message_index=i,
            )
        return best

    def _cut_at_stop(self, raw: str, message: Message, i: int) -> str:
        cut = None
        for stop in self.stop_strings:
            pos = raw.find(stop)
            if pos >= 0 and (cut is None or pos + len(stop) < cut):
                cut = pos + len(stop)
        if cut is not None:
            return raw[:cut]
        appended = self.family.stop_after_tool_calls if message.tool_calls else None
        appended = appended or self.family.stop_after_turn
        if appended:
            return raw + appended
        raise ParityError(
            f"the turn's rendering {raw[-80:]!r} contains none of the stop strings {list(self.stop_strings)}; "
            "pass stop_strings=[...] with what the model generates to end a turn",
            rule="I2-no-stop-string",
            message_index=i,
        )

    def _restore_reasoning(self, prompt, completion, message, i, thinking, reasoning_policy,
                           conversation) -> tuple[str, bool, bool]:
        """Make sure the turn's reasoning is in its completion, or say why not.

        The family's format is written only as far as the prompt has not written it already: after DeepSeek-R1's
        ``<think>\n`` prompt the model writes ``{reasoning}\n</think>\n\n``, not a second ``<think>``."""
        reasoning = message.reasoning
        rendered = rendered_beyond(reasoning.strip(), completion, message)
        if rendered is None:  # counting cannot tell (a short reasoning, or one the call also holds): ask the template
            # (with the whole generation prompt: the fast path hands this method only the prompt's tail)
            without = self._turn_text(conversation.without_reasoning(i), i, conversation.generation_prompt(i))
            rendered = self._cut_at_stop(without.completion, message, i) != completion
        if rendered:
            return completion, False, False
        family = self.family
        if thinking is not False and family.reasoning_format and self._format_fits(prompt):
            text = self._unwritten(prompt, family.reasoning_format.format(reasoning=reasoning))
            placeholder = family.reasoning_placeholder and self._unwritten(prompt, family.reasoning_placeholder)
            if placeholder and placeholder in completion:
                return completion.replace(placeholder, text, 1), True, False
            return text + completion, True, False
        if reasoning_policy == "drop":
            return completion, False, True
        if thinking is False:
            why = "thinking is off for this render"
        elif family.reasoning_format:
            why = f"the {family.name!r} family's reasoning format has no place after this prompt"
        else:
            why = f"the {family.name!r} family gives no format for it"
        raise ReasoningDroppedError(
            f"the turn carries reasoning ({reasoning[:40]!r}...) that the template does not render, and {why}; "
            "training without it would be silent. Pass reasoning_policy='drop' to drop it (counted)",
            rule="reasoning-dropped",
            message_index=i,
        )

    def _open_block(self, prompt: str) -> tuple[str, str] | None:
        """The reasoning block the generation prompt opens (its open and close tags), or None."""
        return open_block(prompt, self.family.reasoning_tags)

    def _unwritten(self, prompt: str, text: str) -> str:
        """``text`` less what the prompt's tail already wrote of it: only a prefix that covers the opening tag of
        the block the prompt leaves open counts (a lone shared newline is not an overlap)."""
        block = self._open_block(prompt)
        if block is None or not text.startswith(block[0]):
            return text
        overlap = suffix_prefix_overlap(prompt, text)
        return text[overlap:] if overlap >= len(block[0]) else text

    def _format_fits(self, prompt: str) -> bool:
        """A reasoning format that opens its own block (``<think>\n{reasoning}...``) fits after any prompt; one
        that only closes it (``{reasoning}</think>``) fits only where the prompt ends inside an open block
        (DeepSeek-V3.1 opens none after tool outputs: there its reasoning has no place)."""
        opener, form = self.family.reasoning_open, self.family.reasoning_format or ""
        return not opener or opener in form or self._open_block(prompt) is not None

    def _close_open_block(self, prompt: str, completion: str, i: int) -> tuple[str, bool]:
        """A prompt ending inside an open reasoning block (QwQ's and DeepSeek-R1's ``<think>\n``; Gemma-4's
        ``<|channel>thought\n`` after a tool response) is followed at inference by reasoning and the block's
        close. A turn without reasoning whose rendering never closes it gets the family's format with empty
        reasoning (as far as the prompt has not written it). Without a format, the template has not shown how the
        block closes, and training the answer inside it would be a guess: it raises."""
        block = self._open_block(prompt)
        if block is None or block[1] in completion:
            return completion, False
        if self.family.reasoning_format and (self.family.reasoning_open, self.family.reasoning_close) == block:
            return self._unwritten(prompt, self.family.reasoning_format.format(reasoning="")) + completion, True
        raise ReasoningDroppedError(
            f"the generation prompt ends inside an open reasoning block ({block[0]!r}) that the turn's rendering "
            f"never closes ({completion[:60]!r}), and the {self.family.name!r} family gives no format for it; "
            "give the turn its reasoning, or describe the template's family",
            rule="reasoning-block-open",
            message_index=i,
        )

    def _check_calls_rendered(self, conversation: Conversation, i: int, text: _TurnText, length: int) -> None:
        """Every call of a turn with several must be rendered, inside the completion.

        Rendering the turn with its first k calls and with its first k + 1 shows where call k's text is; it must
        lie within the completion (before the stop string). gpt-oss renders only the first call of a message
        (harmony has one call per message) and would otherwise train the other calls away without a word."""
        calls = conversation.dicts[i].get("tool_calls") or []
        if len(calls) < 2:
            return
        start, end = text.start, text.start + length
        previous = None
        for k in range(1, len(calls) + 1):
            if k == len(calls):
                current = text.rendering
            else:
                current = conversation.with_message(i, {**conversation.dicts[i], "tool_calls": calls[:k]}).rendering(i)
            if previous is not None:
                at = common_prefix_len(previous, current)
                if at == len(previous) == len(current) or not start <= at < end:
                    name = conversation.messages[i].tool_calls[k - 1].name
                    where = "does not render it" if at == len(current) else "renders it outside the turn's completion"
                    raise TemplateRenderError(
                        f"the turn makes {len(calls)} tool calls and the template {where}: call {k} "
                        f"({name!r}) would not be trained (gpt-oss renders one call per message: split such a turn "
                        "into one assistant message per call)",
                        rule="template-drops-tool-calls", message_index=i)
            previous = current

    # --------------------------------------------------------------- samples
    def _assemble(self, turns: list[_Turn]) -> list[Sample]:
        builder = SampleBuilder()
        for turn in turns:
            self._add(builder, turn, self.tokens.encode(turn.prompt_text))
        return builder.samples

    def _add(self, builder: SampleBuilder, turn: _Turn, prompt_ids: Sequence[int], known: int = 0) -> None:
        completion_ids = self.tokens.encode(turn.completion_text)
        if not len(prompt_ids):
            raise VerificationError("the generation prompt is empty: every token would be trained",
                                    rule="I5-all-label", message_index=turn.message_index)
        if not completion_ids:
            raise VerificationError("the turn's completion is empty", rule="I5-empty-completion",
                                    message_index=turn.message_index)
        span = TurnSpan(message_index=turn.message_index, prompt_end=0, label_start=0, label_end=0,
                        completion_text=turn.completion_text, spliced=turn.spliced,
                        reasoning_formatted=turn.reasoning_formatted, parts=turn.parts)
        builder.add(prompt_ids, completion_ids, span, known=known)

    def _count(self, stats: EncodeStats, samples: list[Sample], turns: list[_Turn],
               conversation: Conversation) -> None:
        stats.conversations += 1
        stats.samples += len(samples)
        stats.emitted_tokens += sum(len(s) for s in samples)
        stats.full_render_tokens += len(self.tokens.encode(conversation.full()))
        stats.trained_tokens += sum(s.num_labels for s in samples)
        stats.trained_turns += len(turns)
        stats.spliced_turns += sum(t.spliced for t in turns)
        stats.reasoning_dropped += sum(t.reasoning_dropped for t in turns)
        stats.reasoning_formatted += sum(t.reasoning_formatted for t in turns)


class _Joined:
    """``base.ids(0, count) + rest`` without building it: a prompt's ids on the fast path (only slices are
    taken, and each costs what it returns)."""

    __slots__ = ("base", "count", "rest")

    def __init__(self, base: PrefixIds, count: int, rest: list[int]) -> None:
        self.base, self.count, self.rest = base, count, rest

    def __len__(self) -> int:
        return self.count + len(self.rest)

    def __getitem__(self, cut: slice) -> list[int]:
        start, stop, _ = cut.indices(len(self))
        if stop <= self.count:
            return self.base.ids(start, stop)
        if start >= self.count:
            return self.rest[start - self.count:stop - self.count]
        return self.base.ids(start, self.count) + self.rest[:stop - self.count]


class _PrefixPlan:
    """The fast path's view of one conversation: its marked reference renders and the turns they cover."""

    TAIL = 4096  # the prompt's tail the turn checks read: suffix_prefix_overlap's limit, and open_block's reach

    def __init__(self, encoder: Encoder, conversation: Conversation, generation_prompt: str) -> None:
        self.encoder = encoder
        self.conversation = conversation
        self.generation_prompt = generation_prompt
        family = encoder.family
        kinds = set(family.prefix_rewritten_by or ())
        messages = conversation.messages
        self.next_rewrite = [len(messages)] * (len(messages) + 1)
        for k in range(len(messages) - 1, -1, -1):
            message = messages[k]
            rewrites = message.role in kinds or ("answer" in kinds and message.role == "assistant"
                                                 and not message.tool_calls)
            self.next_rewrite[k] = k if rewrites else self.next_rewrite[k + 1]
        self.last_turn = family.prefix_last_turn
        self.references: dict[int, tuple[str, dict[int, int]]] = {}
        self.ids: dict[int, PrefixIds] = {}

    def _reference(self, j: int) -> tuple[str, dict[int, int]]:
        reference = self.references.get(j)
        if reference is None:
            reference = self.references[j] = self.conversation.render_marked(j)
        return reference

    def _stable_when_last(self, k: int) -> bool:
        """Message k renders the same when it is the last one (``[prefix] last_turn``)."""
        message = self.conversation.messages[k]
        if message.role != "assistant" or self.last_turn == "same":
            return True
        if self.last_turn == "same-with-tool-calls":
            return bool(message.tool_calls)
        return bool(message.reasoning and message.reasoning.strip())

    def turn(self, i: int) -> tuple[_Turn, PrefixIds, int, list[int]] | None:
        """Turn i from its reference render (the turn, the reference's ids, and the prompt's ids as a count into
        them plus the rest), or None: the per-turn path."""
        encoder, conversation = self.encoder, self.conversation
        message = conversation.messages[i]
        thinking = encoder.family.thinking_enabled(conversation.kwargs)
        if (len(message.tool_calls or ()) > 1 or (thinking is False and message.reasoning)
                or (i and not self._stable_when_last(i - 1))):
            return None
        j = self.next_rewrite[i]
        text, offsets = self._reference(j)
        start = len(text) if i == j else offsets.get(i)
        if start is None:
            return None
        begin = start + len(self.generation_prompt)
        if i < j and self._stable_when_last(i):
            end = len(text) if i + 1 == j else offsets.get(i + 1)
            if end is None or end < begin or not text.startswith(self.generation_prompt, start):
                return None  # e.g. the turn's rendering does not start with its generation prompt: spliced
            raw = text[begin:end]
        else:  # the turn rewrites history (gpt-oss's final answer) or renders differently when last: its own
            rendering = conversation.rendering(i)
            if not (rendering.startswith(text[:start]) and rendering.startswith(self.generation_prompt, start)):
                return None
            raw = rendering[begin:]
        completion = encoder._cut_at_stop(raw, message, i)
        turn = encoder._finish_turn(conversation, i, self.tail(text, start), completion, False, False, thinking)
        turn.prompt_text = ""  # its ids are counted below; 4 KB of tail per turn would be memory that grows
        ids = self._ids(j)
        count, rest = ids.split(start, self.generation_prompt)
        return turn, ids, count, rest

    def prompt_ids(self, i: int, prompt: str) -> tuple[PrefixIds, int, list[int]] | None:
        """The ids of a per-turn prompt from the reference render, where the prompt is that render plus the
        generation prompt (checked here, text for text): a turn that rewrites history itself (gpt-oss's final
        answer) has the render of messages[:i] as its reference."""
        j = self.next_rewrite[i]
        if j != i or j not in self.references:
            return None
        text = self.references[j][0]
        if not (len(prompt) == len(text) + len(self.generation_prompt) and prompt.startswith(text)
                and prompt.endswith(self.generation_prompt)):
            return None
        ids = self._ids(j)
        return (ids, *ids.split(len(text), self.generation_prompt))

    def _ids(self, j: int) -> PrefixIds:
        ids = self.ids.get(j)
        if ids is None:
            ids = self.ids[j] = self.encoder.tokens.prefixes(self.references[j][0])
        return ids

    def tail(self, text: str, start: int) -> str:
        """The generation prompt's last ``TAIL`` characters or more: all the turn checks read of it (the whole
        prompt where its tail is whitespace past that)."""
        tail = text[max(0, start - self.TAIL):start] + self.generation_prompt
        if start > self.TAIL and len(tail.rstrip()) < 256:
            return text[:start] + self.generation_prompt
        return tail


# ---------------------------------------------------------------------- helpers
_ROUND_TRIP = "Hello world\n  indented code"


def _warn_if_lossy(tokens: SegmentTokenizer) -> None:
    """A tokenizer that loses spaces or newlines corrupts every sample, exactly or not: say so once.

    (transformers < 5.20 loads DeepSeek's byte-level tokenizers as Metaspace ones that drop them.)"""
    decoded = tokens.decode(tokens.encode_whole(_ROUND_TRIP))
    if decoded != _ROUND_TRIP:
        warnings.warn(
            f"the tokenizer does not round-trip text ({_ROUND_TRIP!r} decodes as {decoded!r}): it was probably "
            "loaded with the wrong class for its tokenizer.json (transformers < 5.20 does this to DeepSeek "
            "tokenizers). Samples are exact for this tokenizer, but it is not the model's.",
            stacklevel=3,
        )


@dataclass(frozen=True)
class _CachedEncoder:
    """An encoder with what its output depends on beyond its cache key, checked on every hit."""

    tokenizer: Callable[[], Any]  # a weak identity: an id Python reuses for a new tokenizer never matches
    special_tokens: Any  # the bos_token/eos_token/... the renderer was given, as built
    encoder: Encoder

    def serves(self, tokenizer: Any) -> bool:
        return (self.tokenizer() is tokenizer and self.encoder.tokens.current()
                and _special_tokens(tokenizer) == self.special_tokens)


def _special_tokens(tokenizer: Any) -> Any:
    """What ``special_tokens_map`` is made from, cheaply: transformers 5 keeps it in one dict that setting
    ``bos_token`` & co. updates (``special_tokens_map`` builds a new dict, 1-2 us a call, per conversation)."""
    state = getattr(tokenizer, "_special_tokens_map", None)
    return state if isinstance(state, dict) else getattr(tokenizer, "special_tokens_map", None)


_MAX_ENCODERS = 8
_ENCODERS: OrderedDict[tuple, _CachedEncoder] = OrderedDict()
_ENCODERS_LOCK = threading.Lock()


def get_encoder(tokenizer: Any, *, chat_template=None, family=None, strict=False, stop_strings=None) -> Encoder:
    """A cached ``Encoder`` for this tokenizer and settings (up to 8 per process, least recently used dropped).

    Rebuilt when its output could differ: another template, tokens added to the tokenizer
    (``add_special_tokens`` / ``add_tokens``) or special tokens reassigned since it was built. Thread-safe."""
    family_key = family.name if isinstance(family, Family) else family
    template = template_of(tokenizer, chat_template)
    key = (id(tokenizer), template, family_key, strict, tuple(stop_strings or ()))
    with _ENCODERS_LOCK:
        cached = _ENCODERS.get(key)
        if cached is not None:
            _ENCODERS.move_to_end(key)
    if cached is not None and cached.serves(tokenizer):
        return cached.encoder
    # Built outside the lock (a template compile and tokenizer probes): other threads' hits do not wait for it.
    special_tokens = _special_tokens(tokenizer)
    special_tokens = dict(special_tokens) if isinstance(special_tokens, dict) else special_tokens  # a snapshot
    encoder = Encoder(tokenizer, chat_template=chat_template, family=family, strict=strict, stop_strings=stop_strings)
    fresh = _CachedEncoder(_weak(tokenizer), special_tokens, encoder)
    with _ENCODERS_LOCK:
        cached = _ENCODERS.get(key)
        if cached is not None and cached.serves(tokenizer):
            return cached.encoder  # another thread built it first: share its piece cache
        _ENCODERS[key] = fresh
        _ENCODERS.move_to_end(key)
        while len(_ENCODERS) > _MAX_ENCODERS:
            _ENCODERS.popitem(last=False)
    return encoder


def _weak(tokenizer: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(tokenizer)
    except TypeError:  # an object without weakref support: the encoder holds it strongly anyway
        return lambda: tokenizer


def encode(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    *,
    chat_template: str | None = None,
    family: str | Family | None = None,
    strict: bool = False,
    stop_strings: Sequence[str] | None = None,
    reasoning_policy: str | None = None,
    history_reasoning: str | None = None,
    train_turns: str | None = None,
    arguments_policy: str | None = None,
    options: EncodeOptions | None = None,
    conversation_index: int | None = None,
    stats: EncodeStats | None = None,
) -> list[Sample]:
    """Encode one conversation into inference-exact training samples.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: role/content dicts (system, user, assistant, tool), with
            ``reasoning_content`` (or ``thinking``/``reasoning``/inline
            ``<think>``), ``tool_calls`` and ``loss: false`` as needed.
        tools: tool schemas, as for ``apply_chat_template``.
        chat_template_kwargs: e.g. ``{"enable_thinking": False}``.
        chat_template: a template text (or named template) instead of the tokenizer's.
        family: a family name (``"qwen3"``) instead of detection.
        strict: raise when no family recognises the template.
        stop_strings: override the family's stop strings.
        reasoning_policy: ``"error"`` (default) or ``"drop"`` (counted in ``stats``) for
            reasoning the template does not render and the family cannot format.
        history_reasoning: ``"template"`` (default) or ``"keep"`` (the template's own switch).
        train_turns: ``"all"`` (default) assistant turns without ``loss: false``, or ``"last"``.
        arguments_policy: ``"parse"`` (default; what vLLM's chat endpoint does: JSON-text tool-call arguments are
            parsed into an object before rendering) or ``"verbatim"`` (the JSON text as written, where the
            template accepts text).
        options: the four policies as one ``EncodeOptions`` (the keywords above override its fields).
        conversation_index: the dataset row, named in errors.
        stats: an ``EncodeStats`` to add this conversation's counts to.

    Returns:
        The fewest samples whose every trained turn has its exact inference prefix.
    """
    encoder = get_encoder(tokenizer, chat_template=chat_template, family=family, strict=strict,
                          stop_strings=stop_strings)
    return encoder.encode(
        messages, tools, chat_template_kwargs, options=options, reasoning_policy=reasoning_policy,
        history_reasoning=history_reasoning, train_turns=train_turns, arguments_policy=arguments_policy,
        conversation_index=conversation_index, stats=stats,
    )
