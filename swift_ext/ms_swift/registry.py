"""Register ``<family>_parity`` (and ``hf_parity``) templates and agent templates in ms-swift."""

from __future__ import annotations

from copy import deepcopy

from swift.template import TEMPLATE_MAPPING, Template, TemplateMeta, register_template
from swift.utils import get_logger

from ..families import GENERIC, Family, list_families
from .agent import register_agent_templates
from .template import ParityTemplateMixin
from .vision import TextOnlyVisionMixin

logger = get_logger()

# ms-swift template classes that carry a vision stack and must also work text-only without it.
_VISION_TEMPLATE_CLASSES = ("Qwen3_5Template", "Qwen3_8Template", "Qwen3VLTemplate", "Qwen2VLTemplate")


def _parity_class(family: Family, base: type) -> type:
    """``<Family>ParityTemplate(ParityTemplateMixin, [TextOnlyVisionMixin,] base)``; the generic family's class
    (``hf_parity``) names no family: it detects one from the tokenizer's template."""
    bases: tuple[type, ...] = (ParityTemplateMixin,)
    if any(cls.__name__ in _VISION_TEMPLATE_CLASSES for cls in base.__mro__):
        bases += (TextOnlyVisionMixin,)
    name = "".join(part.title() for part in family.parity_template.split("_")) + "Template"
    named = None if family is GENERIC else family.name
    return type(name, (*bases, base), {"parity_family": named, "__module__": __name__})


def _parity_meta(name: str, base_meta: TemplateMeta | None, cls: type, agent_template: str | None,
                 stop_strings: tuple[str, ...]) -> TemplateMeta:
    if base_meta is None:
        meta = TemplateMeta(name, prefix=[], prompt=["{{QUERY}}"], chat_sep=None, template_cls=cls)
    else:
        meta = deepcopy(base_meta)
        meta.template_type = name
        meta.template_cls = cls
    # The model's own template decides the default system prompt and thinking; ms-swift's hand-written
    # defaults would add text the server never renders.
    meta.default_system = None
    meta.is_thinking = False
    meta.thinking_prefix = ""
    meta.non_thinking_prefix = ""
    meta.history_thinking_prefix = ""
    meta.preserve_thinking = None
    meta.agent_template = agent_template
    for stop in stop_strings:
        if stop not in meta.stop_words:
            meta.stop_words.append(stop)
    return meta


def register_parity_templates() -> list[str]:
    """Register every family's parity template; returns the names (idempotent)."""
    agents = set(register_agent_templates())
    names = []
    for family in list_families():
        name = family.parity_template
        base_meta = TEMPLATE_MAPPING.get(family.swift_template) if family.swift_template else None
        if family.swift_template and base_meta is None:
            logger.warning(f"[swift-ext] ms-swift has no template {family.swift_template!r}; "
                           f"{name} uses the generic base class")
        base_cls = base_meta.template_cls if base_meta is not None else Template
        cls = _parity_class(family, base_cls)
        agent = family.parity_template if family.parity_template in agents else (
            base_meta.agent_template if base_meta is not None else None)
        register_template(_parity_meta(name, base_meta, cls, agent, family.stop_strings), exist_ok=True)
        names.append(name)
    generic = _parity_class(GENERIC, Template)
    register_template(_parity_meta(GENERIC.parity_template, None, generic, None, ()), exist_ok=True)
    names.append(GENERIC.parity_template)
    return names
