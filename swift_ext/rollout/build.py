"""Rollout records in, aligned training samples out; and the checks that make misalignment loud."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core import Encoder, get_encoder
from ..errors import ParityError, PolicyError
from ..families import Family
from ..samples import SampleBuilder
from ..text import first_token_difference
from ..types import IGNORE_INDEX, Sample, TurnSpan
from .diagnose import (
    alignment_error,
    is_insertion,
    reasoning_of,
    single_edit,
    squash,
    token_context,
    tool_call_texts,
)
from .prompts import PromptBuilder, engine_history_of, normalize_policy, stop_length
from .record import GeneratedTurn, MessageParser, RolloutRecord, ToolCallParser, parse_record

RolloutSample = Sample
"""A training sequence built from a rollout: a ``Sample`` whose ``logprobs`` are the engine's (the name is kept for
code written against earlier versions)."""
RolloutTurnSpan = TurnSpan
"""Where one generated turn sits in a sample: a ``TurnSpan`` with ``ordinal`` (``turn``), ``logprob_start``,
``trained`` and ``canonical`` set."""


@dataclass
class RolloutEncoding:
    """What ``encode_rollout`` returns."""

    samples: list[RolloutSample]
    engine_history: str
    """``"keep"`` or ``"strip"``: how the engine built each turn's prompt (see ``encode_rollout``)."""
    """The policy used: ``keep`` or ``strip``."""
    detected: bool
    """True when the policy was detected from the record rather than given."""
    prompts: list[list[int]]
    """The engine prompt of each generated turn (what the engine must have been fed)."""
    notes: list[str] = field(default_factory=list)
    """Non-fatal findings (non-canonical sampled ids, skipped checks, how the policy was decided)."""

    @property
    def history_reasoning(self) -> str:
        """The earlier name of ``engine_history``."""
        return self.engine_history


# ----------------------------------------------------------------------------------------------- API
def encode_rollout(
    tokenizer: Any,
    record: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    engine_history: str | None = None,
    history_reasoning: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    chat_template: str | None = None,
    family: str | Family | None = None,
    stop_strings: Sequence[str] | None = None,
    single_sequence: bool = False,
    check_text: bool = True,
    tool_call_parser: ToolCallParser | None = None,
    message_parser: MessageParser | None = None,
    conversation_index: int | None = None,
) -> RolloutEncoding:
    """Turn one rollout record into training samples whose tokens and logprobs line up by construction.

    Args:
        tokenizer: the Hugging Face tokenizer (and chat template) the engine used.
        record: ``{"messages": [...], "tools": ..., "chat_template_kwargs": ...}`` (see
            ``swift_ext.rollout.record``), or just the message list.
        engine_history: how the engine built each turn's prompt: ``"keep"`` (it kept the raw token history,
            reasoning included), ``"strip"`` (it re-rendered the conversation with the template each turn), or
            ``None``/``"auto"``: the record's own ``engine_history``, else detected (an error when the two give
            different prompts and the record carries no engine prompt to tell them apart). Not the core's
            ``history_reasoning`` (which of a template's own switches to use when rendering).
        history_reasoning: the earlier name of ``engine_history``, still accepted.
        single_sequence: raise instead of starting a new sample where a turn's prompt does not extend the
            sample so far (what a trainer that wants one sequence per trajectory needs).
        check_text: check every generated turn's ids against the turn's text in the record.
        tool_call_parser: for turns given as ids only, a function from their text to OpenAI ``tool_calls``.
        message_parser: for turns given as ids only, a function from their text to message fields (gpt-oss:
            ``swift_ext.rollout.record.parse_harmony``).

    Returns:
        A ``RolloutEncoding``: the fewest samples such that each generated turn's sampled ids sit verbatim right
        after the exact prompt the engine was fed (one sample per trajectory under ``keep``).

    Raises:
        RolloutAlignmentError: a rule ``rollout-...`` is broken; the message names the turn, tokens consumed vs
            logprobs expected, the first differing token with decoded context, and the likely cause.
    """
    encoder = get_encoder(tokenizer, chat_template=chat_template, family=family, stop_strings=stop_strings)
    try:
        return _encode(encoder, record, engine_history_of(engine_history, history_reasoning), tools,
                       chat_template_kwargs, single_sequence,
                       check_text, (tool_call_parser, message_parser))
    except ParityError as exc:
        raise exc.with_conversation(conversation_index) from None


