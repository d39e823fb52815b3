"""LLaMA-Factory's dataset pipeline (converter, processor, cutoff_len, mask_history, packing) with parity
templates builds rows whose every trained token sits after its exact inference prompt."""

from __future__ import annotations

import json

import pytest
from lf_helpers import (
    LLAMA_COMPLETIONS,
    LLAMA_ROWS,
    QWEN_COMPLETIONS,
    QWEN_ROWS,
    WEATHER_TOOL,
    assert_rows_match_oracle,
    direct_rows,
    expected_turns,
    labelled_runs,
    load_tokenizer,
    require_llamafactory,
    unset_env,
)

require_llamafactory()

from swift_ext.errors import ParityError  # noqa: E402
from swift_ext.llamafactory import ENV_VAR, configure  # noqa: E402

QWEN = "Qwen__Qwen3.6-35B-A3B"
LLAMA = "meta-llama__Llama-3.1-8B-Instruct"


@pytest.fixture(autouse=True)
def _options(monkeypatch):
    """Each test starts from the default options and leaves none behind."""
    unset_env(monkeypatch, ENV_VAR)
    yield


def _oracle(name, rows, completions):
    return expected_turns(load_tokenizer(name), rows, completions)


def test_several_samples_per_conversation_become_rows():
    """(The same through get_dataset, Arrow and datasets.map: test_lf_train_e2e.py.)"""
    rows, _ = direct_rows("qwen3_6_parity", load_tokenizer(QWEN), QWEN_ROWS)
    assert len(rows) == 4  # the two-query conversation needs two samples
    assert_rows_match_oracle(rows, _oracle(QWEN, QWEN_ROWS, QWEN_COMPLETIONS), load_tokenizer(QWEN))


def test_hf_parity_detects_the_family():
    rows, _ = direct_rows("hf_parity", load_tokenizer(QWEN), QWEN_ROWS)
    assert_rows_match_oracle(rows, _oracle(QWEN, QWEN_ROWS, QWEN_COMPLETIONS), load_tokenizer(QWEN))


def test_llama3_one_row_per_conversation():
    rows, _ = direct_rows("llama3_parity", load_tokenizer(LLAMA), LLAMA_ROWS)
    assert len(rows) == len(LLAMA_ROWS)
    assert_rows_match_oracle(rows, _oracle(LLAMA, LLAMA_ROWS, LLAMA_COMPLETIONS), load_tokenizer(LLAMA))


def test_mask_history_trains_the_last_turn_after_its_inference_prompt():
    rows, _ = direct_rows("qwen3_6_parity", load_tokenizer(QWEN), QWEN_ROWS, mask_history=True)
    assert len(rows) == len(QWEN_ROWS)
    assert all(len(labelled_runs(labels)) == 1 for _, labels in rows)
    last_only = [{max(c): c[max(c)]} for c in QWEN_COMPLETIONS]
    assert_rows_match_oracle(rows, _oracle(QWEN, QWEN_ROWS, last_only), load_tokenizer(QWEN))


def _turn_ends(name, row, completions):
    return [len(p) + len(c) for p, c in expected_turns(load_tokenizer(name), [row], [completions])]


def test_cutoff_len_keeps_whole_turns():
    first_end, second_end = _turn_ends(LLAMA, LLAMA_ROWS[0], LLAMA_COMPLETIONS[0])
    short_end = _turn_ends(LLAMA, LLAMA_ROWS[1], LLAMA_COMPLETIONS[1])[0]
    cutoff = (first_end + second_end) // 2
    assert short_end <= cutoff < second_end
    rows, _ = direct_rows("llama3_parity", load_tokenizer(LLAMA), LLAMA_ROWS[:2], cutoff_len=cutoff)
    assert sorted(len(ids) for ids, _ in rows) == sorted([first_end, short_end])
    kept = [{2: LLAMA_COMPLETIONS[0][2]}, LLAMA_COMPLETIONS[1]]
    assert_rows_match_oracle(rows, _oracle(LLAMA, LLAMA_ROWS[:2], kept), load_tokenizer(LLAMA))


def test_cutoff_len_drop_and_error():
    first_end, second_end = _turn_ends(LLAMA, LLAMA_ROWS[0], LLAMA_COMPLETIONS[0])
    cutoff = (first_end + second_end) // 2
    configure(truncation="drop")
    rows, _ = direct_rows("llama3_parity", load_tokenizer(LLAMA), LLAMA_ROWS[:2], cutoff_len=cutoff)
    assert len(rows) == 1
    assert_rows_match_oracle(rows, _oracle(LLAMA, LLAMA_ROWS[1:2], LLAMA_COMPLETIONS[1:2]), load_tokenizer(LLAMA))
    configure(truncation="error")
    with pytest.raises(ParityError, match="cutoff_len"):
        direct_rows("llama3_parity", load_tokenizer(LLAMA), LLAMA_ROWS[:2], cutoff_len=cutoff)


def test_neat_packing_packs_samples():
    _, out = direct_rows("qwen3_6_parity", load_tokenizer(QWEN), QWEN_ROWS, neat_packing=True, cutoff_len=4096)
    assert len(out["input_ids"]) == 1  # all four samples fit one pack
    samples = []
    for input_ids, labels, masks in zip(out["input_ids"], out["labels"], out["attention_mask"]):
        for segment in sorted(set(masks) - {0}):
            positions = [i for i, m in enumerate(masks) if m == segment]
            samples.append(([input_ids[i] for i in positions], [labels[i] for i in positions]))
    assert len(samples) == 4
    assert_rows_match_oracle(samples, _oracle(QWEN, QWEN_ROWS, QWEN_COMPLETIONS), load_tokenizer(QWEN))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"train_on_prompt": True}, "train_on_prompt"),
        ({"packing": True}, "neat_packing"),
    ],
)
def test_arguments_that_break_the_invariants_are_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        direct_rows("llama3_parity", load_tokenizer(LLAMA), LLAMA_ROWS, **arguments)


