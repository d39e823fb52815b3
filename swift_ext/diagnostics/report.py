"""Plain data of a doctor report, shared by the terminal, HTML and ``--json`` outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, NA = "pass", "fail", "n/a"

VERIFIED = "verified"
VERIFIED_WITH_DROP = "verified-with-drop"
UNSUPPORTED = "unsupported"
FAILED = "failed"


@dataclass
class Example:
    """The smallest conversation showing a finding, with the two texts that differ."""

    case: str
    mode: str
    kwargs: dict[str, Any]
    messages: list[dict[str, Any]]
    turn: int | None = None
    expected_label: str = ""
    expected: str = ""
    actual_label: str = ""
    actual: str = ""
    note: str = ""


@dataclass
class PropertyResult:
    """One property of the template under one thinking mode."""

    id: str
    title: str
    mode: str
    status: str
    summary: str
    example: Example | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseOutcome:
    """What ``swift_ext.encode`` + ``swift_ext.verify`` made of one battery case."""

    case: str
    mode: str
    status: str
    features: list[str]
    rule: str | None = None
    detail: str = ""
    samples: int = 0
    spliced_turns: int = 0
    reasoning_policy: str = "error"
    """The policy of the last attempt (``drop`` after reasoning the template cannot render)."""


@dataclass
class FeatureSupport:
    feature: str
    title: str
    mode: str
    status: str
    """``yes``, ``partly`` or ``no``."""
    rules: list[str] = field(default_factory=list)


@dataclass
class DoctorReport:
    source: str
    label: str
    template_sha256: str
    family: str
    family_match: str
    """``sha256``, ``rules``, ``named`` or ``none`` (generic)."""
    parity_template: str
    swift_template: str | None
    stop_strings: list[str]
    stop_source: str
    derived_tokenizer: bool
    modes: list[dict[str, Any]]
    properties: list[PropertyResult]
    outcomes: list[CaseOutcome]
    support: list[FeatureSupport]
    trainable: bool
    verdict: list[str]

    @property
    def generic(self) -> bool:
        return self.family_match == "none"

    def property(self, prop_id: str, mode: str) -> PropertyResult:
        for result in self.properties:
            if result.id == prop_id and result.mode == mode:
                return result
        raise KeyError((prop_id, mode))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["family_display"] = "generic" if self.generic else self.family
        return data
