"""Which family a parity template encodes with, decided once its tokenizer is known (``init_processor``).

``<family>_parity`` names its family; ``hf_parity`` detects it from the tokenizer's chat template (the generic
family when nothing recognises it) and then also takes the family's ``<family>_parity`` agent template, where one
exists, unless the user chose another.
"""

from __future__ import annotations

from typing import Any

from swift.utils import get_logger

from ..errors import PolicyError
from ..families import GENERIC, Family, detect_family, load_family

logger = get_logger()


def chat_template_text(tokenizer: Any, template_type: str) -> str:
    """The chat template ``apply_chat_template`` uses by default; PolicyError ``no-chat-template`` if none."""
    text = tokenizer.chat_template
    if isinstance(text, dict):  # named templates: the one apply_chat_template uses by default
        text = text.get("default")
    if not isinstance(text, str) or not text:
        raise PolicyError(
            f"{template_type}: the tokenizer has no chat template, so there is no "
            "inference rendering to match", rule="no-chat-template")
    return text


def resolve_family(named: str | None, template_text: str, template_type: str) -> Family:
    """The family ``named`` (a warning when the template looks like another one), or the detected one (None)."""
    detected = detect_family(template_text)
    if named is None:
        return detected if detected is not None else GENERIC
    family = load_family(named)
    if detected is not None and detected.name != family.name:
        logger.warning(
            f"{template_type}: the tokenizer's chat template looks like family "
            f"{detected.name!r}, not {family.name!r}; the stop strings of {family.name!r} are used. "
            f"Did you mean --template {detected.parity_template}?")
    return family


def default_agent_template(family: Family, chosen: str | None) -> str | None:
    """``hf_parity``'s agent template: the detected family's ``<family>_parity`` unless the user chose one."""
    if chosen not in (None, GENERIC.parity_template):
        return chosen
    from swift.agent_template import agent_template_map

    return family.parity_template if family.parity_template in agent_template_map else None
