"""ms-swift's own templates as benchmark methods (only when ms-swift is installed).

ms-swift builds a template from a model folder, so this writes the fixture's tokenizer files beside a tiny
config.json in a temporary folder (no weights are loaded). The template each family maps to is the one
``templates/<family>.toml`` names as ``swift_template``; families whose model type this helper cannot fake
are left out.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from swift_ext.dev.fixtures import fixture_dir
from swift_ext.families import load_family

MODEL_TYPES = {"qwen3_6": "qwen3", "qwen3_5": "qwen3", "qwen3": "qwen3", "llama3": "llama"}


def swift_backend_encoders(name: str, tok, tools) -> dict[str, Callable[[list[dict]], int]]:
    if name not in MODEL_TYPES:
        return {}
    try:
        from swift.model import get_model_processor
        from swift.template import get_template
        from transformers import LlamaConfig, Qwen3Config
    except ImportError:
        return {}
    model_dir = Path(tempfile.mkdtemp(prefix="swift-ext-bench-"))
    for item in fixture_dir(name).iterdir():
        shutil.copyfile(item, model_dir / item.name)
    config_cls = Qwen3Config if MODEL_TYPES[name] == "qwen3" else LlamaConfig
    config_cls(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
               num_attention_heads=2, num_key_value_heads=1, head_dim=8).save_pretrained(str(model_dir))
    processor = get_model_processor(str(model_dir), load_model=False, model_type=MODEL_TYPES[name])[1]
    encoders = {}
    for backend in ("swift", "jinja"):
        template = get_template(processor, template_type=load_family(name).swift_template, template_backend=backend)
        template.set_mode("train")

        def run(messages: list[dict], template=template) -> int:
            encoded = template.encode(copy.deepcopy({"messages": messages, "tools": tools}))
            return sum(len(e["input_ids"]) for e in (encoded if isinstance(encoded, list) else [encoded]))

        encoders[backend] = run
    return encoders
