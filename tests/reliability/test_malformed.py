"""Malformed conversations, each one named: verified samples, or a ``ParityError`` with its rule and message index.

Every case is run the same way and classified:

- *clear*: a ``ParityError`` with the expected rule and message index;
- *verified*: samples that ``swift_ext.verify`` accepts and whose turns equal the inference oracle
  (``apply_chat_template`` of the real template on the conversation as an OpenAI-compatible server hands it over:
  text parts joined by a newline, JSON-text arguments parsed), with a completion written out by hand;
- *raw*: any other exception; *silent*: samples where an error was due, or samples the checks reject;
- *hang*: no answer within ``LIMIT`` seconds.

``test_tally`` prints ``tried / clear / verified / raw / silent / hangs`` (the README quotes it); raw, silent and
hangs must be 0.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import oracle_ids, oracle_prompt_ids, tokenizer

import swift_ext

LIMIT = 20.0
U = {"role": "user", "content": "Hi"}
A = {"role": "assistant", "content": "Hello."}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                           "parameters": {"type": "object"}}}]
LONE_SURROGATE = "bad \ud800 text"


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def call(arguments: Any, name: Any = "get_weather") -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def calls_turn(*calls: dict, content: Any = "") -> dict:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


@dataclass
class Case:
    messages: Any
    rule: str | None = None
    """The expected rule; None: verified samples are expected."""
    index: int | None = None
    fixture: str = "qwen3"
    tools: Any = None
    kwargs: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    served: list[dict] | None = None
    """For a verified case: the conversation as the server hands it to the template (default: ``messages``)."""
    completion: str | None = None
    """For a verified case: the last turn's completion, written by hand."""


QWEN_EMPTY_THINK = "<think>\n\n</think>\n\n"

