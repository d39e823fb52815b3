"""Property tests: generated conversations against the real chat templates and real tokenizers.

The oracle is independent of swift_ext's own rendering: every expectation comes from the tokenizer's
``apply_chat_template`` (transformers' renderer, the real template text) and ``tokenizer(...)``. The conversations
handed to it are the dicts the user wrote, in the form the model's template expects: reasoning under the field the
template reads, tool-call arguments as dicts or JSON strings as the template needs. What a template supports (tool
calls at all, parallel calls, content beside a call, the argument form) is found by rendering probes with the
oracle, not read from swift_ext's family descriptions.

Invariants checked on every encode result:

- I1 the tokens before each trained turn's first label are the tokenized generation prompt of ``messages[:i]``;
- I2 the labels are the tokens the model generates: they equal the input ids there and the tokens of the turn's
  completion, decode to it, end with a stop string (none earlier), hold the turn's content, reasoning and tool
  names, equal the template's own rendering of the turn where that extends the generation prompt, and never
  repeat text the generation prompt already holds;
- I3 nothing else is labelled: no user, system or tool text, no other turn's text, and the label count is the
  completions' token count;
- I4 a new sample starts only where the next prompt does not extend the previous sample, and a conversation whose
  renders never rewrite history (found by rendering) gives exactly one sample;
- I5 no sample has zero labels or only labels;
- ``swift_ext.verify`` accepts the samples.

Template-only fixtures (Gemma-4, Kimi-K2, Phi-4-reasoning, Seed-OSS, Mistral-Small) are encoded with a *derived*
tokenizer (a real byte-level tokenizer of another fixture with the template's control strings added as special
tokens, see ``swift_ext.dev.fixtures``): token ids differ from the real model's, the template text does not.

``SWIFT_EXT_PROPERTY_EXAMPLES`` sets the number of examples per family and thinking mode (default 30).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import swift_ext
from swift_ext import IGNORE_INDEX, ParityError, ReasoningDroppedError
from swift_ext.dev import testing
from swift_ext.dev.fixtures import FIXTURE_TABLE, expected_family, is_template_only

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REAL_TOKENIZER_FAMILIES = tuple(name for name in FIXTURE_TABLE if not is_template_only(name))
DERIVED_TOKENIZER_FAMILIES = tuple(name for name in FIXTURE_TABLE if is_template_only(name))

MAX_EXAMPLES = int(os.environ.get("SWIFT_EXT_PROPERTY_EXAMPLES", "30"))

# Bugs found by these properties and not fixed yet. Each has a minimal reproduction below
# (``test_open_bug_reproduction``, xfail strict) and, while it is listed here, the generator steers around it so
# the other properties keep their full strength. Fixing one makes its reproduction pass (XPASS, a failure under
# strict): then delete its entry here, which also lifts the steering.
OPEN_BUGS: dict[str, str] = {
    # none open. Fixed, each kept as a regression reproduction in REPRODUCTIONS: "none-content" (None meant as
    # absent), "gemma4-thinking-off-no-marker" (reasoning on a thinking-off turn raises), "reasoning-in-answer"
    # (reasoning counts as rendered only beyond its copies in the answer), "anchor-collision" (a rewritten turn
    # is located by the history's tail, not by its own texts). "gemma4-content-beside-calls" is refused loudly:
    # test_gemma4_content_beside_calls_is_refused.
}


# ----------------------------------------------------------------------------------------------- fixtures
@cache
def tokenizer_for(name: str) -> Any:
    """Each fixture tokenizer, loaded once through the one resolver; a missing fixture fails or skips, saying
    where it was looked for (``swift_ext.dev.testing``)."""
    return testing.tokenizer(name)


def _thinking_modes(name: str) -> list[str]:
    """Thinking on and off where the fixture's family has a switch, else the default. The family comes from the
    fixture table, not from the files, so the cases are the same whichever source gave them."""
    family = swift_ext.load_family(expected_family(name))
    return ["on", "off"] if family.thinking_kwarg else ["default"]


@dataclass(frozen=True)
class Case:
    """One family in one thinking mode."""

    name: str
    mode: str  # "default", "on" or "off"

    def __str__(self) -> str:
        return self.name if self.mode == "default" else f"{self.name}-thinking_{self.mode}"

    @property
    def tokenizer(self) -> Any:
        return tokenizer_for(self.name)

    @property
    def family(self) -> swift_ext.Family:
        return swift_ext.get_encoder(self.tokenizer).family

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """What ends a turn: the family's stop strings; a template no family describes ends at the tokenizer's eos
        (as documented for the generic path)."""
        return self.family.stop_strings or (str(self.tokenizer.eos_token),)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {} if self.mode == "default" else {self.family.thinking_kwarg: self.mode == "on"}

    @property
    def reasoning_key(self) -> str:
        """The key the user writes reasoning under for this model (gpt-oss reads ``thinking``)."""
        return self.family.reasoning_field or "reasoning_content"


CASES = [Case(name, mode) for name in REAL_TOKENIZER_FAMILIES + DERIVED_TOKENIZER_FAMILIES
         for mode in _thinking_modes(name)]


# ------------------------------------------------------------------------------------------------- oracle
def oracle_render(case: Case, messages: list[dict], tools: list | None, *, gen: bool, served: bool = True) -> str:
    # A None value means "absent" (transformers >= 5.2x drops such keys itself; 5.19 would render 'None').
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    if served:
        messages = [as_served(case, m) for m in messages]
    return case.tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=gen, tokenize=False, **case.kwargs
    )


def oracle_ids(case: Case, text: str) -> list[int]:
    return list(case.tokenizer(text, add_special_tokens=False)["input_ids"])


def decode(case: Case, ids: list[int]) -> str:
    return case.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def as_served(case: Case, message: dict) -> dict:
    """The message as vLLM's chat endpoint hands it to the template: JSON-text tool-call arguments parsed into an
    object (``_postprocess_messages`` in vllm/entrypoints/chat_utils.py). A template that only renders text
    arguments (DeepSeek concatenates strings) cannot take that object; it gets the object written back as JSON."""
    if not message.get("tool_calls"):
        return message
    calls = []
    for call in message["tool_calls"]:
        arguments = call["function"]["arguments"]
        if isinstance(arguments, str):
            arguments = json.loads(arguments) if arguments.strip() else {}
        if argument_form(case) == "json":
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append({**call, "function": {**call["function"], "arguments": arguments}})
    return {**message, "tool_calls": calls}


def _try_render(case: Case, messages: list[dict], tools: list | None = None) -> str | None:
    try:
        return oracle_render(case, messages, tools, gen=False, served=False)
    except Exception:  # noqa: BLE001 - a template that raises does not support the probe
        return None


# Probes: what the template supports, found by rendering with the oracle.
PROBE_USER = {"role": "user", "content": "Question"}


def make_call(name: str, arguments: Any, number: int = 0) -> dict[str, Any]:
    # Kimi-K2 renders the call id, not the name; its ids are "functions.NAME:INDEX".
    return {"id": f"functions.{name}:{number}", "type": "function", "function": {"name": name, "arguments": arguments}}


def make_assistant(case: Case, content: Any, reasoning: str | None, calls: list[dict]) -> dict[str, Any]:
    """An assistant message as the user writes it for this model."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message[case.reasoning_key] = reasoning
    if calls:
        message["tool_calls"] = calls
    return message