def detect_engine_history(
    tokenizer: Any,
    record: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    chat_template: str | None = None,
    family: str | Family | None = None,
) -> tuple[str | None, str]:
    """Which history policy a rollout used: ``("keep"|"strip", why)``, or ``(None, why)`` when it cannot tell.

    When both policies give the same prompts for every turn the answer is ``"keep"`` (the samples are the same).
    Otherwise the record's engine prompt evidence (``prompt_token_ids`` or ``prompt_tokens``) decides.
    """
    encoder = get_encoder(tokenizer, chat_template=chat_template, family=family)
    rec = _parse(encoder, record, tools, chat_template_kwargs, None)
    builder = _builder(encoder, rec)
    return _detect(builder)[0:2]


detect_history_reasoning = detect_engine_history
"""The earlier name of ``detect_engine_history``."""


def engine_prompts(
    tokenizer: Any,
    record: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    engine_history: str | None = None,
    *,
    history_reasoning: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    chat_template: str | None = None,
    family: str | Family | None = None,
) -> list[list[int]]:
    """The prompt ids the engine must have been fed for each generated turn under ``engine_history``."""
    encoder = get_encoder(tokenizer, chat_template=chat_template, family=family)
    rec = _parse(encoder, record, tools, chat_template_kwargs, None)
    policy = normalize_policy(engine_history_of(engine_history, history_reasoning))
    if policy is None:
        raise PolicyError("engine_prompts needs an explicit engine_history ('keep' or 'strip')",
                          rule="rollout-policy")
    builder = _builder(encoder, rec)
    return builder.keep_prompts() if policy == "keep" else builder.strip_prompts()


def verify_rollout(
    tokenizer: Any,
    record: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    samples: Sequence[Any],
    *,
    engine_history: str | None = None,
    history_reasoning: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    chat_template: str | None = None,
    family: str | Family | None = None,
    conversation_index: int | None = None,
) -> None:
    """Check training samples built by anyone against a rollout record; raise ``RolloutAlignmentError``.

    ``samples`` are ``RolloutSample``s, core ``Sample``s, or dicts with ``input_ids`` and ``labels`` (-100 =
    not trained) or ``loss_mask``, optionally ``logprobs`` (one per labelled position). For each trained
    generated turn, in order, the labelled run must be the sampled ids, the tokens before it must be exactly the
    prompt the engine was fed under the history policy, and the logprobs must be the turn's.
    """
    encoder = get_encoder(tokenizer, chat_template=chat_template, family=family)
    try:
        rec = _parse(encoder, record, tools, chat_template_kwargs, None)
        builder = _builder(encoder, rec)
        policy = normalize_policy(engine_history_of(engine_history, history_reasoning) or rec.engine_history)
        if policy is None:
            policy, why, prompts = _detect(builder)
            if policy is None:
                raise PolicyError(why, rule="rollout-policy-ambiguous")
        else:
            prompts = builder.keep_prompts() if policy == "keep" else builder.strip_prompts()
        _verify(builder, prompts, [_as_sample(s) for s in samples], policy)
    except ParityError as exc:
        raise exc.with_conversation(conversation_index) from None


# ------------------------------------------------------------------------------------------ internals
def _parse(encoder: Encoder, record, tools, chat_template_kwargs, parsers) -> RolloutRecord:
    tool_call_parser, message_parser = parsers or (None, None)
    return parse_record(record, decode=encoder.tokens.decode, stop_length=lambda ids: stop_length(encoder, ids),
                        stop_strings=encoder.stop_strings, tools=tools,
                        chat_template_kwargs=chat_template_kwargs, tool_call_parser=tool_call_parser,
                        message_parser=message_parser)


def _builder(encoder: Encoder, rec: RolloutRecord, kwargs: dict | None = None) -> PromptBuilder:
    return PromptBuilder(encoder, rec, dict(rec.chat_template_kwargs if kwargs is None else kwargs),
                         {t.message_index: list(t.token_ids) for t in rec.turns})


