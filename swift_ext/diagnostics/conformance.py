"""The doctor: run the battery through the template and through ``swift_ext.encode``, then judge.

Properties (``properties.py``) describe the template. *Outcomes* say what
``encode`` + ``verify`` made of each battery conversation, and decide the exit
code:

- a conversation is *unsupported* when the template itself refuses or drops
  what it holds (it raises, or it renders no reasoning / tool call / content /
  end of an empty turn): inference cannot show the model those tokens either,
  and swift_ext says so with an explicit error instead of training on
  something else. Reasoning it cannot render is retried with
  ``reasoning_policy="drop"`` and reported as trainable that way;
- any other error (a verification failure, a stop string that never occurs,
  a crash) *fails* the conversation;
- the template is *trainable exactly* when, in every thinking mode, every
  plain-chat conversation (single and multi-turn, with and without a system
  prompt) verifies and no conversation of the battery fails.
"""

from __future__ import annotations

from typing import Any

from ..core import Encoder, encode, get_encoder
from ..errors import ParityError
from ..families import template_sha256
from ..types import EncodeStats, Sample
from ..verify import verify
from .battery import FEATURES, Case, Mode, build_battery, thinking_modes
from .properties import (
    TITLES,
    CaseRenders,
    ModeRun,
    check_bos,
    check_encode,
    check_history,
    check_last_reasoning,
    check_past_reasoning,
    check_prefix,
    check_stop,
    check_tool_arguments,
    check_wrapper,
    is_empty_turn,
)
from .report import (
    FAIL,
    FAILED,
    UNSUPPORTED,
    VERIFIED,
    VERIFIED_WITH_DROP,
    CaseOutcome,
    DoctorReport,
    FeatureSupport,
    PropertyResult,
)
from .source import ModelSource

LIMITATION_RULES = frozenset(
    {"template-render", "reasoning-dropped", "reasoning-thinking-off", "template-drops-tool-calls",
     "I2-content-not-rendered"}
)
"""Errors meaning "the template cannot show this conversation", not "swift_ext got it wrong"."""


def is_limitation(exc: ParityError, messages: list[dict[str, Any]]) -> bool:
    """Whether an encode error is the template's limitation rather than a failure.

    Besides ``LIMITATION_RULES``: a turn with no content, reasoning or tool call that
    the template renders without its stop string (Seed-OSS renders an empty answer
    as a bare header) cannot be shown to the model either.
    """
    if exc.rule in LIMITATION_RULES:
        return True
    i = exc.message_index
    if exc.rule != "I2-no-stop-string" or i is None or not 0 <= i < len(messages):
        return False
    return is_empty_turn(messages[i])


# ------------------------------------------------------------------ encoding
def encode_case(source: ModelSource, family: str | None, case: Case, mode: Mode) -> tuple[CaseOutcome, list[Sample]]:
    """Encode and verify one case; classify an error as a template limitation or a failure."""
    outcome = CaseOutcome(case.name, mode.name, VERIFIED, sorted(case.features))
    try:
        samples, stats = _encode_verified(source, family, case, mode, "error")
    except ParityError as exc:
        outcome.rule, outcome.detail = exc.rule, str(exc)
        if not is_limitation(exc, case.messages):
            outcome.status = FAILED
            return outcome, []
        outcome.status = UNSUPPORTED
        if exc.rule.startswith("reasoning"):
            return _retry_with_drop(source, family, case, mode, outcome)
        return outcome, []
    except Exception as exc:  # a crash inside the core is reported, never raised out of the doctor
        outcome.status, outcome.rule, outcome.detail = FAILED, f"crash-{type(exc).__name__}", str(exc)
        return outcome, []
    outcome.samples, outcome.spliced_turns = len(samples), stats.spliced_turns
    return outcome, samples


def _retry_with_drop(source: ModelSource, family: str | None, case: Case, mode: Mode,
                     outcome: CaseOutcome) -> tuple[CaseOutcome, list[Sample]]:
    """Reasoning the template cannot render: does the rest of the conversation train without it?"""
    outcome.reasoning_policy = "drop"
    try:
        samples, stats = _encode_verified(source, family, case, mode, "drop")
    except ParityError as exc:  # something else stops it too: report that, it is what blocks the case
        outcome.rule, outcome.detail = exc.rule, str(exc)
        outcome.status = UNSUPPORTED if is_limitation(exc, case.messages) else FAILED
        return outcome, []
    outcome.status, outcome.samples, outcome.spliced_turns = VERIFIED_WITH_DROP, len(samples), stats.spliced_turns
    return outcome, samples


def _encode_verified(source: ModelSource, family: str | None, case: Case, mode: Mode,
                     policy: str) -> tuple[list[Sample], EncodeStats]:
    stats = EncodeStats()
    options = {**source.encoder_kwargs(), "family": family}
    samples = encode(source.tokenizer, case.messages, case.tools, mode.kwargs, reasoning_policy=policy, stats=stats,
                     **options)
    verify(source.tokenizer, case.messages, samples, case.tools, mode.kwargs, **options)
    return samples, stats


