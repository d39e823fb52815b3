"""Model-family descriptions: the facts a chat template cannot tell.

Each family is one small TOML file in ``templates/`` (shipped inside the
wheel as ``swift_ext/templates``): stop strings, where the template reads
reasoning from and how the model writes it when the template drops it, the
thinking switch, the history-reasoning switch, the tool-argument form, and
the rules that recognise the family's template. Code never branches on a
family name; it reads these fields.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UnknownFamilyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TOOL_ARGUMENT_FORMS = ("any", "dict", "json")
MESSAGE_PARSERS = ("harmony",)
"""Values of ``[rollout] message_parser``: how a sampled turn's text splits into message fields."""
PREFIX_KINDS = ("user", "system", "tool", "assistant", "answer")
"""Values of ``[prefix] rewritten_by``: a role, or ``answer`` (an assistant message without tool calls)."""
PREFIX_LAST_TURN = ("same", "same-with-reasoning", "same-with-tool-calls")
"""Values of ``[prefix] last_turn``: an assistant message renders the same when it is the last message (``same``),
or only when it carries reasoning (``same-with-reasoning``) or tool calls (``same-with-tool-calls``)."""
MEDIA_KINDS = ("image", "video", "audio")
"""Keys of ``[media]``: the media kinds of ms-swift's ``images`` / ``videos`` / ``audios`` columns."""

GENERIC_REASONING_TAGS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),              # Qwen3, QwQ, DeepSeek-R1, GLM, Kimi, Phi-4, most reasoning models
    ("<seed:think>", "</seed:think>"),    # Seed-OSS
    ("<|channel>thought", "<channel|>"),  # Gemma-4
)
"""Reasoning-block delimiters known to be in use: a template no family describes is checked against these (a
generation prompt that leaves one open must be followed by a completion that closes it)."""


@dataclass(frozen=True)
class Family:
    """One model family's description (see ``templates/README.md`` for the fields)."""

    name: str
    description: str
    stop_strings: tuple[str, ...]
    swift_template: str | None = None
    tool_arguments: str = "any"
    reasoning_field: str | None = "reasoning_content"
    """Message key the template reads reasoning from; ``None``: it reads none."""
    reasoning_format: str | None = None
    """How the model writes reasoning the template drops, e.g. ``<think>\\n{reasoning}\\n</think>\\n\\n``."""
    reasoning_placeholder: str | None = None
    """What the template writes instead of dropped reasoning (replaced by the format)."""
    reasoning_open: str | None = None
    reasoning_close: str | None = None
    """Delimiters of the model's reasoning block (``<think>`` / ``</think>``): a generation prompt that ends
    inside an open block must be followed by a completion that closes it."""
    thinking_kwarg: str | None = None
    thinking_default: bool | None = None
    keep_history_kwarg: str | None = None
    keep_history_value: Any = True
    stop_after_tool_calls: str | None = None
    """Stop string to append after a turn with tool calls when the template renders none."""
    stop_after_turn: str | None = None
    """Stop string to append after any other turn when the template renders none."""
    message_parser: str | None = None
    """How a generated turn's text splits into message fields (``MESSAGE_PARSERS``); ``None``: the default
    ``<think>`` split. ``harmony``: gpt-oss's analysis / final / tool-call channels."""
    prefix_rewritten_by: tuple[str, ...] | None = None
    """The template's prefix property (``[prefix]``, templates/README.md): renders of a conversation's prefixes
    are prefixes of one another while no message of these kinds lies between them; ``None``: not stated."""
    prefix_last_turn: str = "same"
    media: tuple[tuple[str, str], ...] = ()
    """``[media]``: each media kind the parity templates place exactly for this family, with the text the chat
    template writes for one item of it (``("video", "<|vision_start|><|video_pad|><|vision_end|>")``); a row with
    a kind not listed is refused (``template-media-unsupported``)."""
    match_sha256: tuple[str, ...] = ()
    match_contains: tuple[str, ...] = ()
    match_excludes: tuple[str, ...] = ()
    source: str = ""

    @property
    def reasoning_tags(self) -> tuple[tuple[str, str], ...]:
        """The (open, close) pairs of the model's reasoning block: the family's own, else the known ones."""
        if self.reasoning_open and self.reasoning_close:
            return ((self.reasoning_open, self.reasoning_close),)
        return GENERIC_REASONING_TAGS

    @property
    def parity_template(self) -> str:
        """Name under which the framework adapters register this family."""
        return parity_name(self.name)

    def thinking_enabled(self, kwargs: dict[str, Any]) -> bool | None:
        """Whether the template runs in thinking mode under these kwargs (None: no switch)."""
        if self.thinking_kwarg is None:
            return self.thinking_default
        return bool(kwargs.get(self.thinking_kwarg, self.thinking_default))

    def matches(self, template: str) -> int:
        """Match strength: 2 exact hash, 1 substring rules, 0 no match."""
        if template_sha256(template) in self.match_sha256:
            return 2
        if self.match_contains and all(s in template for s in self.match_contains):
            if not any(s in template for s in self.match_excludes):
                return 1
        return 0


