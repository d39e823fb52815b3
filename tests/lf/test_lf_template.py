"""The registered parity templates: names, the tokenizer left alone, and the pair encodings LLaMA-Factory's
``Template`` interface returns."""

from __future__ import annotations

import sys

import pytest
from lf_helpers import (
    LLAMA_COMPLETIONS,
    LLAMA_ROWS,
    QWEN_COMPLETIONS,
    QWEN_ROWS,
    expected_turns,
    fixture,
    inference_messages,
    load_tokenizer,
    require_llamafactory,
    unset_env,
)

require_llamafactory()

from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.hparams import DataArguments  # noqa: E402

import swift_ext  # noqa: E402
from swift_ext.errors import ParityError  # noqa: E402
from swift_ext.llamafactory import ENV_VAR, configure, parity_template_names, register  # noqa: E402
from swift_ext.llamafactory.template import ParityTemplate, pairs_to_row  # noqa: E402

QWEN = "Qwen__Qwen3.6-35B-A3B"
LLAMA = "meta-llama__Llama-3.1-8B-Instruct"


@pytest.fixture(autouse=True)
def _options(monkeypatch):
    unset_env(monkeypatch, ENV_VAR)
    yield


def _fresh_tokenizer(name):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(fixture(name)))


def test_every_family_and_hf_parity_is_registered_once():
    names = register()
    assert names == parity_template_names()
    assert {f.name + "_parity" for f in swift_ext.list_families()} | {"hf_parity"} == set(names)
    assert {"qwen3_6_parity", "llama3_parity", "hf_parity"} <= set(names)
    for name in names:
        assert isinstance(TEMPLATES[name], ParityTemplate)
        assert TEMPLATES[name].parity_name == name
    assert TEMPLATES["hf_parity"].parity_family is None
    assert TEMPLATES["qwen3_6_parity"].parity_family == "qwen3_6"
    assert register() == names  # idempotent


@pytest.mark.parametrize("name, template", [(QWEN, "qwen3_6_parity"), (LLAMA, "llama3_parity")])
def test_tokenizer_keeps_its_chat_template_and_vocabulary(name, template):
    tokenizer = _fresh_tokenizer(name)
    chat_template, vocab, eos = tokenizer.chat_template, len(tokenizer), tokenizer.eos_token
    got = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=template))
    assert isinstance(got, ParityTemplate)
    assert tokenizer.chat_template == chat_template  # fix_jinja_template left it alone
    assert len(tokenizer) == vocab and tokenizer.eos_token == eos  # no token added or replaced
    assert tokenizer.pad_token_id is not None


def test_a_tokenizer_without_chat_template_is_refused():
    tokenizer = _fresh_tokenizer(LLAMA)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="own chat template"):
        get_template_and_fix_tokenizer(tokenizer, DataArguments(template="llama3_parity"))


def _lf_messages(row):
    """A conversation in LLaMA-Factory's aligned form (user/assistant, system apart)."""
    messages = [m for m in row["messages"] if m["role"] != "system"]
    system = next((m["content"] for m in row["messages"] if m["role"] == "system"), "")
    return [{"role": m["role"], "content": m["content"]} for m in messages], system


def test_encode_multiturn_pairs_rebuild_the_sample():
    tokenizer = load_tokenizer(LLAMA)
    messages, system = _lf_messages(LLAMA_ROWS[0])
    pairs = TEMPLATES["llama3_parity"].encode_multiturn(tokenizer, messages, system, "")
    assert len(pairs) == 2 and all(source and target for source, target in pairs)
    (sample,) = swift_ext.encode(tokenizer, LLAMA_ROWS[0]["messages"], family="llama3")
    assert pairs_to_row(pairs) == (sample.input_ids, sample.labels)
    oracle = expected_turns(tokenizer, LLAMA_ROWS[:1], LLAMA_COMPLETIONS[:1])
    assert [target for _, target in pairs] == [generated for _, generated in oracle]
    assert pairs[0][0] == oracle[0][0]


def test_encode_multiturn_refuses_a_conversation_that_needs_several_samples():
    tokenizer = load_tokenizer(QWEN)
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nAdd.\n</think>\n\n4"},
        {"role": "user", "content": "And times 3?"},
        {"role": "assistant", "content": "<think>\nMultiply.\n</think>\n\n12"},
    ]
    with pytest.raises(ParityError, match="needs 2 samples") as caught:
        TEMPLATES["qwen3_6_parity"].encode_multiturn(tokenizer, messages, "", "")
    assert caught.value.rule == "lf-several-samples"


def test_encode_oneturn_is_the_last_turns_prompt_and_completion():
    tokenizer = load_tokenizer(QWEN)
    row = QWEN_ROWS[0]
    messages, system = _lf_messages(row)
    messages[-1]["content"] = "<think>\nMultiply 4 by 3.\n</think>\n\n12"
    messages[1]["content"] = "<think>\nAdd two and two.\n</think>\n\n4"
    template = TEMPLATES["qwen3_6_parity"]
    prompt, response = template.encode_oneturn(tokenizer, messages, system, "")
    oracle = expected_turns(tokenizer, [row], [{4: QWEN_COMPLETIONS[0][4]}])
    assert (prompt, response) == oracle[0]
    # An empty last answer (LLaMA-Factory's chat and predict paths): the generation prompt only.
    prompt, response = template.encode_oneturn(tokenizer, [*messages[:-1], {"role": "assistant", "content": ""}],
                                               system, "")
    assert response == []
    assert prompt == oracle[0][0]


def test_generation_prompt_honours_chat_template_kwargs():
    tokenizer = load_tokenizer(QWEN)
    configure(chat_template_kwargs={"enable_thinking": False})
    conversation = inference_messages(QWEN_ROWS[2]["messages"])[:3]
    prompt = TEMPLATES["qwen3_6_parity"].generation_prompt_ids(tokenizer, [
        {"role": m["role"], "content": m["content"]} for m in conversation
    ])
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False,
                                         enable_thinking=False)
    assert prompt == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(prompt).endswith("<think>\n\n</think>\n\n")


def test_stop_token_ids_and_modelfile():
    tokenizer = load_tokenizer(QWEN)
    template = TEMPLATES["qwen3_6_parity"]
    ids = template.get_stop_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    modelfile = template.get_ollama_modelfile(tokenizer)
    assert "TEMPLATE" not in modelfile.split("\n", 1)[1] and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_family_option_must_agree_with_the_template():
    configure(family="llama3")
    with pytest.raises(ValueError, match="qwen3_6"):
        TEMPLATES["qwen3_6_parity"].encode_samples(load_tokenizer(QWEN), *(_lf_messages(QWEN_ROWS[2])))


def test_torchaudio_is_real_or_a_placeholder_that_explains_itself():
    """On CPU machines torchaudio is missing or broken; LLaMA-Factory then imports through a placeholder."""
    from swift_ext.llamafactory._compat import _placeholder

    placeholder = _placeholder("torchaudio is not installed")
    with pytest.raises(ImportError, match="text only"):
        placeholder.load("speech.wav")
    torchaudio = sys.modules["torchaudio"]  # LLaMA-Factory imported it through register()
    if getattr(torchaudio, "__swift_ext_placeholder__", False):
        with pytest.raises(ImportError, match="torchaudio"):
            _ = torchaudio.functional
    else:
        assert callable(torchaudio.load)
