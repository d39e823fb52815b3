"""swift-ext: train on exactly the tokens the model sees at inference.

    import swift_ext
    samples = swift_ext.encode(tokenizer, messages, tools=None, chat_template_kwargs=None)
    swift_ext.verify(tokenizer, messages, samples)
"""

from .core import Encoder, encode, get_encoder
from .errors import (
    InputError,
    ParityError,
    PolicyError,
    ReasoningDroppedError,
    TemplateRenderError,
    UnknownFamilyError,
    VerificationError,
)
from .families import Family, detect_family, list_families, load_family
from .types import IGNORE_INDEX, EncodeStats, Message, Sample, ToolCall, TurnSpan
from .verify import verify

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX",
    "EncodeStats",
    "Encoder",
    "Family",
    "InputError",
    "Message",
    "ParityError",
    "PolicyError",
    "ReasoningDroppedError",
    "Sample",
    "TemplateRenderError",
    "ToolCall",
    "TurnSpan",
    "UnknownFamilyError",
    "VerificationError",
    "detect_family",
    "encode",
    "get_encoder",
    "list_families",
    "load_family",
    "verify",
]
