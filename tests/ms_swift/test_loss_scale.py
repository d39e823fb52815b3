"""``--loss_scale`` on exact tokens: every strategy of ms-swift 4.6, chains, a user's own, and ``parity_spans``.

The expectation is built here from ms-swift's own split, independently of swift-ext's mapping: for each trained
turn, ``get_loss_scale(strategy).get_loss_scale(completion_text)`` gives ms-swift's segments and weights; each
character gets its segment's weight, each token the largest weight of the characters it covers (the tokenizer's
own offsets), every prompt token 0. The token ids must be those of ``--loss_scale default``.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from swift_helpers import build_tokenizer_dir, fixture, load_tokenizer, require_swift

require_swift()

import swift_ext  # noqa: E402
import swift_ext.ms_swift as ms  # noqa: E402

ms.register()

from swift.loss_scale import LossScale, get_loss_scale, loss_scale_map  # noqa: E402
from swift.model import get_model_processor  # noqa: E402
from swift.template import get_template  # noqa: E402

CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = {"type": "function",
           "function": {"name": "get_weather", "description": "Weather for a city.", "parameters": CITY}}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
# fixture, template, chat_template_kwargs, conversations
CASES = {
    "qwen3": ("qwen3", "qwen3_parity", {}, [
        [{"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4.", "reasoning_content": "Two and two."}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],  # empty think block
    ]),
    "qwen3_6": ("qwen3_6", "qwen3_6_parity", {"enable_thinking": True}, [
        [{"role": "user", "content": "Weather in Oslo?"},
         {"role": "assistant", "content": "", "reasoning_content": "Use the tool.", "tool_calls": [CALL]},
         {"role": "tool", "content": "Cold."},
         {"role": "assistant", "content": "It is cold.", "reasoning_content": "Tool says cold."}],
    ]),
    "gemma4": ("gemma4", "gemma4_parity", {"enable_thinking": True}, [
        [{"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4.", "reasoning_content": "Two and two."}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}],
    ]),
    "gpt_oss": ("gpt_oss", "gpt_oss_parity", {}, [
        [{"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello there.", "reasoning_content": "Greet."}],
    ]),
    "glm4_7": ("glm4_7", "glm4_7_parity", {}, [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
         {"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [CALL]}],
    ]),
}
STRATEGIES = ["ignore_empty_think", "ignore_think_prefix", "hermes", "qwen", "react", "agentflan", "alpha_umi",
              "last_round+hermes+ignore_empty_think", "hermes+ignore_empty_think"]


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            fixture(name)
            folder = build_tokenizer_dir(name, tmp_path_factory.mktemp(name))
            cache[name] = get_model_processor(str(folder), load_model=False, model_type="qwen3")[1]
        return cache[name]

    return get


def _template(processor, name, loss_scale, **kwargs):
    template = get_template(processor, template_type=name, loss_scale=loss_scale, template_backend="jinja", **kwargs)
    template.set_mode("train")
    return template


def _row(messages, kwargs):
    row = {"messages": json.loads(json.dumps(messages))}
    row["tools"] = [WEATHER] if any(m.get("tool_calls") for m in messages) else None
    if kwargs:
        row["chat_template_kwargs"] = dict(kwargs)
    return row


def _encoded(template, row):
    out = template.encode(row)
    return out if isinstance(out, list) else [out]


def _expected_weights(tok, core_sample, strategy: str):
    """Per-token weights from ms-swift's own split of each turn's completion (see the module doc)."""
    names = strategy.split("+")
    base = names[0] if names[0] in ("default", "last_round", "all") else "default"
    rest = "+".join(n for n in names if n not in ("default", "last_round", "all")) or "base"
    splitter = get_loss_scale(rest)
    weights = [0.0] * len(core_sample.input_ids)
    for turn in core_sample.turns:
        segments, scales = splitter.get_loss_scale(turn.completion_text)
        chars = [s for seg, s in zip(segments, scales) for _ in seg]
        assert len(chars) == len(turn.completion_text)
        offsets = tok(turn.completion_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        assert len(offsets) == turn.label_end - turn.label_start
        for k, (a, b) in zip(range(turn.label_start, turn.label_end), offsets):
            weights[k] = max(chars[a:b]) if b > a else chars[a]
    weights[0] = 0.0
    return weights, base


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", list(CASES))
def test_strategy_weights_exact_tokens_as_ms_swift_splits(processors, case, strategy):
    name, template_name, kwargs, conversations = CASES[case]
    processor = processors(name)
    tok = load_tokenizer(name)
    default = _template(processor, template_name, "default")
    weighted = _template(processor, template_name, strategy)
    for messages in conversations:
        row = _row(messages, kwargs)
        core = swift_ext.encode(tok, messages, row["tools"], kwargs)
        if strategy.startswith("last_round"):
            last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
            core = swift_ext.encode(tok, [dict(m, loss=False) if m["role"] == "assistant" and i < last_user else m
                                          for i, m in enumerate(messages)], row["tools"], kwargs)
        plain, scaled = _encoded(default, row), _encoded(weighted, row)
        if not strategy.startswith("last_round"):  # the tokens never change (last_round trains fewer turns)
            assert [e["input_ids"] for e in scaled] == [e["input_ids"] for e in plain]
        assert [e["input_ids"] for e in scaled] == [s.input_ids for s in core]
        for sample, encoded in zip(core, scaled):
            expected, _ = _expected_weights(tok, sample, strategy)
            labels = encoded["labels"]
            got = encoded.get("loss_scale")
            if got is None:  # a binary strategy: the weights are the labels (ms-swift's is_binary path)
                assert weighted.loss_scale.is_binary_loss_scale
                assert [1.0 if x != -100 else 0.0 for x in labels] == expected
            else:
                assert list(got) == pytest.approx(expected)
                assert [x != -100 for x in labels] == [w > 0 for w in expected]
            assert all(expected[k] == 0 for k in range(sample.turns[0].label_start))  # prompt tokens: none


def test_ignore_empty_think_zeroes_qwen3s_empty_block(processors):
    """The point of ignore_empty_think: Qwen3's '<think>\\n\\n</think>\\n\\n' is not trained; the answer is."""
    tok = load_tokenizer("qwen3")
    template = _template(processors("qwen3"), "qwen3_parity", "ignore_empty_think")
    (encoded,) = _encoded(template, _row(CASES["qwen3"][3][1], {}))
    trained = tok.decode([x for x in encoded["labels"] if x != -100])
    assert trained == "Hello.<|im_end|>" and encoded.get("loss_scale") is None