def _encode(encoder, record, engine_history, tools, chat_template_kwargs, single_sequence, check_text,
            parsers) -> RolloutEncoding:
    rec = _parse(encoder, record, tools, chat_template_kwargs, parsers)
    builder = _builder(encoder, rec)
    notes: list[str] = []
    expected = _expected_completions(builder, notes) if check_text else {}
    for turn in rec.turns:
        _check_counts(builder, turn, expected.get(turn.message_index))
    canonical = {}
    for turn in rec.turns:
        if turn.message_index in expected:
            canonical[turn.message_index] = _check_text(builder, turn, expected[turn.message_index], notes)
    policy = normalize_policy(engine_history or rec.engine_history)
    detected = policy is None
    if detected:
        policy, why, prompts = _detect(builder)
        if policy is None:
            raise PolicyError(why, rule="rollout-policy-ambiguous")
        notes.append(f"engine_history={policy!r} detected: {why}")
    else:
        prompts = builder.keep_prompts() if policy == "keep" else builder.strip_prompts()
    for turn, prompt in zip(rec.turns, prompts):
        _check_evidence(builder, turn, prompt, policy)
    samples = _assemble(builder, prompts, policy, single_sequence, canonical)
    _verify(builder, prompts, samples, policy)
    return RolloutEncoding(samples, policy, detected, prompts, notes)


def _assemble(builder: PromptBuilder, prompts, policy, single_sequence, canonical) -> list[Sample]:
    rec = builder.record
    has_logprobs = [t.logprobs is not None for t in rec.turns if t.train]
    if any(has_logprobs) and not all(has_logprobs):
        missing = [t.ordinal for t in rec.turns if t.train and t.logprobs is None]
        raise alignment_error(
            rule="rollout-logprobs-missing", turn=missing[0], message_index=None,
            headline=f"generated turns {missing} have no logprobs while others do: the logprobs could not be "
                     "aligned one to one with the labelled positions", cause=None)
    samples = SampleBuilder(with_logprobs=bool(has_logprobs) and all(has_logprobs))
    for turn, prompt in zip(rec.turns, prompts):

        def one_sequence_only(current: Sample, turn: GeneratedTurn = turn, prompt: list[int] = prompt) -> None:
            if single_sequence:
                raise _prefix_error(builder, current.input_ids, prompt, current.turns, turn, policy,
                                    rule="rollout-single-sequence", exact=False,
                                    what=f"turn #{turn.ordinal}'s engine prompt ({policy}) does not extend the "
                                         "trajectory built so far, so one sequence cannot hold every turn")

        span = TurnSpan(turn.message_index, 0, 0, 0, ordinal=turn.ordinal, trained=turn.train,
                        canonical=canonical.get(turn.message_index))
        samples.add(prompt, list(turn.token_ids), span, logprobs=turn.logprobs, on_new_sample=one_sequence_only)
    return samples.samples


# ---------------------------------------------------------------------------------------- policy
def _detect(builder: PromptBuilder) -> tuple[str | None, str, list[list[int]] | None]:
    keep = builder.keep_prompts()
    strip = builder.strip_prompts()
    turns = builder.record.turns
    differing = [(t, k, s) for t, k, s in zip(turns, keep, strip) if k != s]
    if not differing:
        return "keep", "both policies give the same prompt for every turn", keep
    votes = set()
    for turn, k, s in differing:
        if turn.prompt_token_ids is not None:
            ev = list(turn.prompt_token_ids)
            votes |= {"keep"} if ev == k else {"strip"} if ev == s else set()
        elif turn.prompt_tokens is not None and len(k) != len(s):
            votes |= {"keep"} if turn.prompt_tokens == len(k) else {"strip"} if turn.prompt_tokens == len(s) else set()
    if len(votes) == 1:
        policy = votes.pop()
        first = differing[0][0]
        return (policy, f"the engine's prompt evidence matches '{policy}' (the policies first differ at turn "
                        f"#{first.ordinal}, message {first.message_index})", keep if policy == "keep" else strip)
    first, k, s = differing[0]
    if not votes and any(t.prompt_token_ids is not None or t.prompt_tokens is not None for t, _, _ in differing):
        return (None, f"the engine's prompt evidence matches neither policy at turn #{first.ordinal} (message "
                      f"{first.message_index}); pass engine_history explicitly to see the difference", None)
    return (None, f"ambiguous: 'keep' (raw history) and 'strip' (the template's rendering) give different prompts "
                  f"from turn #{first.ordinal} (message {first.message_index}: {len(k)} vs {len(s)} tokens) and "
                  "the record carries no prompt_token_ids / prompt_tokens to tell which the engine used; pass "
                  "engine_history='keep' or 'strip'", None)


def _other_prompt(builder: PromptBuilder, turn: GeneratedTurn, policy: str) -> list[int]:
    prompts = builder.strip_prompts() if policy == "keep" else builder.keep_prompts()
    return prompts[turn.ordinal]


def _flipped_prompt(builder: PromptBuilder, turn: GeneratedTurn, policy: str) -> list[int] | None:
    kwargs = _flip_thinking(builder)
    if kwargs is None:
        return None
    other = _builder(builder.encoder, builder.record, kwargs)
    try:
        prompts = other.keep_prompts() if policy == "keep" else other.strip_prompts()
    except ParityError:
        return None
    return prompts[turn.ordinal]