@cache
def renders_tool_calls(case: Case) -> bool:
    args = {"city": "Paris"}
    for arguments in (args, json.dumps(args)):
        text = _try_render(case, [PROBE_USER, make_assistant(case, "", None, [make_call("lookup_x", arguments)])])
        if text is not None and "lookup_x" in text:
            return True
    return False


@cache
def argument_form(case: Case) -> str:
    """``dict``, ``json`` or ``any``: the argument form the template renders as a JSON object.

    A template that prints a JSON string verbatim and a dict with ``tojson`` gives the same text for both
    (``any``); one that iterates the arguments or applies ``tojson`` to a string needs a dict; one that
    concatenates strings needs JSON text.
    """
    args = {"city": "Paris", "limit": 3}

    def render(arguments: Any) -> str | None:
        return _try_render(case, [PROBE_USER, make_assistant(case, "", None, [make_call("lookup_x", arguments)])])

    as_dict, as_json = render(args), render(json.dumps(args, ensure_ascii=False))
    if as_dict is not None and as_dict == as_json:
        return "any"
    if as_dict is not None:
        return "dict"
    assert as_json is not None, f"{case}: the template renders tool calls in neither argument form"
    return "json"


def in_form(case: Case, args: dict) -> Any:
    """Arguments in the form the template needs (a dict where either works)."""
    return json.dumps(args, ensure_ascii=False) if argument_form(case) == "json" else args


@cache
def max_calls_per_turn(case: Case) -> int:
    calls = [make_call("lookup_x", in_form(case, {})), make_call("lookup_y", in_form(case, {}), 1)]
    text = _try_render(case, [PROBE_USER, make_assistant(case, "", None, calls)])
    return 3 if text is not None and "lookup_x" in text and "lookup_y" in text else 1


@cache
def renders_content_beside_calls(case: Case) -> bool:
    call = make_call("lookup_x", in_form(case, {}))
    text = _try_render(case, [PROBE_USER, make_assistant(case, "Let me look", None, [call])])
    if text is None:
        return False
    # Within the turn: llama.cpp's R1-Distill copy renders the content as a second turn after the calls' stop.
    start = text.find("lookup_x")
    ends = [text.find(stop, start) for stop in case.stop_strings if text.find(stop, start) >= 0]
    return "Let me look" in text[: min(ends)] if ends else "Let me look" in text