def test_per_message_loss_scale_wins(processors):
    tok = load_tokenizer("qwen3")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello.", "loss_scale": 3.0}]
    (encoded,) = _encoded(_template(processors("qwen3"), "qwen3_parity", "hermes"), {"messages": messages})
    (sample,) = swift_ext.encode(tok, messages)
    span = sample.turns[0]
    assert encoded["input_ids"] == sample.input_ids
    assert encoded["loss_scale"][span.label_start:span.label_end] == [3.0] * (span.label_end - span.label_start)


def test_all_trains_every_token_and_says_so(processors, caplog):
    caplog.set_level(logging.INFO)
    from swift_ext.ms_swift import state

    state._LOGGED.discard("loss-scale-all-qwen3_parity")  # once per process: make this test's the first time
    _template(processors("qwen3"), "qwen3_parity", "all")  # a second template: still one warning
    tok = load_tokenizer("qwen3")
    messages = CASES["qwen3"][3][0]
    template = _template(processors("qwen3"), "qwen3_parity", "all")
    (encoded,) = _encoded(template, {"messages": messages})
    (sample,) = swift_ext.encode(tok, messages)
    assert encoded["input_ids"] == sample.input_ids
    assert encoded["labels"][1:] == sample.input_ids[1:]  # every token but the first (nothing predicts it)
    warned = [r for r in caplog.records if "every token is trained, prompt tokens included" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING


def test_a_users_own_loss_scale(processors):
    """A LossScale subclass a user registers in loss_scale_map from a plugin: weight 0.25 on every 'e'."""

    class Vowels(LossScale):
        is_binary = False

        def get_loss_scale(self, context, **kwargs):
            parts = [c for c in context]
            return parts, [0.25 if c == "e" else 1.0 for c in parts]

    loss_scale_map["test_vowels"] = Vowels
    try:
        tok = load_tokenizer("qwen3")
        messages = CASES["qwen3"][3][1]
        (encoded,) = _encoded(_template(processors("qwen3"), "qwen3_parity", "test_vowels"), {"messages": messages})
        (sample,) = swift_ext.encode(tok, messages)
        expected, _ = _expected_weights(tok, sample, "test_vowels")
        assert encoded["input_ids"] == sample.input_ids and list(encoded["loss_scale"]) == pytest.approx(expected)
    finally:
        del loss_scale_map["test_vowels"]


def test_parity_spans_weights_by_kind(processors, monkeypatch):
    monkeypatch.setenv("SWIFT_EXT_SPAN_WEIGHTS", json.dumps({"reasoning": 0.5, "tool_call": 2.0,
                                                              "empty_reasoning": 0}))
    tok = load_tokenizer("qwen3_6")
    name, template_name, kwargs, (messages,) = CASES["qwen3_6"]
    encoded = _encoded(_template(processors(name), template_name, "parity_spans"), _row(messages, kwargs))
    core = swift_ext.encode(tok, messages, [WEATHER], kwargs)
    assert [e["input_ids"] for e in encoded] == [s.input_ids for s in core]
    weight = {"reasoning": 0.5, "tool_call": 2.0, "empty_reasoning": 0.0}
    for sample, e in zip(core, encoded):
        for turn in sample.turns:
            offsets = tok(turn.completion_text, add_special_tokens=False, return_offsets_mapping=True)[
                "offset_mapping"]
            chars = [0.0] * len(turn.completion_text)
            for part in turn.parts:
                chars[part.start:part.end] = [weight.get(part.kind, 1.0)] * (part.end - part.start)
            want = [max(chars[a:b]) for a, b in offsets]
            assert list(e["loss_scale"][turn.label_start:turn.label_end]) == pytest.approx(want)
            kinds = {p.kind for p in turn.parts}
            assert "reasoning" in kinds and ("tool_call" in kinds or "answer" in kinds)


def test_parity_spans_outside_a_parity_template_is_refused():
    from swift_ext.ms_swift.loss_scale import ParitySpansLossScale

    with pytest.raises(ValueError, match="needs a \\*_parity template"):
        ParitySpansLossScale().get_loss_scale("text")


def test_bad_span_weights_are_one_clear_error(processors, monkeypatch):
    monkeypatch.setenv("SWIFT_EXT_SPAN_WEIGHTS", '{"thoughts": 2}')
    with pytest.raises(swift_ext.PolicyError) as info:
        _template(processors("qwen3"), "qwen3_parity", "parity_spans")
    assert info.value.rule == "policy-span-weights" and "unknown kinds ['thoughts']" in str(info.value)


@pytest.mark.parametrize("strategy", ["hermes", "last_round+hermes+ignore_empty_think"])
def test_inspect_shows_the_weights_ms_swift_trains(tmp_path, capsys, strategy):
    """``swift-ext inspect --loss-scale``: the page's per-token weights are the template's ``loss_scale``."""
    from swift_ext.cli import main

    name, template_name, kwargs, (messages,) = CASES["glm4_7"]
    row = _row(messages, kwargs)
    data = tmp_path / "row.jsonl"
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    page = tmp_path / "page.html"
    assert main(["inspect", f"fixture:{name}", str(data), "--loss-scale", strategy, "--html", str(page)]) == 0
    assert "loss weights" in capsys.readouterr().out
    encoded = _encoded(_template(get_model_processor(str(build_tokenizer_dir(name, tmp_path / "m")),
                                                     load_model=False, model_type="qwen3")[1],
                                 template_name, strategy), row)
    text = page.read_text(encoding="utf-8")
    for n, e in enumerate(encoded):
        div = re.search(rf'<div class="tokens" data-sample="{n}".*?</div>', text, re.S).group(0)
        shown = [float(w) for w in re.findall(r'data-weight="([^"]+)"', div)]
        weights = e.get("loss_scale") or [0.0 if x == -100 else 1.0 for x in e["labels"]]
        assert shown[1:] == pytest.approx(list(weights)[1:])  # ms-swift never trains position 0
