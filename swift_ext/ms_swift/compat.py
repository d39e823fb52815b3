"""Compatibility shims for ms-swift's own model code, each applied only where its broken combination is detected.

``install_gemma4_image_features``: ms-swift 4.6's Gemma-4 forward (``swift/model/models/gemma.py``,
``_patch_gemma4_forward``: ``image_features = self.get_image_features(...).pooler_output`` then
``image_features.to(...)``) was written against transformers 5.6.2, where ``pooler_output`` is one tensor holding
every image's soft tokens. From transformers 5.15 (huggingface/transformers#46405, "Consistent output shape from
get_image_features"; 5.19 is what ms-swift 4.6's ``transformers<5.20`` resolves to) it is a tuple, one tensor per
image (``torch.split`` in ``Gemma4Model.get_image_features``), and every Gemma-4 step with an image fails before
any loss (``AttributeError: 'tuple' object has no attribute 'to'``). The shim gives ms-swift's forward the tensor
it expects: the per-image tensors concatenated in order, which is exactly the tensor transformers split (its own
forward does the same ``torch.cat``). It is applied only to models ms-swift's Gemma-4 loader patched, only for the
ms-swift releases below, and it changes a result only when that result is a tuple; the first time it does, it
logs a warning.
"""

from __future__ import annotations

import functools
from typing import Any

from .state import log_once

GEMMA4_TENSOR_POOLER_SWIFT = ("4.6.",)
"""ms-swift versions (prefixes) whose Gemma-4 forward calls ``.to`` on ``pooler_output`` (read in 4.6.0 and in
its main branch of 2026-08-22). A later release is left alone: it may concatenate the tuple itself."""

_MARK = "__wrapped_by_swift_ext__"


def install_gemma4_image_features(module: Any = None, swift_version: str | None = None) -> bool:
    """Wrap ms-swift's ``_patch_gemma4_forward`` so that each model it patches gets one image-feature tensor
    (see the module docstring). ``module``: where it lives (default ``swift.model.models.gemma``);
    ``swift_version``: default ms-swift's own. Returns whether the wrapper is in place (idempotent)."""
    if module is None:
        try:
            from swift.model.models import gemma as module
        except Exception:  # an ms-swift without Gemma-4 (or whose model code does not import): nothing to fix
            return False
    patch = getattr(module, "_patch_gemma4_forward", None)
    if patch is None:
        return False
    if hasattr(patch, _MARK):
        return True
    if swift_version is None:
        import swift

        swift_version = getattr(swift, "__version__", "")
    if not swift_version.startswith(GEMMA4_TENSOR_POOLER_SWIFT):
        return False

    @functools.wraps(patch)
    def patch_gemma4_forward(model, *args, **kwargs):
        result = patch(model, *args, **kwargs)
        concatenate_image_features(model)
        return result

    setattr(patch_gemma4_forward, _MARK, patch)
    module._patch_gemma4_forward = patch_gemma4_forward
    return True


def concatenate_image_features(model: Any) -> None:
    """Make ``model.get_image_features`` (this instance only) return ``pooler_output`` as one tensor when
    transformers returns a tuple of per-image tensors. Only ms-swift's forward, which replaces the instance's
    ``forward``, reads it; transformers' own ``Gemma4Model.forward`` (kept by ms-swift as ``origin_forward`` and
    not called) concatenates the tuple itself and would not take a tensor."""
    get = model.get_image_features
    if hasattr(get, _MARK):
        return

    @functools.wraps(get)
    def get_image_features(*args, **kwargs):
        output = get(*args, **kwargs)
        pooled = getattr(output, "pooler_output", None)
        if isinstance(pooled, (tuple, list)):
            import torch

            log_once("gemma4-image-features",
                     "[swift-ext] Gemma-4: ms-swift's forward expects one image-feature tensor, this transformers "
                     "returns one per image; swift-ext concatenates them in order (swift_ext/ms_swift/compat.py)",
                     warning=True)
            output.pooler_output = torch.cat(pooled, dim=0)
        return output

    setattr(get_image_features, _MARK, get)
    model.get_image_features = get_image_features