@cache
def repeats_calls(case: Case) -> bool:
    """A second tool-call turn (after an answer and a new query) renders like the first. DeepSeek-R1's template as
    MAI-DS-R1 ships it never resets its first-call flag, so every later call turn loses its header
    (test_later_call_turns_are_refused)."""
    call = make_call("lookup_x", in_form(case, {}), 0)
    first = [PROBE_USER]
    later = [PROBE_USER, make_assistant(case, "", None, [call]), {"role": "tool", "tool_call_id": call["id"],
             "content": "out"}, make_assistant(case, "Done", None, []), {"role": "user", "content": "Again"}]
    added = []
    for history in (first, later):
        before = _try_render(case, history)
        after = _try_render(case, [*history, make_assistant(case, "", None, [call])])
        if before is None or after is None or not after.startswith(before):
            return True  # no way to tell: keep generating
        added.append(after[len(before):])
    return added[0] == added[1]


@cache
def chains_calls(case: Case) -> bool:
    """A tool call made right after tool outputs renders after the history (DeepSeek-R1's template, as MAI-DS-R1
    ships it, renders it inside the outputs block instead: no generation prompt leads there, and encode refuses it,
    test_call_after_tool_outputs_is_refused)."""
    call, again = make_call("lookup_x", in_form(case, {}), 0), make_call("lookup_x", in_form(case, {}), 1)
    messages = [PROBE_USER, make_assistant(case, "", None, [call]),
                {"role": "tool", "tool_call_id": call["id"], "content": "out"}]
    history = _try_render(case, messages)
    rendering = _try_render(case, [*messages, make_assistant(case, "", None, [again])])
    return history is not None and rendering is not None and rendering.startswith(history)


@cache
def takes_content_and_reasoning_beside_calls(case: Case) -> bool:
    call = make_call("lookup_x", in_form(case, {}))
    return _try_render(case, [PROBE_USER, make_assistant(case, "Let me look", "Hmm", [call])]) is not None


@cache
def template_renders_reasoning(case: Case) -> bool:
    text = _try_render(case, [PROBE_USER, make_assistant(case, "Answer", "Pondering deeply", [])])
    return text is not None and "Pondering deeply" in text


def reasoning_supported(case: Case) -> bool:
    """The template renders the turn's reasoning, or the family says how the model writes what it drops."""
    return template_renders_reasoning(case) or bool(case.family.reasoning_format)


# ----------------------------------------------------------------------------------------------- strategies
# Contents use a safe alphabet (letters, digits, plain punctuation) plus CJK, emoji and accented letters. It leaves
# out what the templates treat as control text ('<', '>', '[', ']', '|', '{', '}', '`', '\\': so no '<think>',
# '[INST]', '<|im_end|>', DeepSeek's fullwidth-bar tokens ...). A content holding a control string is another
# conversation to the template (it is parsed, split or taken for a token), not a property of the encoder.
SAFE_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-_()/+*=&%$#@~^"
    "éèêàâüöäñçßøÅΩ你好世界日本語한국어中文😀🚀✨👍🏽"
)
DECORATIONS = ("", "", " ", "\n", "\n\n", "  \n", "\t", " \n ")  # leading/trailing whitespace and newlines
TOOL_NAMES = ("get_weather", "search_web", "run_sql", "read_file")
ARG_NAMES = ("city", "query", "limit", "strict", "tags")
SENTINEL = re.compile(r"§[a-z]\d+¶")  # '§' and '¶' are outside the alphabet: a sentinel occurs once only

words = st.text(alphabet=SAFE_ALPHABET, min_size=1, max_size=10)
separators = st.sampled_from([" ", " ", " ", "\n", "\n\n", "  "])


@st.composite
def visible_text(draw, sentinel: str | None = None) -> str:
    """Words (at least one visible character), whitespace around them; an optional sentinel among them."""
    parts = draw(st.lists(words, min_size=1, max_size=5))
    if sentinel is not None:
        parts.insert(draw(st.integers(0, len(parts))), sentinel)
    body = parts[0]
    for part in parts[1:]:
        body += draw(separators) + part
    return draw(st.sampled_from(DECORATIONS)) + body + draw(st.sampled_from(DECORATIONS))


@st.composite
def tool_arguments(draw) -> dict[str, Any]:
    values = {
        "city": st.text(alphabet=SAFE_ALPHABET, min_size=1, max_size=12),
        "query": visible_text(),
        "limit": st.integers(-5, 1000),
        "strict": st.booleans(),
        "tags": st.lists(st.sampled_from(["a", "bé", "日本"]), max_size=3),
    }
    return {name: draw(values[name]) for name in draw(st.lists(st.sampled_from(ARG_NAMES), max_size=3, unique=True))}


def tool_schema(name: str) -> dict[str, Any]:
    properties = {
        "city": {"type": "string", "description": "A city"},
        "query": {"type": "string", "description": "What to look for"},
        "limit": {"type": "integer", "description": "How many"},
        "strict": {"type": "boolean", "description": "Exact matches only"},
        "tags": {"type": "array", "description": "Labels", "items": {"type": "string"}},
    }
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name.replace('_', ' ')} tool.",
            "parameters": {"type": "object", "properties": properties, "required": []},
        },
    }


TOOLS = [tool_schema(name) for name in TOOL_NAMES]


@dataclass
class Meta:
    """What the generator put into one message, for the checks."""

    role: str
    answer: str | None = None  # assistant content
    reasoning: str | None = None
    tool_names: tuple[str, ...] = ()
    train: bool = True