def _flip_thinking(builder: PromptBuilder) -> dict | None:
    family = builder.encoder.family
    if family.thinking_kwarg is None:
        return None
    kwargs = dict(builder.kwargs)
    kwargs[family.thinking_kwarg] = not family.thinking_enabled(kwargs)
    return kwargs


def _check_evidence(builder: PromptBuilder, turn: GeneratedTurn, prompt: list[int], policy: str) -> None:
    """The engine's own report of its prompt (when the record has one) must be the rebuilt prompt."""
    decode = builder.encoder.tokens.decode
    where = f"turn #{turn.ordinal} (message {turn.message_index})"
    if turn.prompt_token_ids is not None:
        actual = list(turn.prompt_token_ids)
        if actual == prompt:
            return
        k = first_token_difference(actual, prompt)
        cause, because = _prompt_cause(builder, turn, actual, prompt, policy, k)
        raise alignment_error(
            rule="rollout-engine-prompt", turn=turn.ordinal, message_index=turn.message_index, position=k,
            headline=f"rollout alignment failure for assistant {where}: the engine reports a prompt of "
                     f"{len(actual)} tokens, the template under engine_history='{policy}' gives {len(prompt)}",
            context=token_context(decode, actual, prompt, k, ("engine prompt", f"rebuilt ({policy})")),
            cause=cause, because=because)
    if turn.prompt_tokens is not None and turn.prompt_tokens != len(prompt):
        cause, because = None, None
        other = _other_prompt(builder, turn, policy)
        flipped = _flipped_prompt(builder, turn, policy)
        if len(other) == turn.prompt_tokens:
            cause = "history-reasoning-stripped" if policy == "strip" else "history-reasoning-kept"
            because = f"the other policy gives exactly {len(other)} tokens"
        elif flipped is not None and len(flipped) == turn.prompt_tokens:
            cause, because = "thinking-switch", f"the other thinking setting gives exactly {len(flipped)} tokens"
        raise alignment_error(
            rule="rollout-engine-prompt", turn=turn.ordinal, message_index=turn.message_index,
            headline=f"rollout alignment failure for assistant {where}: the engine reports a prompt of "
                     f"{turn.prompt_tokens} tokens, the template under engine_history='{policy}' gives "
                     f"{len(prompt)}", cause=cause, because=because)


def _prompt_cause(builder, turn, actual, ours, policy, k) -> tuple[str | None, str | None]:
    """Why the engine's reported prompt differs from the rebuilt one at token k."""
    flipped = _flipped_prompt(builder, turn, policy)
    if flipped is not None and flipped == actual:
        return "thinking-switch", f"the engine ran with {_flip_thinking(builder)}"
    decode = builder.encoder.tokens.decode
    if decode(actual) == decode(ours):
        return "retokenized-boundary", "the engine's prompt and the rebuilt one are the same text"
    # The side holding raw history is where the sampled turns sit verbatim.
    raw, rendered = (actual, ours) if policy == "strip" else (ours, actual)
    stripped = "history-reasoning-stripped" if policy == "strip" else "history-reasoning-kept"
    found = _explain_turn_region(builder, raw, rendered, k, _raw_spans(builder, raw), stripped)
    if found is not None:
        cause, because = found[3], found[4]
        if cause == "history-reasoning-stripped":
            because += "; the engine kept raw history: use engine_history='keep'"
        elif cause == "history-reasoning-kept":
            because += "; the engine re-rendered the conversation: use engine_history='strip'"
        return cause, because
    return _region_cause(builder, actual, ours, k)


_GEN_TAIL = 8
"""Tokens before a turn's sampled ids still counted as that turn's (the end of its generation prompt)."""


def _raw_spans(builder: PromptBuilder, seq: list[int]) -> list[tuple[int, int, int]]:
    """(turn, start, end) of the generated turns that sit verbatim in ``seq`` where raw history puts them."""
    spans = []
    for turn, prompt in zip(builder.record.turns, builder.keep_prompts()):
        ids = builder.turn_ids[turn.message_index]
        a, b = len(prompt), len(prompt) + len(ids)
        if seq[:b] == prompt + ids:
            spans.append((turn.ordinal, a, b))
        else:
            break
    return spans


