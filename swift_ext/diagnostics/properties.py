"""The template properties the doctor reports, each judged over the battery under one thinking mode.

A property describes the template's own rendering (the generation prompt as a
prefix, history stability, reasoning, wrappers, stop strings, tool arguments,
BOS) or, for ``encode-verified``, what ``swift_ext.encode`` + ``verify`` made of
the battery. A failing rendering property is a trap for pipelines that render
once or assume prefixes; swift_ext splices and splits around it. Each failure
keeps the smallest failing conversation as its example (the battery is sorted
smallest first).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core import Encoder
from ..errors import TemplateRenderError
from ..families import Family
from ..text import common_prefix_len
from ..types import Sample
from .battery import CORE_FEATURES, Case, Mode
from .report import (
    FAIL,
    FAILED,
    NA,
    PASS,
    UNSUPPORTED,
    VERIFIED,
    VERIFIED_WITH_DROP,
    CaseOutcome,
    Example,
    PropertyResult,
)
from .textdiff import around, rewrite

TITLES = {
    "generation-prompt-prefix": "generation prompt is a prefix of the turn's rendering",
    "history-stable": "history stable (earlier turns not rewritten)",
    "reasoning-past": "reasoning rendered on past turns",
    "reasoning-last": "reasoning rendered on the last turn",
    "thought-wrapper": "empty-think / thought wrapper placement",
    "stop-string": "stop string detected",
    "tool-arguments": "tool-argument form accepted",
    "bos": "BOS not doubled",
    "encode-verified": "swift_ext.encode yields verified samples",
}


def is_empty_turn(message: dict[str, Any]) -> bool:
    """An assistant turn with nothing to say: no content, tool call or reasoning."""
    return not (message.get("content") or message.get("tool_calls") or message.get("reasoning_content"))


# ------------------------------------------------------------------ rendering
class CaseRenders:
    """The renders of one case under one mode (a ``Conversation``); ``None`` where the template raises.

    The case's messages reach the template as ``encode`` hands them over; ``dicts`` renders another form of them
    (the tool-argument probe)."""

    def __init__(self, encoder: Encoder, case: Case, mode: Mode) -> None:
        self.encoder, self.case, self.mode = encoder, case, mode
        self.conversation = encoder.conversation(case.messages, case.tools, mode.kwargs, require_assistant=False)
        self.dicts = self.conversation.dicts

    def render(self, upto: int, generation_prompt: bool = False, dicts: list | None = None) -> str | None:
        conversation = self.conversation
        for j, message in enumerate(dicts or ()):
            if message is not conversation.dicts[j]:
                conversation = conversation.with_message(j, message)
        try:
            return conversation.render(upto, add_generation_prompt=generation_prompt)
        except TemplateRenderError:
            return None

    @property
    def full(self) -> str | None:
        return self.render(len(self.dicts))

    def turn_texts(self, i: int) -> tuple[str, str, str] | None:
        """(history, generation prompt, turn rendered last) for assistant message ``i``."""
        texts = (self.render(i), self.render(i, True), self.render(i + 1))
        return None if any(t is None for t in texts) else texts  # type: ignore[return-value]

    def snap(self, text: str, at: int) -> int:
        """Move a difference position back to the start of the token it falls in, so a
        shown difference begins at a whole token (``<think>``, not ``think>``)."""
        return max((end for end in [0, *self.encoder.tokens.boundaries(text)] if end <= at), default=0)

    def example(self, turn: int | None = None, **fields: str) -> Example:
        return Example(self.case.name, self.mode.name, dict(self.mode.kwargs), self.case.messages, turn, **fields)


@dataclass
class Finding:
    ok: bool
    example: Example | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModeRun:
    """Everything computed for one thinking mode."""

    mode: Mode
    renders: list[CaseRenders]
    outcomes: list[CaseOutcome]
    samples: dict[str, list[Sample]]

    def case(self, name: str) -> CaseRenders | None:
        return next((r for r in self.renders if r.case.name == name), None)


def _judge(prop_id: str, mode: Mode, findings: Iterable[Finding], passed: str,
           failed: Callable[[dict[str, Any]], str]) -> PropertyResult:
    """Pass when every finding holds; else fail with the first (smallest) failing example."""
    findings = list(findings)
    bad = [f for f in findings if not f.ok]
    if not findings:
        return PropertyResult(prop_id, TITLES[prop_id], mode.name, NA, "no conversation of the battery applies")
    if not bad:
        return PropertyResult(prop_id, TITLES[prop_id], mode.name, PASS, passed)
    first = bad[0]
    data = {**first.data, "failing_cases": sorted({f.example.case for f in bad if f.example})}
    return PropertyResult(prop_id, TITLES[prop_id], mode.name, FAIL, failed(first.data), first.example, data)


# ------------------------------------------------------------------ properties
def _prefix_findings(r: CaseRenders) -> Iterator[Finding]:
    for i in r.case.assistant_indices():
        texts = r.turn_texts(i)
        if texts is None:
            continue
        history, prompt, turn = texts
        if turn.startswith(prompt):
            yield Finding(True)
        elif not (turn.startswith(history) and prompt.startswith(history)):
            at = r.snap(prompt, common_prefix_len(prompt, turn))
            example = r.example(i, expected_label="generation prompt", expected=around(prompt, at),
                                actual_label="the turn's own rendering", actual=around(turn, at))
            yield Finding(False, example, {"turn": i, "cause": "history", "missing": "", "found": ""})
        else:
            gen, body = prompt[len(history):], turn[len(history):]
            at = r.snap(gen, common_prefix_len(gen, body))
            example = r.example(i, expected_label="generation prompt (after the history)", expected=gen,
                                actual_label="the turn's own rendering", actual=body[: len(gen) + 40])
            yield Finding(False, example, {"turn": i, "cause": "wrapper", "missing": gen[at:],
                                           "found": body[at:len(gen)]})


def _prefix_summary(data: dict[str, Any]) -> str:
    if data["cause"] == "history":
        return (f"rendering turn {data['turn']} last also changes the history before it, so its generation prompt "
                "is not a prefix (swift_ext locates the turn and splices it after the real generation prompt)")
    return (f"the generation prompt holds {data['missing']!r} where the turn's rendering has {data['found']!r} "
            "(swift_ext splices: the completion goes after the real generation prompt)")


def check_prefix(run: ModeRun) -> PropertyResult:
    findings = (f for r in run.renders for f in _prefix_findings(r))
    return _judge("generation-prompt-prefix", run.mode, findings, "the generation prompt starts every turn's rendering",
                  _prefix_summary)


def _history_findings(r: CaseRenders) -> Iterator[Finding]:
    full = r.full
    for i in r.case.assistant_indices():
        turn = r.render(i + 1)
        if i + 1 == len(r.dicts) or turn is None or full is None:
            continue
        if full.startswith(turn):
            yield Finding(True)
            continue
        at = r.snap(turn, common_prefix_len(turn, full))
        removed, inserted = rewrite(turn[at:], full[at:], r.encoder.tokens.boundaries(turn[at:]))
        example = r.example(i, expected_label=f"messages[:{i + 1}] rendered (turn {i} last)", expected=around(turn, at),
                            actual_label="the whole conversation rendered", actual=around(full, at))
        yield Finding(False, example, {"turn": i, "removed": removed, "inserted": inserted})


def check_history(run: ModeRun) -> PropertyResult:
    findings = (f for r in run.renders for f in _history_findings(r))
    return _judge("history-stable", run.mode, findings, "rendering later turns never rewrites earlier ones",
                  lambda d: f"rendering later turns rewrites turn {d['turn']}: removes {d['removed']!r}, inserts "
                  f"{d['inserted']!r} (swift_ext starts a new sample there)")


def _reasoning_of(message: dict[str, Any]) -> str | None:
    return message.get("reasoning_content") if message["role"] == "assistant" else None


def _past_reasoning_findings(r: CaseRenders) -> Iterator[Finding]:
    full, last = r.full, r.case.assistant_indices()[-1]
    for j in r.case.assistant_indices():
        reasoning = _reasoning_of(r.case.messages[j])
        if j == last or not reasoning or full is None:
            continue
        as_last = r.render(j + 1)
        anchor = full.find(r.case.messages[j]["content"] or "\0")
        example = r.example(j, expected_label=f"reasoning of turn {j}", expected=reasoning,
                            actual_label="the whole conversation around that turn", actual=around(full, max(anchor, 0)))
        when_last = bool(as_last and reasoning in as_last)
        yield Finding(reasoning in full, example, {"turn": j, "rendered_when_last": when_last})


def _past_reasoning_summary(data: dict[str, Any]) -> str:
    if data["rendered_when_last"]:
        return f"turn {data['turn']}'s reasoning is rendered while it is last and gone once a later turn is rendered"
    return "the template never renders a turn's reasoning in the history"


def check_past_reasoning(run: ModeRun) -> PropertyResult:
    findings = (f for r in run.renders for f in _past_reasoning_findings(r))
    return _judge("reasoning-past", run.mode, findings, "a past turn's reasoning stays in the history",
                  _past_reasoning_summary)


def _last_reasoning_findings(r: CaseRenders) -> Iterator[Finding]:
    i = r.case.assistant_indices()[-1]
    reasoning = _reasoning_of(r.case.messages[i])
    texts = r.turn_texts(i) if reasoning else None
    if texts is None:
        return
    history, _, turn = texts
    body = turn[len(history):] if turn.startswith(history) else turn
    example = r.example(i, expected_label=f"reasoning of turn {i}", expected=reasoning,
                        actual_label="the turn's own rendering", actual=body)
    yield Finding(reasoning in body, example, {"turn": i})


def check_last_reasoning(run: ModeRun, family: Family) -> PropertyResult:
    findings = (f for r in run.renders for f in _last_reasoning_findings(r))
    fallback = (f"the family writes it as {family.reasoning_format!r}" if family.reasoning_format
                else "encode raises reasoning-dropped unless --reasoning-policy drop")
    return _judge("reasoning-last", run.mode, findings, "the last turn's reasoning is rendered",
                  lambda d: f"the template does not render the last turn's reasoning; {fallback}")


def _turn_head(text: str | None, start: int, content: str) -> str | None:
    """Text between the start of a turn and its content (the role header plus any wrapper)."""
    if text is None:
        return None
    end = text.find(content, start)
    return text[start:end] if end >= 0 else None


def check_wrapper(run: ModeRun) -> PropertyResult:
    """Where the empty-think block / thought wrapper of a turn without reasoning goes.

    Compares the generation prompt's tail, the last turn's head and a past turn's
    head (all after the common role header): a wrapper must be in all three or
    only where the model writes it itself (last and past turns, not the prompt).
    """
    r = run.case("multi")
    title = TITLES["thought-wrapper"]
    heads = _wrapper_heads(r) if r is not None else None
    if heads is None:
        return PropertyResult("thought-wrapper", title, run.mode.name, NA, "the plain multi-turn case does not render")
    shared = len(_common_prefix(heads))
    base = min(r.snap(head, shared) for head in heads.values())
    tails = {name: head[base:] for name, head in heads.items()}
    wrapper = max(tails.values(), key=len)
    where = [name for name, tail in tails.items() if wrapper and wrapper in tail]
    data = {"wrapper": wrapper, "locations": where, **{k.replace(" ", "_"): v for k, v in tails.items()}}
    if not wrapper:
        summary = "no wrapper: turns start with the role header alone"
        return PropertyResult("thought-wrapper", title, run.mode.name, PASS, summary, data=data)
    ok = tails["last turn"] == tails["past turns"] and tails["last turn"].startswith(tails["generation prompt"])
    summary = f"{wrapper!r} is in: {', '.join(where)}"
    if ok:
        return PropertyResult("thought-wrapper", title, run.mode.name, PASS, summary, data=data)
    summary += f"; missing from: {', '.join(name for name in tails if name not in where)}"
    example = r.example(None, expected_label="heads of the generation prompt ┃ last turn ┃ past turns",
                        expected=" ┃ ".join(heads.values()), actual_label="wrapper", actual=wrapper)
    return PropertyResult("thought-wrapper", title, run.mode.name, FAIL, summary, example, data)


def _wrapper_heads(r: CaseRenders) -> dict[str, str] | None:
    first, last = r.case.assistant_indices()[0], r.case.assistant_indices()[-1]
    texts, full, past_history = r.turn_texts(last), r.full, r.render(first)
    if texts is None or full is None or past_history is None or not full.startswith(past_history):
        return None
    history, prompt, turn = texts
    if not (prompt.startswith(history) and turn.startswith(history)):
        return None
    heads = {
        "generation prompt": prompt[len(history):],
        "last turn": _turn_head(turn, len(history), r.case.messages[last]["content"]),
        "past turns": _turn_head(full, len(past_history), r.case.messages[first]["content"]),
    }
    return None if any(h is None for h in heads.values()) else heads  # type: ignore[return-value]


def _common_prefix(heads: dict[str, str]) -> str:
    values = list(heads.values())
    n = min(common_prefix_len(values[0], v) for v in values)
    return values[0][:n]


def _stop_findings(r: CaseRenders, stops: tuple[str, ...], appended: bool) -> Iterator[Finding]:
    for i in r.case.assistant_indices():
        texts = r.turn_texts(i)
        if texts is None:
            continue
        history, prompt, turn = texts
        if is_empty_turn(r.case.messages[i]):
            continue  # judged by the empty-content cases' outcomes
        body = turn[len(prompt):] if turn.startswith(prompt) else turn[len(history):]
        found = sorted((body.find(s), s) for s in stops if s in body)
        if found or appended:
            yield Finding(True, data={"stop": found[0][1] if found else None})
            continue
        example = r.example(i, expected_label="one of the stop strings", expected=", ".join(stops),
                            actual_label="the turn's rendering", actual=body[-80:])
        yield Finding(False, example, {"turn": i})


def check_stop(run: ModeRun, encoder: Encoder) -> PropertyResult:
    family = encoder.family
    appended = bool(family.stop_after_turn or family.stop_after_tool_calls)
    findings = [f for r in run.renders for f in _stop_findings(r, encoder.stop_strings, appended)]
    seen = Counter(f.data.get("stop") for f in findings if f.ok)
    rendered = [s for s, _ in seen.most_common() if s]
    passed = f"turns end with {', '.join(map(repr, rendered)) or 'no rendered stop string'}"
    if None in seen:
        passed += (f"; where the template renders none, the family appends "
                   f"{family.stop_after_turn!r} / {family.stop_after_tool_calls!r} (the model generates it)")
    result = _judge("stop-string", run.mode, findings, passed,
                    lambda d: f"turn {d['turn']}'s rendering holds none of the stop strings: pass stop_strings=[...]")
    result.data.update(stop_strings=list(encoder.stop_strings), rendered=rendered)
    return result


ARGUMENT_FORMS = ("dict", "string")


def _with_arguments(dicts: list[dict[str, Any]], form: str) -> list[dict[str, Any]]:
    out = copy.deepcopy(dicts)
    for message in out:
        for call in message.get("tool_calls", ()):
            arguments = call["function"]["arguments"]
            value = json.loads(arguments) if isinstance(arguments, str) else arguments
            call["function"]["arguments"] = value if form == "dict" else json.dumps(value)
    return out


def _argument_verdict(text: str | None) -> str:
    """How a rendering shows the battery's ``{"city": "Paris"}`` arguments."""
    if text is None:
        return "rejected (the template raises)"
    if '\\"city\\"' in text:
        return "double-encoded"
    if "{'city'" in text:
        return "rendered as a Python dict"
    return "accepted" if "Paris" in text else "dropped"


