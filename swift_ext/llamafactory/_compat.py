"""Make LLaMA-Factory importable on machines without a working torchaudio.

LLaMA-Factory 0.9.5 imports ``torchaudio`` at the top of ``llamafactory.data.mm_plugin``
(which every template and processor imports) although only the audio path uses it. On
a CPU-only machine pip installs CUDA builds of torchvision and torchaudio that cannot
load against the CPU build of torch (``torchaudio`` fails with ``OSError: Could not
load this library ... _torchaudio.abi3.so``), and torchaudio 2.11 is the last release,
so no torchaudio matches torch 2.13 at all. The documented environment uninstalls both
(see ``docs/llamafactory.md``); this module puts a placeholder ``torchaudio`` module in
``sys.modules`` when the real one is missing or broken, so the text-only path imports.
Any use of the placeholder (audio data) raises an ``ImportError`` that says why.
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import types

logger = logging.getLogger("swift_ext.llamafactory")

_STUB_MARK = "__swift_ext_placeholder__"


def _placeholder(reason: str) -> types.ModuleType:
    module = types.ModuleType("torchaudio")
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    module.__doc__ = "Placeholder installed by swift_ext.llamafactory: " + reason
    setattr(module, _STUB_MARK, True)

    def __getattr__(name: str):  # noqa: N807 - module-level __getattr__ (PEP 562)
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"torchaudio.{name} is not available: {reason}. swift_ext's LLaMA-Factory integration trains on "
            "text only; install a torchaudio build that matches your torch for audio data."
        )

    module.__getattr__ = __getattr__
    return module


def ensure_torchaudio() -> bool:
    """Import torchaudio, or install the placeholder. Returns True when the placeholder is in use."""
    existing = sys.modules.get("torchaudio")
    if existing is not None:
        return bool(getattr(existing, _STUB_MARK, False))
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError, RuntimeError) as exc:
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        reason = f"the installed torchaudio does not import ({type(exc).__name__}: {str(exc)[:160]})"
        if isinstance(exc, ModuleNotFoundError) and exc.name == "torchaudio":
            reason = "torchaudio is not installed"
        sys.modules["torchaudio"] = _placeholder(reason)
        logger.debug("torchaudio placeholder installed: %s", reason)
        return True
    return False


def torchvision_problem() -> str | None:
    """Say why an installed torchvision would break transformers, or None when it is fine or absent.

    transformers imports torchvision whenever its distribution is installed; a CUDA build
    against a CPU torch then fails inside ``import transformers`` with an error naming
    ``PreTrainedModel``, far from the cause. Checked without importing transformers.
    """
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        return (
            f"torchvision is installed but does not import ({type(exc).__name__}: {str(exc)[:160]}); "
            "transformers imports it whenever it is installed. Run `pip uninstall -y torchvision torchaudio` "
            "in this environment (LLaMA-Factory's text path needs neither)"
        )
    return None