class Conversation:
    """A conversation as the user wrote it, and what is known about each message."""

    def __init__(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, case: Case) -> None:
        self.messages, self.tools = messages, tools
        self.meta = []
        for m in messages:
            calls = tuple(c["function"]["name"] for c in m.get("tool_calls") or ())
            self.meta.append(Meta(m["role"], m.get("content"), m.get(case.reasoning_key), calls,
                                  m.get("loss") is not False))

    def __repr__(self) -> str:
        tools = None if self.tools is None else [t["function"]["name"] for t in self.tools]
        return f"Conversation(tools={tools}, messages={json.dumps(self.messages, ensure_ascii=False, indent=1)})"

    def trained(self) -> list[int]:
        return [i for i, m in enumerate(self.meta) if m.role == "assistant" and m.train]

    def trained_with_reasoning(self) -> list[int]:
        return [i for i in self.trained() if self.meta[i].reasoning and self.meta[i].reasoning.strip()]

    def sentinels(self, i: int) -> set[str]:
        return set(SENTINEL.findall(json.dumps(self.messages[i], ensure_ascii=False)))


@st.composite
def conversations(draw, case: Case) -> Conversation:
    """1-4 user turns; per user turn 0-2 tool-call steps (parallel calls, consecutive results) and an answer.

    Reasoning on or off per assistant turn, empty or null content beside tool calls, dict or JSON-string
    arguments (as the template takes them), system prompt or not, ``loss: false`` on some assistant turns (at
    least one trained), sometimes ending on a tool call.
    """
    tools_ok = renders_tool_calls(case)
    gemma4 = case.family.name == "gemma4"
    messages: list[dict[str, Any]] = []
    counter = iter(range(10_000))

    def sentinel(tag: str) -> str:
        return f"§{tag}{next(counter)}¶"

    use_reasoning = draw(st.booleans())
    if "gemma4-thinking-off-no-marker" in OPEN_BUGS and gemma4 and case.mode == "off":
        use_reasoning = False
    empty = ["", ""] if "none-content" in OPEN_BUGS else ["", "", None]

    def assistant(calls: list[dict]) -> None:
        reasoning = None
        if use_reasoning and draw(st.booleans()):
            distinct = "anchor-collision" in OPEN_BUGS or "reasoning-in-answer" in OPEN_BUGS or draw(st.booleans())
            reasoning = draw(visible_text(sentinel("r") if distinct else None))
        content: str | None
        if not calls:
            content = draw(visible_text(sentinel("a")))
        elif (not renders_content_beside_calls(case)
              or (reasoning is not None and not takes_content_and_reasoning_beside_calls(case))
              or gemma4):  # Gemma-4 moves such content into the next turn: refused, see the test below
            content = draw(st.sampled_from(empty))
        else:
            content = draw(st.one_of(st.sampled_from(empty), visible_text(sentinel("a"))))
        messages.append(make_assistant(case, content, reasoning, calls))

    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(visible_text(sentinel("s")))})
    n_users = draw(st.integers(1, 4))
    call_number = 0
    for u in range(n_users):
        messages.append({"role": "user", "content": draw(visible_text(sentinel("u")))})
        steps = draw(st.integers(0, 2 if chains_calls(case) else 1)) if tools_ok else 0
        if call_number and not repeats_calls(case):
            steps = 0
        ends_on_call = u == n_users - 1 and steps > 0 and draw(st.integers(0, 3)) == 0
        for step in range(steps):
            calls = []
            for _ in range(draw(st.integers(1, max_calls_per_turn(case)))):
                name = draw(st.sampled_from(TOOL_NAMES))
                arguments: Any = draw(tool_arguments())
                form = argument_form(case)
                if form == "json" or (form == "any" and draw(st.booleans())):
                    arguments = json.dumps(arguments, ensure_ascii=draw(st.booleans()))
                calls.append(make_call(name, arguments, call_number))
                call_number += 1
            assistant(calls)
            if ends_on_call and step == steps - 1:
                break
            for call in calls:
                output = draw(visible_text(sentinel("t")))
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
        else:
            assistant([])
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for i in draw(st.lists(st.sampled_from(turns), unique=True, max_size=len(turns) - 1)):
        messages[i]["loss"] = False
    has_calls = any(m.get("tool_calls") for m in messages)
    tools = TOOLS if has_calls or (tools_ok and draw(st.booleans())) else None
    return Conversation(messages, tools, case)


# ----------------------------------------------------------------------------------------------- checks
def note_event(text: str) -> None:
    """Statistics for ``--hypothesis-show-statistics`` (nothing outside a hypothesis run)."""
    if currently_in_test_context():
        event(text)


def _common_prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def holds_reasoning(text: str, reasoning: str, answer: Any) -> bool:
    """Whether ``text`` holds the (stripped) reasoning besides any copies inside the answer.

    Occurrences inside the answer do not count: a short reasoning such as "Paris." can be part of the answer.
    """
    inside = answer.strip().count(reasoning) if isinstance(answer, str) else 0
    return text.count(reasoning) > inside


