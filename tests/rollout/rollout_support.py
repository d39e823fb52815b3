"""Synthetic rollouts on the real fixture tokenizers, shared by the tests in this folder.

A rollout is built the way an engine produces one: for each assistant turn, the text the model generates (the
chat template's own rendering of the turn after its generation prompt, reasoning and tool calls included, up to
and including the stop token) is tokenized by the Hugging Face tokenizer itself, and each id gets a logprob.
Fixtures come through the one resolver (``swift_ext.dev.testing``).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import swift_ext  # noqa: E402
from swift_ext.dev import testing  # noqa: E402

FAMILIES = ("qwen3", "qwen3_6", "gpt_oss", "glm4_7", "deepseek_r1")
SWITCH_FAMILIES = ("qwen3_6", "glm4_7")
"""Families whose template has a keep-history switch (preserve_thinking / clear_thinking)."""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

AGENT = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What's the weather in Paris right now?"},
    {
        "role": "assistant",
        "reasoning_content": "The user wants current weather for Paris, so I should call get_weather.",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                          "arguments": {"city": "Paris", "unit": "celsius"}}}],
    },
    {"role": "tool", "content": '{"temp": 22, "sky": "sunny"}'},
    {
        "role": "assistant",
        "reasoning_content": "The tool says 22 degrees and sunny. I will answer briefly.",
        "content": "It is 22 °C and sunny in Paris.",
    },
    {"role": "user", "content": "Thanks! And what is five plus five?"},
    {
        "role": "assistant",
        "reasoning_content": "Five plus five equals ten.",
        "content": "Five plus five is ten.",
    },
]
"""A tool call, its result, an answer, then a new user query: the Qwen3 family strips the first two turns'
reasoning from the third turn's prompt; gpt-oss drops past analysis; DeepSeek-R1 never renders reasoning."""


_PROBE = "Thanks! And 22 °C\n  x = {\"a\": 1}"


def tokenizer(name: str) -> Any:
    """The fixture tokenizer for a family short name, through the one resolver (``swift_ext.dev.testing``).

    Fixture loading rebuilds a tokenizer that does not round-trip its own ``tokenizer.json`` (transformers < 5.20,
    which ms-swift 4.6 pins, loads DeepSeek-R1-0528-Qwen3's byte-level file as a Metaspace tokenizer that drops
    spaces); the tests here are about token bookkeeping, so they check that the text survives."""
    tok = testing.tokenizer(name)
    assert _round_trips(tok), f"{name}: the fixture tokenizer does not round-trip text"
    return tok


def _round_trips(tok: Any) -> bool:
    ids = tok(_PROBE, add_special_tokens=False)["input_ids"]
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == _PROBE


def hf_ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def generations(tok: Any, messages: list[dict], tools=None, kwargs=None) -> dict[int, str]:
    """message index -> the text the model generates for that assistant turn (ends with its stop token)."""
    samples = swift_ext.encode(tok, messages, tools, kwargs, reasoning_policy="drop")
    return {t.message_index: t.completion_text for s in samples for t in s.turns}


def fake_logprobs(n: int, seed: int) -> list[float]:
    return [-((seed * 31 + k * 17) % 97) / 50.0 for k in range(n)]


def make_record(name: str, messages: list[dict] | None = None, *, tools=TOOLS, kwargs: dict | None = None,
                generated: dict[int, str] | None = None) -> dict:
    """A rollout record whose every assistant turn was sampled (ids = HF tokenization of its generation)."""
    tok = tokenizer(name)
    messages = copy.deepcopy(messages or AGENT)
    texts = generated or generations(tok, messages, tools, kwargs)
    for index, text in texts.items():
        ids = hf_ids(tok, text)
        messages[index]["token_ids"] = ids
        messages[index]["logprobs"] = fake_logprobs(len(ids), index)
    record = {"messages": messages, "tools": tools}
    if kwargs:
        record["chat_template_kwargs"] = dict(kwargs)
    return record


def generated_indices(record: dict) -> list[int]:
    return [i for i, m in enumerate(record["messages"]) if "token_ids" in m]


def text_messages(record: dict) -> list[dict]:
    keys = ("token_ids", "logprobs", "prompt_token_ids", "prompt_tokens", "finish_reason")
    return [copy.deepcopy({k: v for k, v in m.items() if k not in keys}) for m in record["messages"]]