# ------------------------------------------------------------------ report
REASONING_FEATURES = frozenset({"reasoning-last", "reasoning-past"})
TOOL_FEATURES = frozenset(f for f in FEATURES if f.startswith("tool") or f.endswith(("-calls", "-results")))


def _blamed(outcome: CaseOutcome, supported: set[str]) -> set[str]:
    """Features a failed case is held against: those its error is about, less those shown to work elsewhere."""
    features = set(outcome.features)
    if outcome.rule and outcome.rule.startswith("reasoning"):
        features &= REASONING_FEATURES
    elif outcome.rule == "template-drops-tool-calls":
        features &= TOOL_FEATURES
    return (features - supported) or features


def support_table(outcomes: list[CaseOutcome], mode: str) -> list[FeatureSupport]:
    """Per feature: ``yes`` when no failed case is held against it, ``no`` when every case using it is."""
    mine = [o for o in outcomes if o.mode == mode]
    supported = {f for o in mine if o.status == VERIFIED for f in o.features}
    blame = {o.case: _blamed(o, supported) for o in mine if o.status != VERIFIED}
    rows = []
    for feature, title in FEATURES.items():
        using = [o for o in mine if feature in o.features]
        against = [o for o in using if feature in blame.get(o.case, ())]
        if not using:
            continue
        status = "yes" if not against else "no" if len(against) == len(using) else "partly"
        rows.append(FeatureSupport(feature, title, mode, status, sorted({_rule_note(o) for o in against})))
    return rows


def _rule_note(outcome: CaseOutcome) -> str:
    if outcome.status == VERIFIED_WITH_DROP:
        return f"{outcome.rule} (trainable with --reasoning-policy drop)"
    return str(outcome.rule)


def run_mode(encoder: Encoder, source: ModelSource, family: str | None, mode: Mode, cases: list[Case]) -> ModeRun:
    outcomes, samples = [], {}
    for case in cases:
        outcome, case_samples = encode_case(source, family, case, mode)
        outcomes.append(outcome)
        samples[case.name] = case_samples
    return ModeRun(mode, [CaseRenders(encoder, case, mode) for case in cases], outcomes, samples)


def check_mode(run: ModeRun, encoder: Encoder) -> list[PropertyResult]:
    family = encoder.family
    return [
        check_prefix(run), check_history(run), check_past_reasoning(run), check_last_reasoning(run, family),
        check_wrapper(run), check_stop(run, encoder), check_tool_arguments(run, family), check_bos(run, encoder),
        check_encode(run),
    ]


def _family_match(encoder: Encoder, family: str | None) -> str:
    if family is not None:
        return "named"
    return {2: "sha256", 1: "rules"}.get(encoder.family.matches(encoder.template), "none")


def _verdict(properties: list[PropertyResult], support: list[FeatureSupport]) -> list[str]:
    """One line per thing the user should know: failures first, then what swift_ext handles, then limits."""
    lines = []
    for result in properties:
        if result.id == "encode-verified" and result.status == FAIL and result.example:
            lines.append(f"NOT trainable exactly ({result.mode}): {result.example.case}: {result.example.actual}")
    handled = {"generation-prompt-prefix": "swift_ext splices the generation prompt",
               "history-stable": "swift_ext starts a new sample where history is rewritten",
               "thought-wrapper": "swift_ext trains each turn after its real generation prompt"}
    for prop_id, how in handled.items():
        modes = [p.mode for p in properties if p.id == prop_id and p.status == FAIL]
        if modes:
            lines.append(f"{TITLES[prop_id]} fails ({', '.join(modes)}): {how}")
    for row in support:
        if row.status != "yes":
            lines.append(f"{row.title} ({row.mode}): {row.status} — {'; '.join(row.rules)}")
    return lines


def run_doctor(source: ModelSource, family: str | None = None) -> DoctorReport:
    """The conformance report for one tokenizer + chat template."""
    encoder = get_encoder(source.tokenizer, family=family, **source.encoder_kwargs())
    cases = build_battery()
    modes = thinking_modes(encoder.family, encoder.template)
    properties: list[PropertyResult] = []
    outcomes: list[CaseOutcome] = []
    support: list[FeatureSupport] = []
    for mode in modes:
        run = run_mode(encoder, source, family, mode, cases)
        properties += check_mode(run, encoder)
        outcomes += run.outcomes
        support += support_table(run.outcomes, mode.name)
    trainable = all(p.status != FAIL for p in properties if p.id == "encode-verified")
    fam = encoder.family
    return DoctorReport(
        source=source.spec, label=source.label, template_sha256=template_sha256(encoder.template),
        family=fam.name, family_match=_family_match(encoder, family), parity_template=fam.parity_template,
        swift_template=fam.swift_template, stop_strings=list(encoder.stop_strings),
        stop_source="family" if fam.stop_strings else "tokenizer eos", derived_tokenizer=source.derived,
        modes=[{"name": m.name, "kwargs": m.kwargs} for m in modes], properties=properties, outcomes=outcomes,
        support=support, trainable=trainable, verdict=_verdict(properties, support),
    )