def _first_stop_cut(text: str, stops: tuple[str, ...]) -> int | None:
    cuts = [text.find(s) + len(s) for s in stops if s in text]
    return min(cuts) if cuts else None


class Oracle:
    """The oracle's renders of one conversation, memoised."""

    def __init__(self, case: Case, conv: Conversation) -> None:
        self.case, self.conv = case, conv
        self._texts: dict[tuple[int, bool], str] = {}
        self._ids: dict[int, list[int]] = {}

    def text(self, upto: int, *, gen: bool) -> str:
        if (upto, gen) not in self._texts:
            self._texts[(upto, gen)] = oracle_render(self.case, self.conv.messages[:upto], self.conv.tools, gen=gen)
        return self._texts[(upto, gen)]

    def prompt(self, i: int) -> str:
        """What the server feeds the model for turn i."""
        return self.text(i, gen=True)

    def prompt_ids(self, i: int) -> list[int]:
        if i not in self._ids:
            self._ids[i] = oracle_ids(self.case, self.prompt(i))
        return self._ids[i]

    def rendering(self, i: int) -> str:
        """The template's own rendering with turn i last."""
        return self.text(i + 1, gen=False)


def check_samples(case: Case, conv: Conversation, samples: list[swift_ext.Sample], *, policy: str) -> None:
    oracle = Oracle(case, conv)
    stops = case.stop_strings
    msgs = conv.messages
    spans = [(k, span) for k, sample in enumerate(samples) for span in sample.turns]
    assert [span.message_index for _, span in spans] == conv.trained(), "every trained turn once, in order"

    for k, sample in enumerate(samples):
        assert len(sample.input_ids) == len(sample.labels)
        labelled = [p for p, label in enumerate(sample.labels) if label != IGNORE_INDEX]
        # I5
        assert labelled, f"I5: sample {k} has no labels"
        assert len(labelled) < len(sample.labels), f"I5: sample {k} labels every token"
        covered: set[int] = set()
        for span in sample.turns:
            positions = set(range(span.label_start, span.label_end))
            assert span.label_start < span.label_end and not positions & covered
            assert span.prompt_end == span.label_start
            covered |= positions
        # I3: exactly the completions are labelled, as many positions as their tokens
        assert set(labelled) == covered, f"I3: sample {k} labels positions outside the turns' completions"
        assert len(labelled) == sum(len(oracle_ids(case, s.completion_text)) for s in sample.turns)

        for span in sample.turns:
            check_turn(case, conv, oracle, sample, span, policy)

    # I4: a new sample starts only where the next prompt does not extend the previous sample
    for k in range(1, len(samples)):
        first = samples[k].turns[0].message_index
        previous = samples[k - 1].input_ids
        assert oracle.prompt_ids(first)[: len(previous)] != previous, (
            f"I4: sample {k} (turn {first}) should have extended sample {k - 1}"
        )

    # I4: where the template keeps this conversation's history (found by rendering: each trained turn's rendering
    # starts with its generation prompt and holds its reasoning, and the next prompt extends what the model
    # generated, token for token) the conversation is one sample.
    trained = conv.trained()
    kept = True
    for n, i in enumerate(trained):
        prompt, rendering = oracle.prompt(i), oracle.rendering(i)
        reasoning = (conv.meta[i].reasoning or "").strip()
        answer = conv.meta[i].answer
        if reasoning and policy == "drop":  # the sample holds the turn without the reasoning its rendering shows
            kept = False
            break
        if not rendering.startswith(prompt) or (reasoning and not holds_reasoning(rendering[len(prompt):], reasoning,
                                                                                  answer)):
            kept = False
            break
        if n + 1 < len(trained):
            tail = rendering[len(prompt):]
            generated = oracle.prompt_ids(i) + oracle_ids(case, tail[: _first_stop_cut(tail, stops) or len(tail)])
            following = oracle.prompt_ids(trained[n + 1])
            if not oracle.prompt(trained[n + 1]).startswith(rendering) or following[: len(generated)] != generated:
                kept = False
                break
    note_event(f"history kept by the template: {kept}; samples: {len(samples) if len(samples) < 4 else '4+'}")
    if kept:
        assert len(samples) == 1, f"I4: the template kept this conversation's history, yet {len(samples)} samples"

    # the package's own verifier agrees
    swift_ext.verify(case.tokenizer, msgs, samples, conv.tools, case.kwargs)


