"""LLaMA-Factory 0.9.5 integration: ``template: <family>_parity`` (and ``hf_parity``).

``register()`` adds one LLaMA-Factory template per swift_ext family description plus
the generic ``hf_parity`` (family detected from the tokenizer's template), all of
class ``ParityTemplate``, and routes their datasets through the parity processors.
``swift-ext lf train cfg.yaml`` (``swift_ext.llamafactory.cli``) calls it in every
process, including the workers LLaMA-Factory starts under torchrun.

Importing this package does not import LLaMA-Factory; ``register()`` does.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from .options import ENV_VAR, ParityOptions, configure, current_options

logger = logging.getLogger("swift_ext.llamafactory")

SUPPORTED_LLAMAFACTORY = "0.9.5"

__all__ = [
    "ENV_VAR",
    "ParityOptions",
    "SUPPORTED_LLAMAFACTORY",
    "configure",
    "current_options",
    "parity_template_names",
    "register",
]


def parity_template_names() -> list[str]:
    """``<family>_parity`` for every family description, then ``hf_parity``."""
    from swift_ext.families import GENERIC, list_families

    return [family.parity_template for family in list_families()] + [GENERIC.parity_template]


@functools.lru_cache(maxsize=1)
def register() -> list[str]:
    """Register the parity templates, the parity processors and converter with LLaMA-Factory.

    Idempotent. Returns the registered template names.
    """
    from ._compat import ensure_torchaudio, torchvision_problem

    problem = torchvision_problem()
    if problem:
        raise RuntimeError(problem)
    ensure_torchaudio()

    import llamafactory
    from llamafactory.data import converter, loader
    from llamafactory.data.template import TEMPLATES, register_template

    from swift_ext.families import list_families

    from .template import HF_PARITY, ParityTemplate

    version = getattr(llamafactory, "__version__", "?")
    if version != SUPPORTED_LLAMAFACTORY:
        logger.warning(
            "swift_ext.llamafactory is written for LLaMA-Factory %s and this is %s; its internals may differ",
            SUPPORTED_LLAMAFACTORY, version,
        )

    names = []
    for family_name, name in [(f.name, f.parity_template) for f in list_families()] + [(None, HF_PARITY)]:
        if name not in TEMPLATES:
            register_template(name=name, template_class=ParityTemplate, efficient_eos=False, replace_eos=False,
                              replace_jinja_template=False)
            template = TEMPLATES[name]
            template.parity_name = name
            template.parity_family = family_name
        elif not isinstance(TEMPLATES[name], ParityTemplate):
            raise RuntimeError(f"LLaMA-Factory already has a template named {name!r} that is not swift_ext's")
        names.append(name)

    _patch_processor(loader)
    _patch_converter(converter)
    return names


def _patch_processor(loader: Any) -> None:
    original = loader._get_dataset_processor
    if getattr(original, "__swift_ext__", False):
        return
    from .processor import parity_processor

    @functools.wraps(original)
    def _get_dataset_processor(data_args, stage, template, tokenizer, processor, do_generate=False):
        default = original(data_args, stage, template, tokenizer, processor, do_generate=do_generate)
        return parity_processor(default, stage, template, do_generate)

    _get_dataset_processor.__swift_ext__ = True
    loader._get_dataset_processor = _get_dataset_processor


def _patch_converter(converter: Any) -> None:
    original = converter.get_dataset_converter
    if getattr(original, "__swift_ext__", False):
        return
    from .processor import ParityDatasetConverter

    @functools.wraps(original)
    def get_dataset_converter(name, dataset_attr, data_args):
        from llamafactory.data.template import TEMPLATES

        from .template import ParityTemplate

        if name == "openai" and isinstance(TEMPLATES.get(data_args.template), ParityTemplate):
            return ParityDatasetConverter(dataset_attr, data_args)
        return original(name, dataset_attr, data_args)

    get_dataset_converter.__swift_ext__ = True
    converter.get_dataset_converter = get_dataset_converter