def _explain_turn_region(builder: PromptBuilder, raw: list[int], rendered: list[int], k: int,
                         spans: Sequence[tuple[int, int, int]], stripped_cause: str):
    """When token k of ``raw`` lies in a generated turn's sampled ids: (turn, consumed, expected, cause, why)
    comparing those ids with what ``rendered`` holds in their place; else None."""
    # The turn whose sampled ids hold token k, or start right after it (k in the generation prompt's tail,
    # e.g. the "<think>\n" a template puts in the prompt but drops from the turn in history).
    inside = next(((t, a, b) for t, a, b in spans if a - _GEN_TAIL <= k < b), None)
    if inside is None:
        return None
    decode = builder.encoder.tokens.decode
    ordinal, a, b = inside
    a = min(a, k)
    earlier = builder.record.turns[ordinal]
    width = min(6, len(raw) - b)
    j = next((j for j in range(k, len(rendered) - width + 1) if width and rendered[j:j + width] == raw[b:b + width]),
             None)
    end = j if j is not None else len(rendered)
    consumed = end - a
    expected = len(earlier.logprobs) if earlier.logprobs is not None else b - a
    sampled, shown = decode(raw[a:b]), decode(rendered[a:end])
    message = builder.record.messages[earlier.message_index]
    reasoning = reasoning_of(message) or _inline_reasoning(sampled)
    if sampled == shown:
        return (ordinal, consumed, expected, "retokenized-boundary",
                f"turn #{ordinal}'s text is the same, its ids differ")
    if reasoning and squash(reasoning) in squash(sampled) and squash(reasoning) not in squash(shown):
        return (ordinal, consumed, expected, stripped_cause,
                f"turn #{ordinal} appears without its reasoning {reasoning[:60]!r}")
    if tool_call_texts(message):
        return (ordinal, consumed, expected, "tool-arguments",
                f"turn #{ordinal}'s tool call is rendered differently from what was sampled")
    return (ordinal, consumed, expected, "turn-text-differs",
            f"the template renders turn #{ordinal} differently from what was sampled")


def _region_cause(builder: PromptBuilder, actual: list[int], ours: list[int], k: int) -> tuple[str, str | None]:
    """Cause of a difference at token k outside any sampled turn: inside a tool call, or elsewhere."""
    head = builder.encoder.tokens.decode(actual[:k])
    for j, message in enumerate(builder.dicts):
        if message.get("role") != "assistant":
            continue
        for name in tool_call_texts(message):
            pos = head.rfind(name)
            if pos >= 0 and len(head) - pos < 400:
                return "tool-arguments", f"the difference is inside message {j}'s tool call {name!r}"
    return "template-differs", None


# ---------------------------------------------------------------------------------------- checks
def _expected_completions(builder: PromptBuilder, notes: list[str]) -> dict[int, str]:
    """The template's own text of each generated turn (rendered from the record's text), by message index."""
    rec = builder.record
    checked = {t.message_index for t in rec.turns if not t.text_from_ids}
    if not checked:
        return {}
    messages = []
    for i, m in enumerate(rec.messages):
        m = dict(m)
        if m.get("role") == "assistant":
            m["loss"] = i in checked
        messages.append(m)
    try:
        samples = builder.encoder.encode(messages, rec.tools, builder.kwargs, reasoning_policy="drop",
                                         history_reasoning="template")
    except ParityError as exc:
        notes.append(f"text check skipped: the core cannot derive the turns' template text ({exc})")
        return {}
    return {t.message_index: t.completion_text for s in samples for t in s.turns}


def _strip_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    for stop in sorted(stops, key=len, reverse=True):
        if text.endswith(stop):
            return text[: -len(stop)], True
    return text, False