def check_parts(span: swift_ext.TurnSpan, info: Any, stop: str, reasoning: str) -> None:
    """The turn's parts (reasoning / answer / tool call / stop / other) cover its completion in order, and each
    holds what its kind says: the answer part is the turn's content, the stop part its stop string, the reasoning
    the turn's reasoning, every tool name inside the tool-call part."""
    text, parts = span.completion_text, span.parts
    assert [p.start for p in parts] == [0, *[p.end for p in parts[:-1]]] and parts[-1].end == len(text), parts
    by_kind = {}
    for part in parts:
        by_kind.setdefault(part.kind, []).append(text[part.start:part.end])
    assert by_kind.get("stop") == [stop], (by_kind, stop)
    answer = info.answer.strip() if isinstance(info.answer, str) else ""
    if answer and "answer" in by_kind:
        assert by_kind["answer"] == [answer], (by_kind, answer)
    elif answer:  # gpt-oss writes a tool-call turn's content in its analysis channel: reasoning, to the model
        assert any(answer in r for r in by_kind.get("reasoning", [])), (by_kind, answer)
    if reasoning:
        assert any(reasoning in r for r in by_kind.get("reasoning", [])), (by_kind, reasoning)
    for name in info.tool_names:
        assert any(name in c for c in by_kind.get("tool_call", [])), (by_kind, name)


def check_turn(case: Case, conv: Conversation, oracle: Oracle, sample: swift_ext.Sample, span: swift_ext.TurnSpan,
               policy: str) -> None:
    i = span.message_index
    info = conv.meta[i]
    stops = case.stop_strings
    # I1: the turn's context is exactly what the server feeds the model
    context = sample.input_ids[: span.label_start]
    assert context == oracle.prompt_ids(i), (
        f"I1: tokens before turn {i}'s labels are not its inference prompt\n"
        f"sample:    {decode(case, context)[-400:]!r}\ninference: {oracle.prompt(i)[-400:]!r}"
    )
    # I2: the labels are the generated tokens
    labels = sample.labels[span.label_start: span.label_end]
    text = span.completion_text
    assert labels == sample.input_ids[span.label_start: span.label_end]
    assert labels == oracle_ids(case, text), f"I2: labels of turn {i} are not the tokens of {text!r}"
    assert decode(case, labels) == text
    ends = [s for s in stops if text.endswith(s)]
    assert ends, f"I2: turn {i}'s completion does not end with a stop string {stops}: {text[-80:]!r}"
    assert not any(s in text[: -len(ends[0])] for s in stops), f"I2: stop string inside {text!r}"
    if isinstance(info.answer, str) and info.answer.strip():
        assert info.answer.strip() in text, f"I2: turn {i}'s content is not in its completion {text!r}"
    for name in info.tool_names:
        assert name in text, f"I2: turn {i}'s tool call {name!r} is not in its completion {text!r}"
    reasoning = (info.reasoning or "").strip()
    if policy == "error" and reasoning:
        assert holds_reasoning(text, reasoning, info.answer), f"turn {i}'s reasoning silently dropped: {text!r}"
    check_parts(span, info, ends[0], reasoning if policy == "error" else "")
    # I2: where the template's own rendering of the turn extends the generation prompt (and holds the turn's
    # reasoning), the model generated exactly that rendering up to the first stop string.
    prompt, rendering = oracle.prompt(i), oracle.rendering(i)
    renders_it = not reasoning or holds_reasoning(rendering[len(prompt):], reasoning, info.answer)
    if rendering.startswith(prompt) and renders_it and (policy == "error" or not reasoning):
        tail = rendering[len(prompt):]
        cut = _first_stop_cut(tail, stops)
        if cut is not None:
            assert text == tail[:cut], f"I2: turn {i}: completion {text!r}, the template renders {tail[:cut]!r}"
        else:  # the template ends the turn with nothing (GLM): the model ends it with a stop string
            assert text[: -len(ends[0])] == tail, f"I2: turn {i}: completion {text!r}, the template renders {tail!r}"
    # I2: what the generation prompt already holds (such as "<think>\n") is not labelled again
    history = oracle.text(i, gen=False) if i else ""
    held = prompt[_common_prefix_len(history, prompt):]
    for p, ch in enumerate(held):
        if ch in "<[":
            assert not text.startswith(held[p:]), (
                f"I2: turn {i}'s labels start with {held[p:]!r}, which its generation prompt already holds"
            )
    # I3: no user, system or tool text, and nothing of another turn, is labelled
    own = conv.sentinels(i)
    own_text = json.dumps(conv.messages[i], ensure_ascii=False) + str(conv.messages[i])
    for j in range(len(conv.messages)):
        for mark in conv.sentinels(j) - own:
            assert mark not in text, f"I3: text of message {j} ({conv.meta[j].role}) labelled in turn {i}: {text!r}"
        content = conv.messages[j].get("content")
        if conv.meta[j].role != "assistant" and isinstance(content, str) and content.strip() not in own_text:
            assert content.strip() not in text, f"I3: message {j}'s content labelled in turn {i}: {text!r}"


def expected_reasoning_error(case: Case, conv: Conversation) -> set[str] | None:
    """The rules a default-policy encode must raise under, or None when it must succeed."""
    if not conv.trained_with_reasoning():
        return None
    if case.mode == "off":
        return {"reasoning-thinking-off", "reasoning-dropped"}
    if not reasoning_supported(case):
        return {"reasoning-dropped"}
    if not template_renders_reasoning(case):
        # The family's format applies where it fits the prompt: a format that only closes a block
        # ('{reasoning}</think>') needs a prompt ending inside an open one (DeepSeek-V3.1 opens none after tool
        # outputs), judged on apply_chat_template's prompt for the turn.
        oracle = Oracle(case, conv)
        for i in conv.trained():
            if (conv.meta[i].reasoning or "").strip() and not format_fits(case, oracle.prompt(i)):
                return {"reasoning-dropped"}
    return None