def check_tool_arguments(run: ModeRun, family: Family) -> PropertyResult:
    """Which argument forms the raw template renders faithfully, and whether swift_ext passes one of them."""
    r, title = run.case("tool-dict"), TITLES["tool-arguments"]
    renders = {form: r.render(len(r.dicts), dicts=_with_arguments(r.dicts, form)) for form in ARGUMENT_FORMS} if r \
        else {}
    if not renders or not any(t and "get_weather" in t for t in renders.values()):
        return PropertyResult("tool-arguments", title, run.mode.name, NA, "the template renders no tool calls")
    verdicts = {form: _argument_verdict(text) for form, text in renders.items()}
    passed_as = {"dict": ["dict"], "json": ["string"]}.get(family.tool_arguments, list(ARGUMENT_FORMS))
    bad = [form for form in passed_as if verdicts[form] != "accepted"]
    how = {"dict": "always as a dict", "json": "always as a JSON string"}.get(family.tool_arguments, "as given")
    summary = f"dict: {verdicts['dict']}; JSON string: {verdicts['string']}; swift_ext passes arguments {how}"
    data = {"verdicts": verdicts, "passed_as": family.tool_arguments}
    if not bad:
        return PropertyResult("tool-arguments", title, run.mode.name, PASS, summary, data=data)
    good = "dict" if verdicts["dict"] == "accepted" else "json"
    text = renders[bad[0]]
    example = r.example(None, expected_label=f"arguments given as a {bad[0]}", expected='{"city": "Paris"}',
                        actual_label="rendered",
                        actual=around(text, max(text.find("get_weather"), 0)) if text else verdicts[bad[0]])
    summary += f"; the {family.name!r} family description should say tool_arguments = {good!r}"
    return PropertyResult("tool-arguments", title, run.mode.name, FAIL, summary, example, data)


