"""Encode speed against the floor and against ms-swift's own backends, in one run.

    python benchmarks/encode_speed.py [--conversations 200] [--rounds 5] [--families qwen3_6 llama3 gpt_oss glm4_7]

For each family it encodes the same synthetic multi-turn conversations (three user queries, each answered by a
tool call and a final answer, with reasoning where the family renders it) and reports conversations/s,
tokens/s and the ratio of each method's time to the floor:

- floor: one ``apply_chat_template`` of the whole conversation plus one tokenization (what any trainer pays);
- naive: per trained turn, ``apply_chat_template`` of the generation prompt and of the turn, each tokenized;
- swift_ext: ``swift_ext.encode`` (exact: every turn's prompt and labels), a fresh encoder each round;
- ms-swift ``swift`` / ``jinja`` backends, where ms-swift is installed (``Template.encode`` of the same rows).

Methods run interleaved, ``--rounds`` times, and each reports its best round of process CPU time, so other
processes on the machine disturb the ratios as little as possible.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import swift_ext  # noqa: E402
from swift_ext import core  # noqa: E402
from swift_ext.dev.fixtures import load_tokenizer  # noqa: E402

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                       "required": ["city"]},
    },
}]
NO_REASONING = {"llama3", "gemma3", "qwen3_coder", "mistral_small"}


def conversation(rng: random.Random, family: swift_ext.Family, reasoning: bool) -> list[dict]:
    """Three queries, each answered by a tool call, a tool result and a final answer."""
    messages = [{"role": "system", "content": "You are a helpful assistant that checks the weather with tools."}]
    for query in range(3):
        city = f"City{rng.randint(0, 999)}"
        messages.append({"role": "user", "content": f"Question {query}: how warm is it in {city} right now? " * 2})
        args = {"city": city, "unit": "celsius"}
        call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps(args) if family.tool_arguments == "json" else args}}]}
        answer = {"role": "assistant", "content": f"It is {rng.randint(-5, 30)} degrees in {city}. " * 3}
        if reasoning:
            call["reasoning_content"] = "The user wants current weather; I should call the tool. " * 3
            answer["reasoning_content"] = "The tool answered; summarise the temperature briefly. " * 3
        messages += [call, {"role": "tool", "content": json.dumps({"temp": rng.randint(-5, 30)})}, answer]
    return messages


@dataclass
class Method:
    name: str
    run: Callable[[list[dict]], int]  # returns tokens produced for the conversation
    best: float = float("inf")
    tokens: int = 0


def floor_method(tok, kwargs) -> Callable[[list[dict]], int]:
    def run(messages: list[dict]) -> int:
        text = tok.apply_chat_template(messages, tools=TOOLS, tokenize=False, **kwargs)
        return len(tok(text, add_special_tokens=False)["input_ids"])
    return run


def naive_method(tok, kwargs) -> Callable[[list[dict]], int]:
    def run(messages: list[dict]) -> int:
        total = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = tok.apply_chat_template(messages[:i], tools=TOOLS, tokenize=False, add_generation_prompt=True,
                                             **kwargs)
            turn = tok.apply_chat_template(messages[: i + 1], tools=TOOLS, tokenize=False, **kwargs)
            total += len(tok(prompt, add_special_tokens=False)["input_ids"])
            total += len(tok(turn[len(prompt):], add_special_tokens=False)["input_ids"])
        return total
    return run


def swift_ext_method(tok, kwargs, family) -> Callable[[list[dict]], int]:
    def run(messages: list[dict]) -> int:
        samples = swift_ext.encode(tok, messages, tools=TOOLS, chat_template_kwargs=kwargs)
        return sum(len(s) for s in samples)
    return run


def ms_swift_methods(name: str, tok) -> list[Method]:
    """ms-swift's own template, both backends, when ms-swift is installed (see ms_swift_backends.py)."""
    from ms_swift_backends import swift_backend_encoders

    return [Method(f"ms-swift {backend}", fn) for backend, fn in swift_backend_encoders(name, tok, TOOLS).items()]


def measure(name: str, conversations: int, rounds: int) -> list[Method]:
    tok = load_tokenizer(name)
    family = swift_ext.get_encoder(tok).family
    rng = random.Random(0)
    reasoning = name not in NO_REASONING
    data = [conversation(rng, family, reasoning) for _ in range(conversations)]
    kwargs = {family.thinking_kwarg: True} if family.thinking_kwarg else {}
    methods = [
        Method("floor", floor_method(tok, kwargs)),
        Method("naive per-turn", naive_method(tok, kwargs)),
        Method("swift_ext", swift_ext_method(tok, kwargs, family)),
        *ms_swift_methods(name, tok),
    ]
    for _ in range(rounds):
        for method in methods:
            core._ENCODERS.clear()  # a fresh encoder: no memoised pieces carried over from the last round
            start = time.process_time()
            method.tokens = sum(method.run(messages) for messages in data)
            method.best = min(method.best, time.process_time() - start)
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--families", nargs="+", default=["qwen3_6", "llama3", "gpt_oss", "glm4_7"])
    args = parser.parse_args()
    print(f"{args.conversations} conversations x 6 assistant turns, best of {args.rounds} rounds (process CPU time)")
    print("| family | method | conversations/s | tokens/s | time / floor |\n|---|---|---:|---:|---:|")
    for name in args.families:
        methods = measure(name, args.conversations, args.rounds)
        floor = methods[0].best
        for method in methods:
            print(f"| {name} | {method.name} | {args.conversations / method.best:,.0f} | "
                  f"{method.tokens / method.best:,.0f} | {method.best / floor:.2f}x |")


if __name__ == "__main__":
    main()
