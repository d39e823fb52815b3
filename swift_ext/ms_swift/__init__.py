"""swift-ext for ms-swift 4.6: ``<family>_parity`` templates, agent templates and a data hook.

Use it with zero code::

    swift sft --external_plugins "$(swift-ext plugin-path)" --template qwen3_6_parity --template_backend jinja ...

(``python -m swift_ext.ms_swift plugin-path`` prints the same path.) From Python, ``swift_ext.ms_swift.register()``
does what the plugin file does.
"""

from __future__ import annotations

from pathlib import Path

_registered: list[str] | None = None


def plugin_path() -> str:
    """Absolute path of the file to pass to ``--external_plugins``."""
    return str(Path(__file__).resolve().parent.parent / "plugin.py")


def register() -> list[str]:
    """Register every parity template and agent template, and install the data hook (idempotent)."""
    global _registered
    if _registered is None:
        from .data import install
        from .registry import register_parity_templates

        _registered = register_parity_templates()
        install()
    return list(_registered)


__all__ = ["plugin_path", "register"]