def _check_counts(builder: PromptBuilder, turn: GeneratedTurn, expected_text: str | None) -> None:
    ids = list(turn.token_ids)
    decode = builder.encoder.tokens.decode
    where = f"assistant turn #{turn.ordinal} (message {turn.message_index})"
    if turn.logprob_token_ids is not None and turn.logprobs is not None and len(turn.logprob_token_ids) == len(
            turn.logprobs) and list(turn.logprob_token_ids) != ids:
        lp_ids = list(turn.logprob_token_ids)
        k = first_token_difference(ids, lp_ids)
        edit = single_edit(ids, lp_ids)
        cause = edit[0] if edit else ("retokenized-boundary" if decode(ids) == decode(lp_ids) else None)
        raise alignment_error(
            rule="rollout-logprob-ids", turn=turn.ordinal, message_index=turn.message_index, position=k,
            consumed=len(ids), expected=len(lp_ids),
            headline=f"rollout alignment failure for {where}: token_ids are not the ids the logprob entries are for",
            context=token_context(decode, ids, lp_ids, k, ("token_ids", "logprob ids")), cause=cause)
    if turn.logprobs is None or len(turn.logprobs) == len(ids):
        return
    cause, because, context, k = None, None, None, None
    if expected_text is not None:
        want = builder.encoder.tokens.encode(expected_text)
        got_text = decode(ids)
        if got_text == expected_text or _strip_stop(got_text, builder.encoder.stop_strings)[0] == _strip_stop(
                expected_text, builder.encoder.stop_strings)[0]:
            cause = "retokenized-boundary"
            because = (f"the {len(ids)} ids decode to exactly the turn's text, which the engine sampled as "
                       f"{len(turn.logprobs)} tokens")
            k = first_token_difference(ids, want)
            context = token_context(decode, ids, want, k, ("token_ids", "canonical"))
        else:
            edit = single_edit(ids, want) if len(want) == len(turn.logprobs) else None
            if edit:
                cause, k = edit
                because = f"at position {k} of the turn (expected {decode(want[k:k + 1])!r})"
                context = token_context(decode, ids, want, k, ("token_ids", "turn text"))
    if cause is None and len(ids) == len(turn.logprobs) - 1:
        cause, because = "dropped-token", "the turn has one logprob more than ids"
    elif cause is None and len(ids) == len(turn.logprobs) + 1:
        cause, because = "inserted-token", "the turn has one id more than logprobs"
    raise alignment_error(
        rule="rollout-logprob-count", turn=turn.ordinal, message_index=turn.message_index, position=k,
        consumed=len(ids), expected=len(turn.logprobs),
        headline=f"rollout alignment failure for {where}: {len(ids)} token_ids but {len(turn.logprobs)} logprobs",
        context=context, cause=cause, because=because)


def _check_text(builder: PromptBuilder, turn: GeneratedTurn, expected: str, notes: list[str]) -> bool | None:
    """The sampled ids must be the turn's text (whitespace the template normalises aside). Returns whether
    the ids are the canonical tokenization of that text."""
    encoder = builder.encoder
    decode, stops = encoder.tokens.decode, encoder.stop_strings
    ids = list(turn.token_ids)
    got = decode(ids)
    got_body, ended = _strip_stop(got, stops)
    exp_body, _ = _strip_stop(expected, stops)
    message = builder.record.messages[turn.message_index]
    want = encoder.tokens.encode(expected)
    if ids == want:
        return True
    truncated = (f"turn #{turn.ordinal} (message {turn.message_index}): the sampled ids end without a stop "
                 f"string (finish_reason={turn.finish_reason!r}); they are a prefix of the turn's text")
    if not ended and want[:len(ids)] == ids:
        notes.append(truncated)
        return True
    if got == expected or got_body == exp_body:
        canonical = encoder.tokens.encode(got) == ids
        if not canonical:
            notes.append(f"turn #{turn.ordinal} (message {turn.message_index}): the sampled ids are not the "
                         "tokenizer's own tokenization of their text (kept verbatim)")
        return canonical
    if ended and squash(got_body) == squash(exp_body):
        notes.append(f"turn #{turn.ordinal} (message {turn.message_index}): the template renders the turn with "
                     "different whitespace than was sampled (sampled ids kept)")
        return None
    if not ended and squash(exp_body).startswith(squash(got_body)):
        notes.append(truncated)
        return None
    reasoning = reasoning_of(message)
    if reasoning and squash(reasoning) not in squash(exp_body) and is_insertion(got_body, exp_body):
        # The template (and the family) cannot render this turn's reasoning; the ids hold it.
        notes.append(f"turn #{turn.ordinal} (message {turn.message_index}): the template does not render the "
                     "turn's reasoning; the sampled ids (which hold it) are kept")
        return None
    k = first_token_difference(ids, want)
    cause, because = None, None
    edit = single_edit(ids, want)
    if _thinking_flip_matches(builder, turn, got_body):
        cause = "thinking-switch"
        because = f"with {_flip_thinking(builder)} the template renders the turn as sampled"
    elif edit:
        cause, k = edit
        because = f"at position {k} of the turn (expected {decode(want[k:k + 1])!r})"
    elif not reasoning and is_insertion(got_body, exp_body):
        cause = "reasoning-missing"
        because = f"the ids hold {len(ids) - len(want)} more tokens than the message's text renders to"
    elif tool_call_texts(message) and any(n in decode(ids[:k]) for n in tool_call_texts(message)):
        cause = "tool-arguments"
    else:
        cause = "turn-text-differs"
    raise alignment_error(
        rule="rollout-turn-text", turn=turn.ordinal, message_index=turn.message_index, position=k,
        consumed=len(ids), expected=len(turn.logprobs) if turn.logprobs is not None else len(ids),
        headline=f"rollout alignment failure for assistant turn #{turn.ordinal} (message {turn.message_index}): "
                 f"the sampled ids are not the turn's text ({len(want)} tokens when rendered by the template)",
        context=token_context(decode, ids, want, k, ("sampled ids", "turn text")), cause=cause, because=because)


