"""Every ParityError survives pickling unchanged: datasets' ``num_proc`` and process pools send errors back
from their workers that way, and the rule is what tools group failures by."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

import swift_ext.rollout  # noqa: F401  (registers RolloutAlignmentError as a ParityError subclass)
from swift_ext.errors import (
    InputError,
    ParityError,
    PolicyError,
    ReasoningDroppedError,
    TemplateRenderError,
    UnknownFamilyError,
    VerificationError,
)
from swift_ext.messages import parse_messages
from swift_ext.rollout.diagnose import RolloutAlignmentError, alignment_error

KNOWN = [ParityError, InputError, TemplateRenderError, ReasoningDroppedError, UnknownFamilyError, PolicyError,
         VerificationError, RolloutAlignmentError]


def _all_subclasses(cls: type) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += [c for c in _all_subclasses(sub) if c not in found]
    return found


ERROR_CLASSES = _all_subclasses(ParityError)


def _make(cls: type[ParityError], **where) -> ParityError:
    if cls is RolloutAlignmentError:  # built by its own helper, with its required rule and extra fields
        return alignment_error(rule="rollout-turn-length", headline="turn 1 holds fewer tokens than sampled",
                               turn=1, message_index=where.get("message_index"), consumed=7, expected=9, position=3,
                               cause="dropped-token", because="one id is missing")
    return cls("the detail: a message the user reads", rule="test-rule", **where)


def _same(a: ParityError, b: ParityError) -> None:
    assert type(b) is type(a)
    assert (b.rule, b.detail, b.conversation_index, b.message_index) == (
        a.rule, a.detail, a.conversation_index, a.message_index)
    assert str(b) == str(a)
    assert b.args == a.args
    assert vars(b) == vars(a)


def test_every_subclass_is_covered():
    assert set(KNOWN) <= set(ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_round_trips_through_pickle(cls):
    error = _make(cls, message_index=2)
    for protocol in range(pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL + 1):
        _same(error, pickle.loads(pickle.dumps(error, protocol=protocol)))


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_relabelled_error_round_trips_through_pickle(cls):
    """``with_conversation`` (what ``encode`` does with ``conversation_index``) rewrites the message: kept too."""
    error = _make(cls, message_index=4).with_conversation(17)
    assert "conversation 17" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    _same(error, copy)
    assert copy.with_conversation(3).conversation_index == 17


@pytest.mark.parametrize("cls", [c for c in ERROR_CLASSES if c is not RolloutAlignmentError], ids=lambda c: c.__name__)
def test_class_default_rule_round_trips(cls):
    error = cls("no rule given")
    copy = pickle.loads(pickle.dumps(error))
    _same(error, copy)
    assert copy.rule == cls.rule
    assert str(copy) == f"[{cls.rule}] no rule given"


def test_rollout_alignment_error_keeps_its_diagnosis():
    error = _make(RolloutAlignmentError, message_index=5)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.turn, copy.consumed, copy.expected, copy.position, copy.cause, copy.fix) == (
        1, 7, 9, 3, "dropped-token", error.fix)
    assert copy.fix and "LIKELY CAUSE (dropped-token)" in str(copy)


def _parse_unknown_role(_: int) -> None:
    parse_messages([{"role": "user", "content": "hi"}, {"role": "narrator", "content": "meanwhile"}])


def test_error_from_a_process_pool_worker_is_the_workers_error():
    """Measured the way a user meets it: the exception a worker process raised, as the parent receives it."""
    with pytest.raises(InputError) as local:
        _parse_unknown_role(0)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with pytest.raises(InputError) as remote:
            pool.submit(_parse_unknown_role, 0).result()
    assert remote.value.rule == local.value.rule
    assert remote.value.message_index == local.value.message_index == 1
    assert str(remote.value) == str(local.value)
    assert not str(remote.value).startswith("[input] [")