def check_bos(run: ModeRun, encoder: Encoder) -> PropertyResult:
    tokenizer, title = encoder.tokenizer, TITLES["bos"]
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    r, samples = run.case("single"), run.samples.get("single")
    prompt = r.render(1, True) if r else None
    if not bos or bos_id is None or prompt is None:
        return PropertyResult("bos", title, run.mode.name, NA, "the tokenizer has no BOS token")
    writes = prompt.startswith(str(bos))
    adds = tokenizer("x", add_special_tokens=True)["input_ids"][:1] == [bos_id]
    doubled = bool(samples) and samples[0].input_ids[:2] == [bos_id, bos_id]
    naive = "would double it" if writes and adds else "would not double it"
    summary = (f"template writes {bos!r}: {'yes' if writes else 'no'}; tokenizer(text) with special tokens {naive}; "
               f"swift_ext samples start with {'two' if doubled else 'at most one'}")
    data = {"template_writes_bos": writes, "tokenizer_adds_bos": adds, "doubled_in_samples": doubled}
    example = r.example(0, expected_label="one BOS", expected=str(bos), actual_label="sample starts",
                        actual=encoder.tokens.decode(samples[0].input_ids[:4])) if doubled else None
    return PropertyResult("bos", title, run.mode.name, FAIL if doubled else PASS, summary, example, data)


def check_encode(run: ModeRun) -> PropertyResult:
    outcomes, title = run.outcomes, TITLES["encode-verified"]
    counts = Counter(o.status for o in outcomes)
    failed = [o for o in outcomes if o.status == FAILED]
    core_bad = [o for o in outcomes if o.status != VERIFIED and _is_core(o)]
    summary = ", ".join(f"{counts[s]} {s}" for s in (VERIFIED, VERIFIED_WITH_DROP, UNSUPPORTED, FAILED) if counts[s])
    data = {"counts": dict(counts)}
    if not failed and not core_bad:
        return PropertyResult("encode-verified", title, run.mode.name, PASS, summary, data=data)
    worst = (failed or core_bad)[0]
    r = run.case(worst.case)
    example = r.example(None, actual_label=f"encode + verify raised [{worst.rule}]", actual=worst.detail) if r else None
    return PropertyResult("encode-verified", title, run.mode.name, FAIL, summary, example, data)


def _is_core(outcome: CaseOutcome) -> bool:
    return bool(outcome.features) and set(outcome.features) <= CORE_FEATURES