def _thinking_flip_matches(builder: PromptBuilder, turn: GeneratedTurn, got_body: str) -> bool:
    kwargs = _flip_thinking(builder)
    if kwargs is None:
        return False
    other = _builder(builder.encoder, builder.record, kwargs)
    completions = _expected_completions(other, [])
    text = completions.get(turn.message_index)
    if text is None:
        return False
    body, _ = _strip_stop(text, builder.encoder.stop_strings)
    return squash(body) == squash(got_body)


# ---------------------------------------------------------------------------------------- verify
@dataclass
class _Plain:
    input_ids: list[int]
    mask: list[int]
    logprobs: list[float] | None
    spans: list[tuple[int, int, int]] | None
    """(message_index, label_start, label_end) when the sample says where its turns are."""


def _as_sample(sample: Any) -> _Plain:
    if isinstance(sample, Sample) and any(t.ordinal is not None for t in sample.turns):
        spans = [(t.message_index, t.label_start, t.label_end) for t in sample.turns if t.trained]
        return _Plain(list(sample.input_ids), sample.loss_mask, sample.logprobs, spans)
    get = sample.get if isinstance(sample, Mapping) else lambda k, d=None: getattr(sample, k, d)
    ids = list(get("input_ids"))
    mask = get("loss_mask")
    if mask is None:
        labels = get("labels")
        if labels is None:
            raise ValueError("a sample needs labels or loss_mask")
        mask = [0 if label == IGNORE_INDEX else 1 for label in labels]
    logprobs = get("logprobs")
    return _Plain(ids, [1 if m else 0 for m in mask], list(logprobs) if logprobs is not None else None, None)


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for t, m in enumerate([*mask, 0]):
        if m and start is None:
            start = t
        elif not m and start is not None:
            runs.append((start, t))
            start = None
    return runs


def _verify(builder: PromptBuilder, prompts: list[list[int]], samples: Sequence[Any], policy: str) -> None:
    rec = builder.record
    decode = builder.encoder.tokens.decode
    plain = [s if isinstance(s, _Plain) else _as_sample(s) for s in samples]
    located: list[tuple[int, int, int]] = []  # (sample, start, end) per trained turn in order
    for number, sample in enumerate(plain):
        if sample.spans is not None:
            located.extend((number, a, b) for _, a, b in sample.spans)
        else:
            located.extend((number, a, b) for a, b in _runs(sample.mask))
    trained = [t for t in rec.turns if t.train]
    if len(located) != len(trained):
        raise alignment_error(
            rule="rollout-turn-count", turn=None, message_index=None,
            headline=f"the samples hold {len(located)} labelled runs but the rollout has {len(trained)} trained "
                     "generated turns: labels must cover exactly the sampled ids (no header, no glue, no "
                     "non-generated assistant turn)", cause=None)
    offsets = [0] * len(plain)
    earlier: dict[int, list[tuple[GeneratedTurn, int, int]]] = {}
    for turn, (number, a, b) in zip(trained, located):
        sample = plain[number]
        prompt = prompts[turn.ordinal]
        ids = list(turn.token_ids)
        where = f"assistant turn #{turn.ordinal} (message {turn.message_index}) in sample {number}"
        if sample.input_ids[a:b] != ids:
            span = sample.input_ids[a:b]
            k = first_token_difference(span, ids)
            cause, because = _turn_tokens_cause(builder, turn, span, ids)
            raise alignment_error(
                rule="rollout-turn-tokens", turn=turn.ordinal, message_index=turn.message_index, position=a + k,
                consumed=len(span), expected=len(turn.logprobs) if turn.logprobs is not None else len(ids),
                headline=f"rollout alignment failure for {where}: its labelled tokens are not the sampled ids",
                context=token_context(decode, span, ids, k, ("sample", "sampled ids")), cause=cause, because=because)
        if sample.input_ids[:a] != prompt:
            raise _prefix_error(builder, sample.input_ids[:a], prompt, earlier.get(number, []), turn, policy,
                                rule="rollout-prefix", exact=True,
                                what=f"the engine's prompt for turn #{turn.ordinal} under engine_history="
                                     f"'{policy}' is not the token prefix of sample {number} before the turn")
        if sample.logprobs is not None and turn.logprobs is not None:
            got = sample.logprobs[offsets[number]:offsets[number] + (b - a)]
            if len(got) != len(turn.logprobs) or any(abs(x - y) > 1e-6 for x, y in zip(got, turn.logprobs)):
                raise alignment_error(
                    rule="rollout-logprobs", turn=turn.ordinal, message_index=turn.message_index,
                    consumed=len(got), expected=len(turn.logprobs),
                    headline=f"rollout alignment failure for {where}: the sample's logprobs for the turn are not "
                             "the rollout's", cause=None)
        offsets[number] += b - a
        earlier.setdefault(number, []).append((turn, a, b))
    for number, sample in enumerate(plain):
        if sample.logprobs is not None and len(sample.logprobs) != sum(sample.mask):
            raise alignment_error(
                rule="rollout-logprobs", turn=None, message_index=None, consumed=sum(sample.mask),
                expected=len(sample.logprobs),
                headline=f"sample {number}: {len(sample.logprobs)} logprobs for {sum(sample.mask)} labelled "
                         "positions", cause=None)


