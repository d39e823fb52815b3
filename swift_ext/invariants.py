"""The checks the core and ``verify`` share: what a trained turn's completion must and must not hold.

The core runs them on each completion it derives; ``verify`` runs them again on samples it is handed, after its
own derivation of prompts and tokens. Each raises the ``ParityError`` subclass and rule named in its docstring.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from .errors import TemplateRenderError, VerificationError
from .messages import content_text
from .types import Message


def extends(ids: Sequence[int], prefix: Sequence[int]) -> bool:
    """``ids`` starts with ``prefix`` (token for token)."""
    return len(ids) >= len(prefix) and list(ids[: len(prefix)]) == list(prefix)


def message_texts(message: Message, *, reasoning: bool = True, calls: bool = True) -> list[str]:
    """What a message says, as the template may render it: content, reasoning, tool-call arguments."""
    texts = [content_text(message.content)]
    texts += [message.reasoning or ""] if reasoning else []
    for call in message.tool_calls if calls else ():
        # as the encoder hands JSON-text arguments to the template (parsed and written again, as vLLM does:
        # "\u00c5" written, "Å" rendered, DeepSeek-V3.1), and as written (arguments_policy="verbatim")
        dumped = json.dumps(call.arguments, ensure_ascii=False)
        texts.append(dumped)
        if call.arguments_json is not None and call.arguments_json.strip() != dumped:
            texts.append(call.arguments_json)
    return [t.strip() for t in texts if t and t.strip()]


FOREIGN_MIN_CHARS = 12
"""Shorter texts ("OK", "Yes") occur in many turns by chance: they are not evidence of a misplaced message."""


def rendered_beyond(text: str, completion: str, message: Message) -> bool | None:
    """``text`` occurs in the completion more often than the turn's answer and tool calls account for: True; it
    does not occur at all: False; None where counting cannot tell. A short text ("0"), or one that the answer, the
    arguments or a call's name or id also hold, is ambiguous: a call id (``functions.get_weather:0``) or arguments
    the template re-serialises (``"\\u00c5"`` written, ``"Å"`` rendered; Kimi-K2.5) change the counts without the
    text being rendered or dropped."""
    found = completion.count(text)
    if not found:
        return False
    elsewhere = sum(t.count(text) for t in message_texts(message, reasoning=False))
    elsewhere += sum(f"{call.name} {call.id or ''}".count(text) for call in message.tool_calls)
    if elsewhere or len(text) < FOREIGN_MIN_CHARS:
        return None
    return True


def check_rendered(completion: str, message: Message, i: int) -> None:
    """The completion holds the turn's answer and a call for each tool it calls: a template that drops them would
    otherwise train the model to say nothing (``I2-content-not-rendered``, ``template-drops-tool-calls``)."""
    answer = content_text(message.content).strip()
    if answer and answer not in completion:
        raise TemplateRenderError(
            f"the turn's content {answer[:60]!r} is not in what the template renders for it ({completion[:80]!r})",
            rule="I2-content-not-rendered",
            message_index=i,
        )
    # a name the answer or reasoning mentions is not a call: each call needs an occurrence of its own (counted, not
    # cut out: cutting a short reasoning "w" out of the completion would cut "get_weather" too); only texts the
    # completion holds count (reasoning a thinking-off render drops mentions names nowhere in it)
    others = [text for text in message_texts(message, calls=False) if text in completion]
    calls = Counter(call.name for call in message.tool_calls)
    for call in message.tool_calls:
        if completion.count(call.name) < calls[call.name] + sum(t.count(call.name) for t in others):
            raise TemplateRenderError(
                f"the template does not render the turn's tool call {call.name!r} (some templates render "
                "the call's id instead of its name: Kimi-K2 expects ids like 'functions.NAME:0')",
                rule="template-drops-tool-calls",
                message_index=i,
            )


def check_no_foreign_text(completion: str, messages: Sequence[Message], i: int) -> None:
    """A spliced or located turn must not hold another message's text (Gemma-4 renders a tool-call turn's
    content after the tool responses, where it would land in the next turn's labels): ``I3-foreign-text``."""
    own = "\n".join(message_texts(messages[i]))
    for j, other in enumerate(messages):
        for text in message_texts(other) if j != i else ():
            if len(text) >= FOREIGN_MIN_CHARS and text in completion and text not in own:
                raise TemplateRenderError(
                    f"the text the template renders for turn {i} holds message {j}'s text {text[:40]!r}: the "
                    "template places that message's content inside this turn, so no completion is exactly what "
                    "the model generated",
                    rule="I3-foreign-text",
                    message_index=i,
                )