def format_fits(case: Case, prompt: str) -> bool:
    family = case.family
    opener, closer = family.reasoning_open, family.reasoning_close
    if not opener or opener in family.reasoning_format:
        return True
    return prompt.rfind(opener) > prompt.rfind(closer)


def oracle_failure(case: Case, conv: Conversation) -> Exception | None:
    """The oracle's error on a render encode needs (a trained turn's prompt or rendering), if any."""
    oracle = Oracle(case, conv)
    try:
        for i in conv.trained():
            oracle.prompt(i)
            oracle.rendering(i)
    except Exception as exc:  # noqa: BLE001 - whatever the template raises
        return exc
    return None


def run_case(case: Case, conv: Conversation) -> None:
    tok, msgs, tools, kwargs = case.tokenizer, conv.messages, conv.tools, case.kwargs
    note_event(f"trained turns: {len(conv.trained())}; tool calls: {sum(len(m.tool_names) for m in conv.meta)}")
    if oracle_failure(case, conv) is not None:
        note_event("path: the oracle cannot render it")
        # apply_chat_template cannot render this conversation, so no inference server can: encode must say so
        # rather than produce samples.
        with pytest.raises(ParityError):
            swift_ext.encode(tok, msgs, tools, kwargs, reasoning_policy="drop")
        return
    expected = expected_reasoning_error(case, conv)
    if expected is not None:
        note_event("path: ReasoningDroppedError expected")
        with pytest.raises(ReasoningDroppedError) as info:
            swift_ext.encode(tok, msgs, tools, kwargs)
        assert info.value.rule in expected, f"raised under rule {info.value.rule!r}, expected one of {expected}"
        samples = swift_ext.encode(tok, msgs, tools, kwargs, reasoning_policy="drop")
        check_samples(case, conv, samples, policy="drop")
        return
    samples = swift_ext.encode(tok, msgs, tools, kwargs)
    check_samples(case, conv, samples, policy="error")
    # the reasoning policy only matters where reasoning would be lost
    dropped = swift_ext.encode(tok, msgs, tools, kwargs, reasoning_policy="drop")
    assert [(s.input_ids, s.labels) for s in dropped] == [(s.input_ids, s.labels) for s in samples]


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CASES, ids=str)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_invariants(case: Case, data: st.DataObject) -> None:
    tokenizer_for(case.name)  # fail with the fixture message before generating
    run_case(case, data.draw(conversations(case), label="conversation"))


def test_probes_find_what_the_templates_support() -> None:
    """The rendering probes the generator relies on agree with what is known about these templates."""
    by_name = {case.name: case for case in CASES}
    assert not any(renders_tool_calls(by_name[name]) for name in ("gemma3", "mistral_small", "phi4_reasoning"))
    assert max_calls_per_turn(by_name["llama3"]) == 1  # Llama-3.1 raises on parallel calls
    assert max_calls_per_turn(by_name["gpt_oss"]) == 1  # gpt-oss renders the first call only
    assert max_calls_per_turn(by_name["qwen3"]) > 1
    assert not renders_content_beside_calls(by_name["llama3"])
    assert argument_form(by_name["qwen3_5"]) == "dict" and argument_form(by_name["deepseek_r1"]) == "json"
    assert argument_form(by_name["qwen3"]) == "any"
    for name in ("llama3", "gemma3", "qwen3_coder", "mistral_small"):
        assert not reasoning_supported(by_name[name]), name