def test_rejected_conversation_raises_or_is_skipped():
    with_reasoning = {
        "messages": [
            {"role": "user", "content": "Why?"},
            {"role": "assistant", "reasoning_content": "Llama 3 renders no reasoning.", "content": "Because."},
        ]
    }
    data = [with_reasoning, LLAMA_ROWS[1]]
    with pytest.raises(ParityError, match="reasoning") as caught:
        direct_rows("llama3_parity", load_tokenizer(LLAMA), data)
    assert "Why?" in str(caught.value)  # the example is named
    configure(on_error="skip")
    rows, _ = direct_rows("llama3_parity", load_tokenizer(LLAMA), data)
    assert_rows_match_oracle(rows, _oracle(LLAMA, data[1:], LLAMA_COMPLETIONS[1:2]), load_tokenizer(LLAMA))


def test_sharegpt_rows_with_inline_reasoning_and_function_calls():
    """LLaMA-Factory's own sharegpt format: <think> inline, function_call / observation turns, tools as JSON."""
    conversation = QWEN_ROWS[1]["messages"]
    sharegpt = {
        "conversations": [
            {"from": "human", "value": conversation[0]["content"]},
            {
                "from": "function_call",
                "value": "<think>\nI need the weather tool.\n</think>\n\n"
                + json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}}),
            },
            {"from": "observation", "value": conversation[2]["content"]},
            {"from": "gpt", "value": "<think>\nReport it.\n</think>\n\nIt is 21 °C in Paris."},
        ],
        "tools": json.dumps([WEATHER_TOOL]),
    }
    rows, _ = direct_rows("qwen3_6_parity", load_tokenizer(QWEN), [sharegpt], formatting="sharegpt")
    assert_rows_match_oracle(rows, _oracle(QWEN, QWEN_ROWS[1:2], QWEN_COMPLETIONS[1:2]), load_tokenizer(QWEN))


def test_stock_templates_keep_stock_processing():
    from llamafactory.data import converter, loader
    from llamafactory.data.processor import SupervisedDatasetProcessor
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import DataArguments

    from swift_ext.llamafactory import register
    from swift_ext.llamafactory.processor import ParitySupervisedDatasetProcessor

    register()
    tokenizer = load_tokenizer(QWEN)
    stock = loader._get_dataset_processor(DataArguments(template="qwen3"), "sft", TEMPLATES["qwen3"], tokenizer, None)
    assert type(stock) is SupervisedDatasetProcessor
    parity = loader._get_dataset_processor(
        DataArguments(template="qwen3_6_parity"), "sft", TEMPLATES["qwen3_6_parity"], tokenizer, None
    )
    assert type(parity) is ParitySupervisedDatasetProcessor
    attr = type("Attr", (), {})()
    stock_converter = converter.get_dataset_converter("openai", attr, DataArguments(template="qwen3"))
    assert type(stock_converter).__name__ == "OpenAIDatasetConverter"
    with pytest.raises(ValueError, match="supports stage: sft"):
        loader._get_dataset_processor(
            DataArguments(template="qwen3_6_parity"), "rm", TEMPLATES["qwen3_6_parity"], tokenizer, None
        )


def test_span_weights_masks_a_kind_and_keeps_the_tokens():
    """``swift_ext.span_weights: {reasoning: 0}``: the same token ids as without it; each turn trains only what
    follows its reasoning block (the completions of the oracle, cut after ``</think>\\n\\n``)."""
    tok = load_tokenizer(QWEN)
    plain, _ = direct_rows("qwen3_6_parity", tok, QWEN_ROWS)
    configure(span_weights={"reasoning": 0})
    masked, _ = direct_rows("qwen3_6_parity", tok, QWEN_ROWS)
    assert [ids for ids, _ in masked] == [ids for ids, _ in plain]
    trained = [tok.decode(ids[a:b]) for ids, labels in masked for a, b in labelled_runs(labels)]
    after_reasoning = [c.split("</think>\n\n", 1)[1] for by_index in QWEN_COMPLETIONS for c in by_index.values()]
    assert sorted(trained) == sorted(after_reasoning)
    for (_, labels), (_, full) in zip(masked, plain):  # masking only ever removes labels
        assert all(label == -100 or label == other for label, other in zip(labels, full))


@pytest.mark.parametrize(("weights", "message"), [
    ({"reasoning": 0.5}, "a kind can only be masked \\(0\\) or trained \\(1\\)"),
    ({"thoughts": 0}, "unknown kinds \\['thoughts'\\]"),
    ({"answer": -1}, "not a finite number >= 0: \\['answer'\\]"),
])
def test_span_weights_other_than_0_or_1_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        configure(span_weights=weights)


def test_span_weights_that_mask_a_whole_sample_drop_it_and_say_so(caplog):
    configure(span_weights={kind: 0 for kind in ("reasoning", "answer", "tool_call", "stop", "other")})
    with caplog.at_level("WARNING", logger="swift_ext.llamafactory"):
        rows, _ = direct_rows("qwen3_6_parity", load_tokenizer(QWEN), QWEN_ROWS[:1])
    assert rows == []  # never a row trained at zero loss
    said = [r.getMessage() for r in caplog.records if "nothing left to train after span_weights" in r.getMessage()]
    assert len(said) == 2  # the conversation's two samples
