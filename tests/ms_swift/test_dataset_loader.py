"""``Template.encode`` of the parity templates through ms-swift's real dataset loader: reasoning_content and
tool_calls reach the template intact, every sample of a conversation survives in lazy and pre-tokenized mode,
--max_length / --truncation_strategy / --loss_scale keep their meaning, and the swift backend is rerouted."""

from __future__ import annotations

import json
import logging

import pytest
from swift_helpers import ROWS, build_tokenizer_dir, load_tokenizer, require_swift

require_swift()

import swift_ext  # noqa: E402
import swift_ext.ms_swift as ms  # noqa: E402

ms.register()

from swift.dataset import AddLengthPreprocessor, EncodePreprocessor, LazyLLMDataset, load_dataset  # noqa: E402
from swift.model import get_model_processor  # noqa: E402
from swift.template import get_template  # noqa: E402

FIXTURE = "Qwen__Qwen3.6-35B-A3B"


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    model_dir = build_tokenizer_dir(FIXTURE, tmp_path_factory.mktemp("q36"))
    return get_model_processor(str(model_dir), load_model=False, model_type="qwen3")[1]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return path


def _template(processor, **kwargs):
    kwargs.setdefault("template_backend", "jinja")
    template = get_template(processor, template_type="qwen3_6_parity", **kwargs)
    template.set_mode("train")
    return template


def _core_samples(tok):
    """What the core makes of the user's raw rows (the expected training set)."""
    out = []
    for row in ROWS:
        for s in swift_ext.encode(tok, row["messages"], tools=row.get("tools")):
            out.append((tuple(s.input_ids), tuple(s.labels)))
    return out


def _load(data_file):
    train, _ = load_dataset([str(data_file)], split_dataset_ratio=0.0, load_from_cache_file=False)
    return train


def _pairs(items):
    return sorted((tuple(e["input_ids"]), tuple(e["labels"])) for e in items)


def test_loader_keeps_reasoning_and_tool_calls_and_every_sample(processor, data_file):
    template = _template(processor)
    train = _load(data_file)
    tok = load_tokenizer(FIXTURE)
    expected = _core_samples(tok)
    # one row per sample (the first conversation needs two: Qwen3.6 rewrites history at each user query)
    assert len(train) == len(expected) == 4
    assert "swift_ext_messages" in train.column_names and "swift_ext_sample" in train.column_names

    # lazy mode: LazyLLMDataset over the loaded rows (--lazy_tokenize true)
    lazy = LazyLLMDataset(train, template.encode, strict=True)
    lazy_items = [lazy[i] for i in range(len(lazy))]
    assert all(isinstance(e, dict) for e in lazy_items)
    assert _pairs(lazy_items) == sorted(expected)

    # pre-tokenized mode: AddLengthPreprocessor then LazyLLMDataset, as `swift sft` does
    with_lengths = AddLengthPreprocessor(template=template)(train, load_from_cache_file=False, strict=True)
    assert len(with_lengths) == len(expected)
    pre = LazyLLMDataset(with_lengths, template.encode, strict=True)
    assert _pairs(pre[i] for i in range(len(pre))) == sorted(expected)

    # streaming / split mode: EncodePreprocessor keeps lists too
    encoded = EncodePreprocessor(template=template)(train, load_from_cache_file=False, strict=True)
    assert _pairs(encoded) == sorted(expected)

    # the reasoning and the tool call reached the labels
    labelled = "".join(tok.decode([t for t in e["labels"] if t != -100]) for e in lazy_items)
    for text in ("I should call the tool.", "<function=get_weather>", "The tool says 22.", "French for hi."):
        assert text in labelled
    assert "Hi!" not in labelled  # loss: false


def test_grpo_prompt_rows_pass_the_data_hook(processor, tmp_path):
    """GRPO puts the template in train mode too: its prompt-only rows must reach the trainer, unexpanded."""
    rows = [{"messages": [{"role": "user", "content": "What is five plus five?"}], "solution": "10"},
            {"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Weather in Paris?"}], "tools": ROWS[0]["tools"]}]
    path = tmp_path / "grpo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    template = _template(processor)
    assert ms.state.active_training_template() is template  # the data hook is on
    train = _load(path)
    assert len(train) == 2
    assert [m["content"] for m in train[1]["messages"]] == ["Be brief.", "Weather in Paris?"]
    if "swift_ext_sample" in train.column_names:
        assert train["swift_ext_sample"] == [None, None]


def test_encode_returns_every_sample_as_a_list(processor):
    template = _template(processor)
    encoded = template.encode(ROWS[0])
    assert isinstance(encoded, list) and len(encoded) == 2


def test_inference_prompt_is_the_generation_prompt(processor):
    template = get_template(processor, template_type="qwen3_6_parity", template_backend="jinja")
    template.set_mode("transformers")
    tok = load_tokenizer(FIXTURE)
    row = ROWS[0]
    messages = json.loads(json.dumps(row["messages"][:4]))
    encoded = template.encode({"messages": messages, "tools": row["tools"]})
    for call in messages[2]["tool_calls"]:  # Qwen3.6's template iterates the arguments: give it the mapping
        call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    prompt = tok.apply_chat_template(messages, tools=row["tools"], tokenize=False, add_generation_prompt=True)
    assert encoded["input_ids"] == tok(prompt, add_special_tokens=False)["input_ids"]