def _turn_tokens_cause(builder: PromptBuilder, turn: GeneratedTurn, span: list[int], ids: list[int]):
    decode = builder.encoder.tokens.decode
    if decode(span) == decode(ids):
        return "retokenized-boundary", "the labelled tokens decode to the sampled text"
    edit = single_edit(span, ids)
    if edit:
        return edit[0], f"at position {edit[1]} of the turn"
    message = builder.record.messages[turn.message_index]
    reasoning = reasoning_of(message) or _inline_reasoning(decode(ids))
    if reasoning and squash(reasoning) in squash(decode(ids)) and squash(reasoning) not in squash(decode(span)):
        return ("history-reasoning-stripped",
                f"the sample's rendering of this turn lacks its reasoning {reasoning[:60]!r}")
    if tool_call_texts(message):
        return "tool-arguments", None
    return "turn-text-differs", None


def _inline_reasoning(text: str) -> str | None:
    if "</think>" in text:
        head = text.split("</think>")[0]
        return head.split("<think>")[-1].strip() or None
    return None


def _prefix_error(builder: PromptBuilder, actual: list[int], prompt: list[int], spans, turn: GeneratedTurn,
                  policy: str, *, rule: str, what: str, exact: bool):
    """A turn's engine prompt is not ``actual`` (``exact``) or does not extend it: say where, and why."""
    decode = builder.encoder.tokens.decode
    k = first_token_difference(actual, prompt)
    spans = [(s.turn, s.label_start, s.label_end) if isinstance(s, RolloutTurnSpan) else (s[0].ordinal, s[1], s[2])
             for s in spans]
    raw = actual
    keep = builder.keep_prompts()[turn.ordinal]
    if keep[: len(actual)] == actual:
        raw = keep  # the raw history continues past the sample: lets the turn's end be matched up
    found = _explain_turn_region(builder, raw, prompt, k, spans, "history-reasoning-stripped")
    if found is not None:
        ordinal, consumed, expected, cause, because = found
        blamed = builder.record.turns[ordinal]
        headline = (f"rollout alignment failure for assistant turn #{ordinal} (message {blamed.message_index}): "
                    f"{what}; the engine's prompt for turn #{turn.ordinal} holds {consumed} tokens where the "
                    f"sample holds turn #{ordinal}'s sampled tokens")
    else:
        blamed, consumed, expected = turn, None, None
        flipped = _flipped_prompt(builder, turn, policy)
        if flipped is not None and (flipped == actual if exact else flipped[: len(actual)] == actual):
            cause, because = "thinking-switch", f"with {_flip_thinking(builder)} the prompts agree"
        else:
            cause, because = _region_cause(builder, actual, prompt, k)
        headline = (f"rollout alignment failure for assistant turn #{turn.ordinal} (message {turn.message_index}): "
                    f"{what}")
    return alignment_error(rule=rule, turn=blamed.ordinal, message_index=blamed.message_index, position=k,
                           consumed=consumed, expected=expected, headline=headline,
                           context=token_context(decode, actual, prompt, k, ("sample", "engine prompt")),
                           cause=cause, because=because)