# --------------------------------------------------------------------------------- argument form
@pytest.mark.parametrize("case", [c for c in CASES if c.mode != "off"], ids=str)
def test_tool_argument_form_is_normalised(case: Case) -> None:
    """Arguments as a JSON string (OpenAI form) or as a dict encode alike where the template takes only one form:
    the family's ``tool_arguments`` must hand the template what it needs."""
    args = {"city": "Zürich", "limit": 3, "tags": ["a", "日本"]}

    def conversation(arguments: Any) -> list[dict]:
        call = make_call("get_weather", arguments)
        return [
            {"role": "user", "content": "Weather?"},
            make_assistant(case, "", None, [call]),
            {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"},
            make_assistant(case, "Sunny in Zürich.", None, []),
        ]

    if not renders_tool_calls(case):  # no way to train a call the template cannot show: encode must refuse it
        with pytest.raises(ParityError) as info:
            swift_ext.encode(case.tokenizer, conversation(args), TOOLS, case.kwargs)
        assert info.value.rule in ("template-render", "template-drops-tool-calls"), info.value
        return
    form = argument_form(case)
    if form == "any":  # the template takes both forms: each must encode exactly, in its own rendering
        for arguments in (args, json.dumps(args)):
            messages = conversation(arguments)
            check_samples(case, Conversation(messages, TOOLS, case),
                          swift_ext.encode(case.tokenizer, messages, TOOLS, case.kwargs), policy="error")
        return
    needed = conversation(in_form(case, args))
    other = conversation(args if form == "json" else json.dumps(args))
    expected = swift_ext.encode(case.tokenizer, needed, TOOLS, case.kwargs)
    check_samples(case, Conversation(needed, TOOLS, case), expected, policy="error")
    got = swift_ext.encode(case.tokenizer, other, TOOLS, case.kwargs)
    assert [(s.input_ids, s.labels) for s in got] == [(s.input_ids, s.labels) for s in expected]


# ----------------------------------------------------------------------------- open bug reproductions
# Minimal conversations for the bugs in OPEN_BUGS, checked with the same properties as generated ones. The
# sentinels (§x0¶) let the I3 check see text of another message in a completion.
def _call(case: Case, number: int = 0) -> dict[str, Any]:
    return make_call("get_weather", in_form(case, {"city": "Oslo"}), number)


def _tool_turns(case: Case, call_content: Any, call_reasoning: str | None, answer: str,
                answer_reasoning: str | None = None, tool_output: str = "Cold §t2¶") -> list[dict]:
    call = _call(case)
    return [
        {"role": "user", "content": "Weather in Oslo? §u0¶"},
        make_assistant(case, call_content, call_reasoning, [call]),
        {"role": "tool", "tool_call_id": call["id"], "content": tool_output},
        make_assistant(case, answer, answer_reasoning, []),
    ]


REPRODUCTIONS: dict[str, list[tuple[Case, Callable[[Case], list[dict]]]]] = {
    # gpt-oss: encode raises on what apply_chat_template renders; GLM-4.7: 'None' in the history of turn 3's
    # prompt (I1); DeepSeek-V3.1: samples for a conversation apply_chat_template cannot render.
    "none-content": [
        (Case(name, mode), lambda case: _tool_turns(case, None, None, "It is cold. §a3¶"))
        for name, mode in (("gpt_oss", "default"), ("glm4_7", "on"), ("deepseek_v3_1", "off"))
    ],
    # thinking off, but the reasoning is trained (no ReasoningDroppedError)
    "gemma4-thinking-off-no-marker": [
        (Case("gemma4_e2b", "off"), lambda case: [
            {"role": "user", "content": "2+2? §u0¶"}, make_assistant(case, "4 §a1¶", "Two and two.", [])]),
        (Case("gemma4", "off"), lambda case: _tool_turns(case, "", None, "It is cold. §a3¶", "The tool said so.")),
    ],
    # the reasoning "Paris." is inside the answer: Llama-3.1 does not raise, DeepSeek-R1 loses it
    "reasoning-in-answer": [
        (Case(name, "default"), lambda case: [
            {"role": "user", "content": "Capital of France? §u0¶"},
            make_assistant(case, "The capital is Paris. §a1¶", "Paris.", [])])
        for name in ("llama3", "deepseek_r1")
    ],
    # Kimi-K2: the reasoning "Check" of turn 3 is dropped by the template and found in the tool output instead;
    # gpt-oss: the reasoning of turn 3 is found inside its answer, after the analysis channel
    "anchor-collision": [
        (Case("kimi_k2", "default"), lambda case: _tool_turns(
            case, "", "Check", "It is cold. §a3¶", "Check", tool_output="Check passed: cold §t2¶")),
        (Case("gpt_oss", "default"), lambda case: _tool_turns(
            case, "", "I need the weather tool.", "It is sunny. Enjoy! §a3¶", "It is sunny.")),
    ],
}


def _reproduction_params() -> list[Any]:
    params = []
    for bug, cases in REPRODUCTIONS.items():
        marks = [pytest.mark.xfail(strict=True, reason="bug: " + OPEN_BUGS[bug])] if bug in OPEN_BUGS else []
        for case, build in cases:
            params.append(pytest.param(case, build, marks=marks, id=f"{bug}-{case}"))
    return params


@pytest.mark.parametrize("mode", ["on", "off"])
def test_gemma4_content_beside_calls_is_refused(mode: str) -> None:
    """Gemma-4 renders a tool-call turn's content after the tool responses, glued to the next turn, so no
    completion of that next turn is what the model generated: encode must refuse it, naming the turn, instead of
    labelling the previous turn's content (it used to, with thinking on)."""
    case = Case("gemma4", mode)
    messages = _tool_turns(case, "Let me check. §a1¶", None, "It is cold. §a3¶")
    with pytest.raises(ParityError) as info:
        swift_ext.encode(case.tokenizer, messages, tools=TOOLS, chat_template_kwargs=case.kwargs)
    assert info.value.rule in ("turn-not-located", "I3-foreign-text") and info.value.message_index == 3


@pytest.mark.parametrize(("case", "build"), _reproduction_params())
def test_open_bug_reproduction(case: Case, build: Callable[[Case], list[dict]]) -> None:
    """Each reproduction must pass the properties once its bug is fixed (and its OPEN_BUGS entry removed)."""
    messages = build(case)
    run_case(case, Conversation(messages, TOOLS if any(m.get("tool_calls") for m in messages) else None, case))