GENERIC = Family(
    name="hf",
    description="Any template: its own rendering, stop strings from the tokenizer",
    stop_strings=(),
    reasoning_field="reasoning_content",
)


def parity_name(name: str) -> str:
    """The naming rule of parity templates (and of their agent templates): ``<name>_parity``."""
    return f"{name}_parity"


def parity_template_of(name: str) -> str:
    """The name a family's parity template is registered under (``hf`` -> ``hf_parity``); ``UnknownFamilyError``
    for a name no family has."""
    return load_family(name).parity_template


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def _templates_dir() -> Path:
    packaged = resources.files("swift_ext") / "templates"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "templates"


def _family_from_toml(path: Path) -> Family:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    reasoning = data.get("reasoning", {})
    thinking = data.get("thinking", {})
    history = data.get("history", {})
    match = data.get("match", {})
    stops = data.get("stops", {})
    tool_arguments = data.get("tool_arguments", "any")
    if tool_arguments not in TOOL_ARGUMENT_FORMS:
        raise ValueError(f"{path}: tool_arguments must be one of {TOOL_ARGUMENT_FORMS}")
    prefix = data.get("prefix")
    if prefix is not None and (not set(prefix.get("rewritten_by", ())) <= set(PREFIX_KINDS)
                               or prefix.get("last_turn", "same") not in PREFIX_LAST_TURN):
        raise ValueError(f"{path}: [prefix] rewritten_by takes {PREFIX_KINDS}, last_turn one of {PREFIX_LAST_TURN}")
    message_parser = data.get("rollout", {}).get("message_parser")
    if message_parser not in (None, *MESSAGE_PARSERS):
        raise ValueError(f"{path}: [rollout] message_parser must be one of {MESSAGE_PARSERS}")
    media = data.get("media", {})
    if not set(media) <= set(MEDIA_KINDS) or not all(isinstance(v, str) and v for v in media.values()):
        raise ValueError(f"{path}: [media] maps a kind among {MEDIA_KINDS} to the text the template writes for it")
    return Family(
        name=data["name"],
        description=data.get("description", ""),
        stop_strings=tuple(stops.get("strings", ())),
        stop_after_tool_calls=stops.get("after_tool_calls"),
        stop_after_turn=stops.get("after_turn"),
        message_parser=message_parser,
        swift_template=data.get("swift_template"),
        tool_arguments=tool_arguments,
        reasoning_field=reasoning.get("field", "reasoning_content") or None,
        reasoning_format=reasoning.get("format"),
        reasoning_placeholder=reasoning.get("placeholder"),
        reasoning_open=reasoning.get("open"),
        reasoning_close=reasoning.get("close"),
        thinking_kwarg=thinking.get("kwarg"),
        thinking_default=thinking.get("default"),
        keep_history_kwarg=history.get("keep_kwarg"),
        keep_history_value=history.get("keep_value", True),
        prefix_rewritten_by=None if prefix is None else tuple(prefix.get("rewritten_by", ())),
        prefix_last_turn="same" if prefix is None else prefix.get("last_turn", "same"),
        media=tuple(media.items()),
        match_sha256=tuple(match.get("sha256", ())),
        match_contains=tuple(match.get("contains", ())),
        match_excludes=tuple(match.get("excludes", ())),
        source=str(path),
    )


@lru_cache(maxsize=1)
def _registry() -> dict[str, Family]:
    families = {}
    for path in sorted(_templates_dir().glob("*.toml")):
        family = _family_from_toml(path)
        if family.name in families:
            raise ValueError(f"family {family.name!r} is described twice ({path})")
        families[family.name] = family
    return families


def list_families() -> list[Family]:
    return list(_registry().values())


def load_family(name: str) -> Family:
    if name in ("hf", "generic"):
        return GENERIC
    try:
        return _registry()[name.removesuffix("_parity")]
    except KeyError:
        known = ", ".join(sorted(_registry()))
        raise UnknownFamilyError(f"no family named {name!r}; known: {known}", rule="unknown-family") from None


def detect_family(template: str) -> Family | None:
    """The family whose rules recognise this template text, or None.

    An exact hash match wins; among substring matches the one with the most
    specific rules (longest total matched text) wins.
    """
    best, best_key = None, (0, 0)
    for family in _registry().values():
        strength = family.matches(template)
        if strength:
            key = (strength, sum(len(s) for s in family.match_contains))
            if key > best_key:
                best, best_key = family, key
    return best


def resolve_family(template: str, family: str | Family | None, *, strict: bool) -> Family:
    """Pick the family for ``template``: the one named, else detected, else generic."""
    if isinstance(family, Family):
        return family
    if family is not None:
        return load_family(family)
    detected = detect_family(template)
    if detected is not None:
        return detected
    if strict:
        raise UnknownFamilyError(
            f"no family description recognises this chat template (sha256 {template_sha256(template)[:12]}); "
            "pass family=... or strict=False to use the generic path"
        )
    return GENERIC


__all__ = [
    "GENERIC",
    "GENERIC_REASONING_TAGS",
    "Family",
    "detect_family",
    "list_families",
    "load_family",
    "parity_name",
    "parity_template_of",
    "resolve_family",
    "template_sha256",
]
