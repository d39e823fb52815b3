"""Re-derive the invariants I1-I5 for produced samples; raise with a diagnostic.

``verify`` recomputes each trained turn's inference prompt by rendering the
template and tokenizing the *whole* string with the tokenizer itself (no
memoised pieces), and checks the samples against it:

- I1 the tokens before a turn's first label are the tokenized generation prompt;
- I2 the labels are the turn's completion tokens, ending at a stop string that
  occurs nowhere earlier in it, and holding the turn's content and tool calls;
- I2 also: prompt + completion keep reasoning blocks well formed: the completion never re-opens a block the
  prompt left open, never closes one twice or one that is not open, and never answers inside a block it
  leaves open (the generic path must not make the mistake on a template nobody described);
- I3 no position outside a turn's completion is labelled;
- I4 a sample starts only where the next prompt does not extend the previous sample;
- I5 every sample has labelled and unlabelled positions.

The checks it shares with the core (``invariants.py``) run on the samples it is handed; the prompts and tokens
they are checked against are its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .conversation import Conversation
from .core import Encoder, get_encoder
from .errors import ParityError, VerificationError, unexpected
from .families import Family
from .invariants import check_reasoning_blocks, check_rendered, check_stop, extends
from .options import EncodeOptions
from .text import first_token_difference
from .types import IGNORE_INDEX, Sample, TurnSpan


def verify(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    samples: Sequence[Sample],
    tools: list[dict[str, Any]] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    *,
    chat_template: str | None = None,
    family: str | Family | None = None,
    strict: bool = False,
    stop_strings: Sequence[str] | None = None,
    history_reasoning: str | None = None,
    arguments_policy: str | None = None,
    options: EncodeOptions | None = None,
    conversation_index: int | None = None,
) -> None:
    """Raise ``VerificationError`` naming the rule, turn and first differing token."""
    try:
        encoder = get_encoder(tokenizer, chat_template=chat_template, family=family, strict=strict,
                              stop_strings=stop_strings)
        options = EncodeOptions.of(options, history_reasoning=history_reasoning, arguments_policy=arguments_policy)
        _verify(encoder, encoder.conversation(messages, tools, chat_template_kwargs, options), samples)
    except ParityError as exc:
        raise exc.with_conversation(conversation_index) from None
    except Exception as exc:  # never a raw exception out of the public API
        raise unexpected(exc, conversation_index) from exc


def _verify(encoder: Encoder, conversation: Conversation, samples: Sequence[Sample]) -> None:
    messages = conversation.messages
    if not samples:
        raise VerificationError("no samples", rule="I5-zero-label")
    seen: set[int] = set()
    previous: Sample | None = None
    for number, sample in enumerate(samples):
        _check_shape(sample, number)
        for span in sample.turns:
            i = span.message_index
            if i in seen or not (0 <= i < len(messages)) or messages[i].role != "assistant":
                raise VerificationError(f"sample {number} claims message {i} as a trained turn", rule="I3-turns",
                                        message_index=i)
            seen.add(i)
            prompt = conversation.generation_prompt(i)
            prompt_ids = encoder.tokens.encode_whole(prompt)
            _check_prefix(encoder, sample.input_ids[: span.label_start], prompt_ids, number, i)
            _check_completion(encoder, sample, span, number)
            check_stop(span.completion_text, encoder.stop_strings, i)
            check_rendered(span.completion_text, messages[i], i)
            check_reasoning_blocks(prompt, span.completion_text, encoder.family.reasoning_tags, i)
            if span is sample.turns[0] and previous is not None and extends(prompt_ids, previous.input_ids):
                raise VerificationError(
                    f"sample {number} starts a new sample although turn {i}'s prompt extends sample {number - 1}",
                    rule="I4-fewest-samples", message_index=i,
                )
        previous = sample


def _check_shape(sample: Sample, number: int) -> None:
    if len(sample.input_ids) != len(sample.labels):
        raise VerificationError(f"sample {number}: input_ids and labels differ in length", rule="shape")
    labelled = {k for k, label in enumerate(sample.labels) if label != IGNORE_INDEX}
    if not labelled:
        raise VerificationError(f"sample {number} has no labelled token", rule="I5-zero-label")
    if len(labelled) == len(sample.labels):
        raise VerificationError(f"sample {number} labels every token", rule="I5-all-label")
    spans: set[int] = set()
    for span in sample.turns:
        spans.update(range(span.label_start, span.label_end))
    if labelled != spans:
        stray = sorted(labelled - spans)[:5] or sorted(spans - labelled)[:5]
        raise VerificationError(
            f"sample {number}: labelled positions differ from the turns' completions (e.g. positions {stray})",
            rule="I3-nothing-else-labelled",
        )
    for k in labelled:
        if sample.labels[k] != sample.input_ids[k]:
            raise VerificationError(f"sample {number}: label at {k} is not the input token", rule="I2-labels")


def _check_prefix(encoder: Encoder, actual: list[int], expected: list[int], number: int, i: int) -> None:
    if actual == expected:
        return
    at = first_token_difference(actual, expected)
    raise VerificationError(
        f"sample {number}: the tokens before turn {i}'s labels are not its inference prompt "
        f"({len(actual)} vs {len(expected)} tokens); first difference at token {at}: "
        f"sample has {encoder.tokens.decode(actual[max(0, at - 5):at + 5])!r}, "
        f"inference has {encoder.tokens.decode(expected[max(0, at - 5):at + 5])!r}",
        rule="I1-inference-prefix",
        message_index=i,
    )


def _check_completion(encoder: Encoder, sample: Sample, span: TurnSpan, number: int) -> None:
    i = span.message_index
    labels = sample.labels[span.label_start:span.label_end]
    if labels != encoder.tokens.encode_whole(span.completion_text):
        raise VerificationError(
            f"sample {number}: turn {i}'s labels are not the tokens of its completion "
            f"{span.completion_text[:60]!r}", rule="I2-generated-tokens", message_index=i,
        )