CASES: dict[str, Case] = {
    # --- structure
    "not a list": Case("hello", "input-not-a-list"),
    "a dict": Case({"role": "user"}, "input-not-a-list"),
    "bytes": Case(b"[]", "input-not-a-list"),
    "empty": Case([], "input-empty"),
    "message not a dict": Case([U, "Hello."], "input-not-a-dict", 1),
    "message is None": Case([U, None], "input-not-a-dict", 1),
    "missing role": Case([{"content": "Hi"}, A], "input-missing-role", 0),
    "unknown role": Case([{"role": "robot", "content": "Hi"}, A], "input-unknown-role", 0),
    "role not a string": Case([{"role": 1, "content": "Hi"}, A], "input-unknown-role", 0),
    "ms-swift role tool_call": Case([U, {"role": "tool_call", "content": "{}"}], "input-unknown-role", 1),
    "only system": Case([{"role": "system", "content": "S"}], "input-no-turns"),
    "no assistant": Case([U], "I5-no-assistant-turn"),
    "assistant first": Case([A, U, A], "input-assistant-first", 0),
    "system then assistant": Case([{"role": "system", "content": "S"}, A], "input-assistant-first", 1),
    "every turn loss false": Case([U, {**A, "loss": False}], "I5-zero-label"),
    "loss a string": Case([U, {**A, "loss": "no"}], "input-bad-loss", 1),
    "loss an int": Case([U, {**A, "loss": 0}], "input-bad-loss", 1),
    # --- content
    "content an int": Case([{"role": "user", "content": 42}, A], "input-content-type", 0),
    "content a dict": Case([{"role": "user", "content": {"text": "Hi"}}, A], "input-content-type", 0),
    "content list of strings": Case([{"role": "user", "content": ["Hi"]}, A], "input-content-type", 0),
    "text part without text": Case([{"role": "user", "content": [{"type": "text"}]}, A], "input-content-type", 0),
    "text part with int text": Case([{"role": "user", "content": [{"type": "text", "text": 3}]}, A],
                                    "input-content-type", 0),
    "assistant content null": Case([U, {"role": "assistant", "content": None}], "input-empty-turn", 1),
    "assistant content missing": Case([U, {"role": "assistant"}], "input-empty-turn", 1),
    "assistant content empty list": Case([U, {"role": "assistant", "content": []}], "input-empty-turn", 1),
    "assistant image part": Case([U, {"role": "assistant", "content": [{"type": "image"}]}],
                                 "input-assistant-media", 1),
    "assistant text and image parts": Case(
        [U, {"role": "assistant", "content": [{"type": "text", "text": "See"}, {"type": "image_url"}]}],
        "input-assistant-media", 1),
    "assistant text parts": Case(
        [U, {"role": "assistant", "content": [{"type": "text", "text": "The answer is four."}]}],
        served=[U, {"role": "assistant", "content": "The answer is four."}],
        completion=f"{QWEN_EMPTY_THINK}The answer is four.<|im_end|>"),
    "assistant two text parts": Case(
        [U, {"role": "assistant", "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]}],
        served=[U, {"role": "assistant", "content": "One.\nTwo."}],
        completion=f"{QWEN_EMPTY_THINK}One.\nTwo.<|im_end|>"),
    "user text parts": Case(
        [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}, A],
        served=[{"role": "user", "content": "Hi\nthere"}, A], completion=f"{QWEN_EMPTY_THINK}Hello.<|im_end|>"),
    "assistant text parts (glm reads parts)": Case(
        [U, {"role": "assistant", "content": [{"type": "text", "text": "Four."}]}], fixture="glm4_7",
        completion="</think>Four.<|user|>"),  # GLM-4.7's prompt ends "<think>": no reasoning, the block closes
    "assistant empty string": Case([U, {"role": "assistant", "content": ""}],
                                   completion=f"{QWEN_EMPTY_THINK}<|im_end|>"),
    "unknown keys kept": Case([U, {**A, "weight": 3}], completion=f"{QWEN_EMPTY_THINK}Hello.<|im_end|>"),
    "None values absent": Case([{**U, "name": None}, {**A, "tool_calls": None}],
                               served=[U, A], completion=f"{QWEN_EMPTY_THINK}Hello.<|im_end|>"),
    # --- reasoning
    "reasoning not a string": Case([U, {**A, "reasoning_content": ["x"]}], "input-reasoning-type", 1),
    "reasoning on a user": Case([{**U, "reasoning_content": "hmm"}, A], "input-reasoning-role", 0),
    "reasoning on a tool": Case([U, calls_turn(CALL), {"role": "tool", "content": "1", "thinking": "x"}, A],
                                "input-reasoning-role", 2),
    "unclosed think": Case([U, {"role": "assistant", "content": "<think>I am thinking..."}],
                           "input-reasoning-markup", 1),
    "close twice": Case([U, {"role": "assistant", "content": "<think>a</think>b</think>c"}],
                        "input-reasoning-markup", 1),
    "nested think": Case([U, {"role": "assistant", "content": "<think>a<think>b</think>c"}],
                         "input-reasoning-markup", 1),
    "text before think": Case([U, {"role": "assistant", "content": "Sure. <think>a</think>b"}],
                              "input-reasoning-markup", 1),
    "R</think>C read as reasoning": Case(
        [U, {"role": "assistant", "content": "Two.</think>Four."}],
        served=[U, {"role": "assistant", "content": "Four.", "reasoning_content": "Two."}],
        completion="<think>\nTwo.\n</think>\n\nFour.<|im_end|>"),
    "field and inline": Case([U, {"role": "assistant", "content": "<think>x</think>y", "reasoning_content": "x"}],
                             "input-reasoning-twice", 1),
    "think tags inside reasoning": Case([U, {**A, "reasoning_content": "a</think>b"}], "input-reasoning-markup", 1),
    "inline reasoning read": Case([U, {"role": "assistant", "content": "<think>\nTwo.\n</think>\n\nFour."}],
                                  served=[U, {"role": "assistant", "content": "Four.", "reasoning_content": "Two."}],
                                  completion="<think>\nTwo.\n</think>\n\nFour.<|im_end|>"),
    "reasoning with thinking off": Case([U, {**A, "reasoning_content": "r"}], "reasoning-thinking-off", 1,
                                        kwargs={"enable_thinking": False}),
    "reasoning llama cannot render": Case([U, {**A, "reasoning_content": "r"}], "reasoning-dropped", 1,
                                          fixture="llama3"),
    # --- tool calls
    "tool_calls a string": Case([U, {"role": "assistant", "content": "", "tool_calls": "f()"}],
                                "input-tool-calls-type", 1),
    "tool call not a dict": Case([U, calls_turn("f")], "input-tool-calls-type", 1),
    "tool call without name": Case([U, calls_turn({"function": {"arguments": {}}})], "input-tool-call-name", 1),
    "tool call empty name": Case([U, calls_turn(call({}, ""))], "input-tool-call-name", 1),
    "tool call name not a string": Case([U, calls_turn(call({}, 7))], "input-tool-call-name", 1),
    "arguments malformed JSON": Case([U, calls_turn(call('{"city": "Oslo"'))], "input-bad-arguments", 1),
    "arguments a JSON array": Case([U, calls_turn(call("[1, 2]"))], "input-bad-arguments", 1),
    "arguments a number": Case([U, calls_turn(call(3))], "input-bad-arguments", 1),
    "arguments NaN in a dict": Case([U, calls_turn(call({"x": float("nan")}))], "input-bad-arguments", 1),
    "arguments Infinity in a dict": Case([U, calls_turn(call({"x": float("inf")}))], "input-bad-arguments", 1),
    "arguments NaN in JSON text": Case([U, calls_turn(call('{"x": NaN}'))], "input-bad-arguments", 1),
    "arguments nested 200 deep": Case([U, calls_turn(call(nested(200)))], "input-bad-arguments", 1),
    "arguments nested 1000 deep": Case([U, calls_turn(call(nested(1000)))], "input-bad-arguments", 1),
    "arguments JSON nested 100000 deep": Case([U, calls_turn(call('{"a":' * 100000 + "1" + "}" * 100000))],
                                              "input-bad-arguments", 1),
    "arguments not serialisable": Case([U, calls_turn(call({"x": object()}))], "input-bad-arguments", 1),
    "arguments with a lone surrogate": Case([U, calls_turn(call({"x": LONE_SURROGATE}))], "input-invalid-text", 1),
    "call on a user message": Case([{**U, "tool_calls": [CALL]}, A], "input-tool-calls-role", 0),
    "tool result without a call": Case([U, A, {"role": "tool", "content": "1"}], "input-orphan-tool-result", 2),
    "more results than calls": Case([U, calls_turn(CALL), {"role": "tool", "content": "1"},
                                     {"role": "tool", "content": "2"}, A], "input-orphan-tool-result", 3),
    "gpt-oss two calls in one message": Case(
        [U, calls_turn(CALL, call({"city": "Rome"})), {"role": "tool", "content": "1"},
         {"role": "tool", "content": "2"}, A], "template-drops-tool-calls", 1, fixture="gpt_oss", tools=TOOLS),
    "gpt-oss calls named in the analysis": Case(
        [U, {**calls_turn(CALL, call({"city": "Rome"}, "search_web")),
             "thinking": "I will call get_weather and search_web."}, {"role": "tool", "content": "1"},
         {"role": "tool", "content": "2"}, A], "template-drops-tool-calls", 1, fixture="gpt_oss", tools=TOOLS),
    "kimi call without id": Case([U, calls_turn(CALL), {"role": "tool", "content": "1"}, A],
                                 "template-drops-tool-calls", 1, fixture="kimi_k2", tools=TOOLS),
    "JSON-text arguments parsed as a server does": Case(
        [U, calls_turn(call('{"city": "Z\\u00fcrich"}'))], tools=TOOLS,
        served=[U, calls_turn(call({"city": "Zürich"}))],
        completion=f'{QWEN_EMPTY_THINK}<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "Zürich"}}}}\n'
                   "</tool_call><|im_end|>"),
    "JSON-text arguments verbatim on request": Case(
        [U, calls_turn(call('{"city": "Z\\u00fcrich"}'))], tools=TOOLS, options={"arguments_policy": "verbatim"},
        completion=f'{QWEN_EMPTY_THINK}<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "Z\\u00fcrich"}}}}'
                   "\n</tool_call><|im_end|>"),
    "two calls in one qwen3 message": Case(
        [U, calls_turn(CALL, call({"city": "Rome"}))], tools=TOOLS,
        completion=f'{QWEN_EMPTY_THINK}<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "Oslo"}}}}\n'
                   '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n'
                   "</tool_call><|im_end|>"),
    # --- tools
    "tools a string": Case([U, A], "input-bad-tools", tools="get_weather"),
    "tools a dict": Case([U, A], "input-bad-tools", tools={"name": "get_weather"}),
    "tools a list of strings": Case([U, A], "input-bad-tools", tools=["get_weather"]),
    "tool without a name": Case([U, A], "input-bad-tools", tools=[{"type": "function", "function": {}}]),
    "tool with NaN": Case([U, A], "input-bad-tools", tools=[{"function": {"name": "f", "x": float("nan")}}]),
    "tools nested deep": Case([U, A], "input-bad-tools",
                              tools=[{"function": {"name": "f", "parameters": nested(300)}}]),
    "tools with a surrogate": Case([U, A], "input-invalid-text", tools=[{"function": {"name": LONE_SURROGATE}}]),
    # --- template kwargs and options
    "kwargs a list": Case([U, A], "input-kwargs-type", kwargs=["enable_thinking"]),
    "kwargs a string": Case([U, A], "input-kwargs-type", kwargs="enable_thinking=False"),
    "kwargs an int": Case([U, A], "input-kwargs-type", kwargs=1),
    "reasoning_policy unknown": Case([U, A], "policy-reasoning_policy", options={"reasoning_policy": "maybe"}),
    "history_reasoning unknown": Case([U, A], "policy-history_reasoning", options={"history_reasoning": "all"}),
    "train_turns unknown": Case([U, A], "policy-train_turns", options={"train_turns": "first"}),
    "arguments_policy unknown": Case([U, A], "policy-arguments_policy", options={"arguments_policy": "raw"}),
    "keep history without a switch": Case([U, A], "policy-keep-history", options={"history_reasoning": "keep"}),
    # --- text that is not valid Unicode
    "surrogate in user content": Case([{"role": "user", "content": LONE_SURROGATE}, A], "input-invalid-text", 0),
    "surrogate in system content": Case([{"role": "system", "content": LONE_SURROGATE}, U, A],
                                        "input-invalid-text", 0),
    "surrogate in assistant content": Case([U, {"role": "assistant", "content": LONE_SURROGATE}],
                                           "input-invalid-text", 1),
    "surrogate in reasoning": Case([U, {**A, "reasoning_content": LONE_SURROGATE}], "input-invalid-text", 1),
    "surrogate in a text part": Case([{"role": "user", "content": [{"type": "text", "text": LONE_SURROGATE}]}, A],
                                     "input-invalid-text", 0),
    "surrogate in a tool result": Case([U, calls_turn(CALL), {"role": "tool", "content": LONE_SURROGATE}, A],
                                       "input-invalid-text", 2),
    "surrogate in a tool name": Case([U, calls_turn(call({}, LONE_SURROGATE))], "input-invalid-text", 1),
    "surrogate in JSON-text arguments": Case([U, calls_turn(call('{"x": "\ud800"}'))], "input-invalid-text", 1),
    "deep extra key": Case([U, {**A, "meta": nested(500)}], "input-bad-value", 1),
    # --- well-formed edge cases that must simply work
    "whitespace content": Case([U, {"role": "assistant", "content": "  \n "}],
                               completion=f"{QWEN_EMPTY_THINK}  \n <|im_end|>"),
    "unicode content": Case([U, {"role": "assistant", "content": "日本語 ünïcode 🙂"}],
                            completion=f"{QWEN_EMPTY_THINK}日本語 ünïcode 🙂<|im_end|>"),
    "long content": Case([U, {"role": "assistant", "content": " ".join(["word"] * 20000)}],
                         completion=f"{QWEN_EMPTY_THINK}{' '.join(['word'] * 20000)}<|im_end|>"),
    "user mentions think tags": Case([{"role": "user", "content": "What does <think> mean?"}, A],
                                     completion=f"{QWEN_EMPTY_THINK}Hello.<|im_end|>"),
}


@dataclass
class Outcome:
    kind: str  # clear / verified / raw / silent / hang
    detail: str = ""


def _served(case: Case) -> list[dict]:
    return [{k: v for k, v in m.items() if v is not None} for m in (case.served or case.messages)]


def _check_verified(case: Case, samples: list) -> str | None:
    """Why verified-looking samples are wrong, or None: verify, then the oracle, then the hand-written completion."""
    tok = tokenizer(case.fixture)
    swift_ext.verify(tok, case.messages, samples, case.tools, case.kwargs, **case.options)
    served = _served(case)
    for sample in samples:
        for span in sample.turns:
            i = span.message_index
            prompt = oracle_prompt_ids(tok, served[:i], tools=case.tools, **(case.kwargs or {}))
            if sample.input_ids[: span.label_start] != prompt:
                return f"turn {i}: the prompt is not the inference prompt"
    last = samples[-1].turns[-1]
    if case.completion is not None and last.completion_text != case.completion:
        return f"completion {last.completion_text[:120]!r}, expected {case.completion[:120]!r}"
    if samples[-1].labels[last.label_start:last.label_end] != oracle_ids(tok, last.completion_text):
        return "labels are not the completion's tokens"
    return None


def classify(case: Case) -> Outcome:
    tok = tokenizer(case.fixture)

    def run() -> Outcome:
        try:
            samples = swift_ext.encode(tok, case.messages, case.tools, case.kwargs, conversation_index=7,
                                       **case.options)
        except swift_ext.ParityError as exc:
            if case.rule is None:
                return Outcome("silent", f"expected samples, got {exc}")
            if exc.rule != case.rule or exc.message_index != case.index or exc.conversation_index != 7:
                return Outcome("silent", f"expected [{case.rule}] at message {case.index}, got {exc!r}")
            return Outcome("clear", str(exc))
        except Exception as exc:  # noqa: BLE001 - the point of the suite
            return Outcome("raw", f"{type(exc).__name__}: {exc}")
        if case.rule is not None:
            return Outcome("silent", f"expected [{case.rule}], got {len(samples)} samples")
        try:
            why = _check_verified(case, samples)
        except swift_ext.ParityError as exc:
            why = f"verify: {exc}"
        return Outcome("silent", why) if why else Outcome("verified")

    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(run).result(timeout=LIMIT)
    except FutureTimeout:
        return Outcome("hang", f"no answer in {LIMIT} s")
    finally:
        pool.shutdown(wait=False)


RESULTS: dict[str, Outcome] = {}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_conversation(name: str) -> None:
    outcome = RESULTS[name] = classify(CASES[name])
    assert outcome.kind in ("clear", "verified"), f"{name}: {outcome.kind}: {outcome.detail}"


def test_tally(capsys: pytest.CaptureFixture[str]) -> None:
    """At least 80 malformed conversations; the counts the README quotes (printed, visible with -s or -rA)."""
    start = time.perf_counter()
    for name, case in CASES.items():
        if name not in RESULTS:
            RESULTS[name] = classify(case)
    counts = {kind: sum(o.kind == kind for o in RESULTS.values()) for kind in
              ("clear", "verified", "raw", "silent", "hang")}
    line = (f"malformed conversations: tried {len(RESULTS)} / clear errors {counts['clear']} / verified "
            f"{counts['verified']} / raw {counts['raw']} / silent {counts['silent']} / hangs {counts['hang']}")
    with capsys.disabled():
        print(f"\n{line} ({time.perf_counter() - start:.1f} s)")
    assert len(RESULTS) >= 80
    assert counts["raw"] == counts["silent"] == counts["hang"] == 0, {
        n: o.detail for n, o in RESULTS.items() if o.kind in ("raw", "silent", "hang")}
    json.dumps(counts)