def test_swift_backend_uses_the_parity_path(processor, caplog):
    jinja = _template(processor).encode(ROWS[1])
    swift = _template(processor, template_backend="swift").encode(ROWS[1])
    assert swift["input_ids"] == jinja["input_ids"] and swift["labels"] == jinja["labels"]


def test_max_length_drops_samples_that_lose_every_label(processor):
    tok = load_tokenizer(FIXTURE)
    row = ROWS[2]
    (sample,) = swift_ext.encode(tok, row["messages"])
    first_label = next(i for i, x in enumerate(sample.labels) if x != -100)
    # right truncation keeping only the prompt: no label left -> reported and dropped (ms-swift skips the row)
    template = _template(processor, max_length=first_label - 1, truncation_strategy="right")
    with pytest.raises(ms.truncation.ParitySampleDropped):
        template.encode(row)
    assert template.parity_report()["counts"]["dropped"] == 1
    # right truncation keeping some labels: trained, cut to max_length
    template = _template(processor, max_length=first_label + 2, truncation_strategy="right")
    encoded = template.encode(row)
    assert len(encoded["input_ids"]) == first_label + 2
    assert sum(x != -100 for x in encoded["labels"]) == 2
    # --truncation_strategy delete ('raise'): over-long samples are dropped, never trained
    template = _template(processor, max_length=len(sample) - 1, truncation_strategy="raise")
    with pytest.raises(ms.truncation.ParitySampleDropped):
        template.encode(row)


def test_loss_scale_options(processor):
    tok = load_tokenizer(FIXTURE)
    with pytest.raises(swift_ext.PolicyError, match="no loss scale named \\['hermess'\\]"):  # a typo
        _template(processor, loss_scale="last_round+hermess")
    # last_round: only the assistant turns after the last user message are trained
    encoded = _template(processor, loss_scale="last_round").encode(ROWS[0])
    encoded = encoded if isinstance(encoded, list) else [encoded]
    labelled = "".join(tok.decode([t for t in e["labels"] if t != -100]) for e in encoded)
    assert "Polite reply." in labelled and "22" not in labelled
    # per-message loss_scale is carried to ms-swift's loss_scale (non-binary mode)
    row = {"messages": [{"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello", "loss_scale": 0.5}]}
    encoded = _template(processor, is_binary_loss_scale=False).encode(row)
    scales = {s for s, label in zip(encoded["loss_scale"], encoded["labels"]) if label != -100}
    assert scales == {0.5}


def test_hf_parity_detects_the_family(processor):
    template = get_template(processor, template_type="hf_parity", template_backend="jinja")
    assert template.parity_family_name == "qwen3_6"
    assert template._agent_template == "qwen3_6_parity"


def test_every_family_is_registered():
    from swift.template import TEMPLATE_MAPPING

    names = {f.parity_template for f in swift_ext.list_families()} | {"hf_parity"}
    required = {"qwen3_parity", "qwen3_thinking_parity", "qwq_parity", "qwen3_coder_parity", "qwen3_5_parity",
                "qwen3_6_parity", "deepseek_r1_parity", "deepseek_v3_1_parity", "llama3_parity", "glm4_7_parity",
                "gpt_oss_parity", "gemma3_parity", "gemma4_parity", "kimi_k2_parity", "hf_parity"}
    assert required <= names <= set(TEMPLATE_MAPPING)
    from swift.template import Template

    from swift_ext.ms_swift.template import ParityTemplateMixin

    # _jinja_encode is the parity one; _encode stays ms-swift's (GRPO's rollout calls Template._encode)
    assert "_encode" not in vars(ParityTemplateMixin)
    for name in names:
        cls = TEMPLATE_MAPPING[name].template_cls
        assert issubclass(cls, ParityTemplateMixin) and issubclass(cls, Template)
        assert cls._jinja_encode is ParityTemplateMixin._jinja_encode
    # model-specific behaviour is kept by subclassing ms-swift's class for the family
    assert issubclass(TEMPLATE_MAPPING["qwen3_5_parity"].template_cls, TEMPLATE_MAPPING["qwen3_5"].template_cls)
    assert issubclass(TEMPLATE_MAPPING["glm4_7_parity"].template_cls, TEMPLATE_MAPPING["glm4_7"].template_cls)
    assert issubclass(TEMPLATE_MAPPING["gemma4_parity"].template_cls, TEMPLATE_MAPPING["gemma4"].template_cls)


logging.getLogger("swift").setLevel(logging.INFO)


def test_token_backed_rollout_turns(processor):
    """GRPO hands rollouts over as token ids: they are labelled as they are, after the exact generation prompt."""
    tok = load_tokenizer(FIXTURE)
    user = [{"role": "user", "content": "Say hi."}]
    rollout = tok("<think>\nok\n</think>\n\nHi there<|im_end|>", add_special_tokens=False)["input_ids"]
    row = {"messages": user + [{"role": "assistant", "content": {"token_ids": rollout}}]}
    encoded = _template(processor).encode(row)
    prompt = tok(tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    assert encoded["input_ids"] == prompt + rollout
    assert encoded["labels"] == [-100] * len(prompt) + rollout