def engine_messages(tok: Any, record: dict) -> list[dict]:
    """The messages as an engine hands them to the template: tool-call arguments in the form the template
    iterates (vLLM parses the OpenAI JSON text into a dict; DeepSeek's template concatenates the text)."""
    family = swift_ext.get_encoder(tok).family
    form = family.tool_arguments
    out = text_messages(record)
    for message in out:
        if family.reasoning_field and message.get("reasoning_content") is not None:
            message.setdefault(family.reasoning_field, message["reasoning_content"])  # gpt-oss reads "thinking"
        for call in message.get("tool_calls") or ():
            arguments = call["function"]["arguments"]
            if form == "json" and not isinstance(arguments, str):
                call["function"] = {**call["function"], "arguments": json.dumps(arguments, ensure_ascii=False)}
    return out


def hf_prompt(tok: Any, record: dict, upto: int, kwargs: dict | None = None, chat_template: str | None = None):
    """The engine prompt an OpenAI-compatible server builds: transformers' own apply_chat_template."""
    kw = dict(record.get("chat_template_kwargs") or {})
    kw.update(kwargs or {})
    text = tok.apply_chat_template(engine_messages(tok, record)[:upto], tools=record.get("tools"), tokenize=False,
                                   add_generation_prompt=True, chat_template=chat_template, **kw)
    return hf_ids(tok, text)


def seed_000_keep_template(tok: Any) -> str:
    """The Qwen3 template modified as in seed 000: every assistant turn keeps its reasoning."""
    old = ("{%- if loop.index0 > ns.last_query_index %}\n"
           "            {%- if loop.last or (not loop.last and reasoning_content) %}")
    assert old in tok.chat_template, "the Qwen3 fixture template changed"
    return tok.chat_template.replace(old, "{%- if true %}\n"
                                          "            {%- if loop.last or (not loop.last and reasoning_content) %}")


def with_evidence(record: dict, prompts: list[list[int]], *, counts_only: bool = False) -> dict:
    """Attach the engine's report of its prompts (vLLM prompt_token_ids, or usage.prompt_tokens)."""
    record = copy.deepcopy(record)
    for index, prompt in zip(generated_indices(record), prompts):
        if counts_only:
            record["messages"][index]["prompt_tokens"] = len(prompt)
        else:
            record["messages"][index]["prompt_token_ids"] = list(prompt)
    return record


# ------------------------------------------------------------------------------ ms-swift's GRPO code
SWIFT_RLHF_UTILS = ("replace_assistant_response_with_ids", "get_response_prefix_ids", "encode_sample",
                    "build_rollout_logps", "build_completion_mask_and_seq_lengths", "pad_logps_back_to_batch",
                    "_normalize_routed_experts_tensor", "_pad_or_trim_routed_experts", "build_routed_experts_batch",
                    "collate_to_grpo_micro_batch")
"""The functions of ms-swift 4.6's swift/rlhf_trainers/utils.py that build and collate GRPO training inputs."""

_SWIFT_RLHF_UTILS: list[Any] = []


def swift_rlhf_utils() -> Any:
    """ms-swift's ``swift.rlhf_trainers.utils`` module or, when it cannot be imported for a missing optional
    dependency (it imports msgspec, which vLLM brings), a module compiled from the installed file itself: the
    top-level imports that succeed, then the functions of ``SWIFT_RLHF_UTILS``, ms-swift's own source. The functions
    look each other up in the module's globals as in ms-swift, so ``install_logprob_guard(module=...)`` works on both.
    """
    if _SWIFT_RLHF_UTILS:
        return _SWIFT_RLHF_UTILS[0]
    try:
        from swift.rlhf_trainers import utils as module
    except ImportError as exc:
        if getattr(exc, "name", "") in ("swift", "swift.rlhf_trainers"):
            raise
        module = _compiled_rlhf_utils()
    _SWIFT_RLHF_UTILS.append(module)
    return module


def _compiled_rlhf_utils() -> Any:
    import ast
    import importlib.util
    import types
    from pathlib import Path

    path = Path(importlib.util.find_spec("swift.rlhf_trainers").submodule_search_locations[0]) / "utils.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = types.ModuleType("swift_rlhf_trainers_utils_compiled")
    module.__file__ = str(path)
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            try:
                exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), module.__dict__)  # noqa: S102
            except ImportError:
                pass  # msgspec (unused by these functions)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in SWIFT_RLHF_UTILS]
    exec(compile(ast.Module(body=functions, type_ignores=[]), str(path), "exec"), module.__dict__)  # noqa: S102
    missing = set(SWIFT_RLHF_UTILS) - set(vars(module))
    assert not missing, f"ms-swift 4.6 functions not found in {path}: {missing}"
    return module