def check_stop(completion: str, stop_strings: Sequence[str], i: int) -> None:
    """The completion ends with a stop string and holds none before its end (``I2-stop``)."""
    ends = [s for s in stop_strings if completion.endswith(s)]
    if not ends:
        raise VerificationError(f"turn {i}'s completion does not end with a stop string: {completion[-40:]!r}",
                                rule="I2-stop", message_index=i)
    body = completion[: -len(ends[0])]
    if any(s in body for s in stop_strings):
        raise VerificationError(f"turn {i}'s completion holds a stop string before its end", rule="I2-stop",
                                message_index=i)


def open_block(prompt: str, tags: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The reasoning block a generation prompt leaves open: one whose opening tag ends the prompt (but for
    whitespace), as QwQ's ``<think>\\n``, Kimi-K2.5's ``<think>`` and Gemma-4's ``<|channel>thought\\n`` do. A tag
    elsewhere in the prompt (a user quoting ``<think>``) opens nothing."""
    tail = prompt.rstrip()
    return next(((opener, closer) for opener, closer in tags if tail.endswith(opener)), None)


def check_reasoning_blocks(prompt: str, completion: str, tags: Sequence[tuple[str, str]], i: int) -> None:
    """Reasoning blocks stay well formed across the prompt / completion boundary, for every known tag pair
    (``I2-reasoning-block``).

    The state at the boundary comes from the prompt (``open_block``); the completion is then read tag by tag. Each
    way to break it has a message: a re-opened block (a second ``<think>`` after DeepSeek-R1's ``<think>\\n``
    prompt), a block closed twice or never opened (``</think>`` after DeepSeek-V3.2's ``<think></think>``), and an
    answer left inside an open block."""
    opened = open_block(prompt, tags)
    for opener, closer in tags:
        inside = opened == (opener, closer)
        was_open_at_start = inside
        for at, tag in sorted([(m, opener) for m in _find_all(completion, opener)]
                              + [(m, closer) for m in _find_all(completion, closer)]):
            if tag == opener and inside:
                why = "re-opens the block its prompt opened" if was_open_at_start else "opens a block inside a block"
                raise VerificationError(f"turn {i}'s completion {why} ({opener!r} at character {at}: "
                                        f"{completion[max(0, at - 20):at + 20]!r})", rule="I2-reasoning-block",
                                        message_index=i)
            if tag == closer and not inside:
                raise VerificationError(f"turn {i}'s completion closes a block that is not open ({closer!r} at "
                                        f"character {at}: {completion[max(0, at - 20):at + 20]!r})",
                                        rule="I2-reasoning-block", message_index=i)
            inside = tag == opener
            was_open_at_start = False
        if inside:
            raise VerificationError(f"turn {i}'s completion ends inside an open reasoning block ({opener!r} is never "
                                    f"closed): the answer would be trained as reasoning", rule="I2-reasoning-block",
                                    message_index=i)


def _find_all(text: str, tag: str) -> list[int]:
    found, at = [], text.find(tag)
    while at >= 0:
        found.append(at)
        at = text.find(tag, at + len(tag))
    return found


__all__ = [
    "FOREIGN_MIN_CHARS",
    "check_no_foreign_text",
    "check_reasoning_blocks",
    "check_rendered",
    "check_stop",
    "extends",
    "message_texts",
    "open_block",
    "rendered_beyond",
]
