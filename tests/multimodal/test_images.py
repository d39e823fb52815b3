"""Qwen3.5 / Qwen3.6 / Gemma-4 parity templates with images, through ms-swift's own multimodal pipeline (media
loading, placeholder expansion, the model's processor), against the model's own Hugging Face processor.

For every trained turn: the tokens before its labels are the processor's output for the turn's generation prompt
with the images of ``messages[:i]``, its labels are exactly the generated tokens, and the sample that holds it
carries exactly its images (``pixel_values`` and ``image_grid_thw`` / Gemma-4's ``image_position_ids`` equal the
processor's), also when history rewriting splits the conversation into several samples. Gemma-4's tokenizer is
derived (Gemma-3's with Gemma-4's control strings, see swift_ext/dev/fixtures.py): token ids are not the real
model's; the template's text and the processor's expansion are."""

from __future__ import annotations

import base64
import copy
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mm_helpers import gradient, match_turns, oracle_turns, require_vision

require_vision()

import torch  # noqa: E402

import swift_ext.ms_swift as ms  # noqa: E402
from swift_ext.dev import testing, tiny  # noqa: E402
from swift_ext.errors import ParityError  # noqa: E402

ms.register()

from swift.dataset import AddLengthPreprocessor, LazyLLMDataset, load_dataset  # noqa: E402
from swift.model import get_model_processor  # noqa: E402
from swift.template import MaxLengthError, get_template  # noqa: E402

# fixture -> (parity template, tiny architecture = ms-swift --model_type, stop strings, chat template kwargs)
FAMILIES = {"qwen3_5": ("qwen3_5_parity", "qwen3_5", ("<|im_end|>",), {}),
            "qwen3_6": ("qwen3_6_parity", "qwen3_5", ("<|im_end|>",), {}),
            # Gemma-4 renders reasoning with thinking on only (off, the turns' reasoning is an error)
            "gemma4": ("gemma4_parity", "gemma4", ("<turn|>", "<|tool_response>"), {"enable_thinking": True})}
MEDIA_KEYS = ("pixel_values", "image_grid_thw", "image_position_ids")
"""What the processors return for images (Qwen: patches and grids; Gemma-4: patches and their positions)."""


_BUILT: dict = {}


def _build(fixture_name, tmp_path_factory):
    """(template name, ms-swift processor) of a tiny random Qwen3.5-architecture VL model built from the
    fixture's tokenizer, with processor configs written beside it (once per module run)."""
    if fixture_name not in _BUILT:
        testing.fixture_dir(fixture_name)
        name, arch, stops, kwargs = FAMILIES[fixture_name]
        folder = tiny.build_tiny_vl_model(fixture_name, tmp_path_factory.mktemp(fixture_name), arch)
        processor = get_model_processor(str(folder), load_model=False, model_type=arch)[1]
        _BUILT[fixture_name] = (name, processor, stops, kwargs)
    return _BUILT[fixture_name]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request, tmp_path_factory):
    return _build(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def qwen3_6(tmp_path_factory):
    """The loader path is the same code for both families: it runs on Qwen3.6 only (CI time)."""
    return _build("qwen3_6", tmp_path_factory)


def _template(model, **kwargs):
    name, processor, _, chat_kwargs = model
    template = get_template(processor, template_type=name, template_backend="jinja",
                            enable_thinking=chat_kwargs.get("enable_thinking"), **kwargs)
    template.set_mode("train")
    return template


IMAGES = [gradient(96, 64, 1), gradient(128, 64, 2), gradient(64, 64, 3)]
"""Sizes the processor keeps (multiples of 32 inside its pixel limits), so pixel values compare exactly."""

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look up a colour name",
                                           "parameters": {"type": "object", "properties": {
                                               "rgb": {"type": "string"}}, "required": ["rgb"]}}}]


def conversation(image_part):
    """Three user turns with an image each, reasoning, and a tool call between (HF / OpenAI form)."""
    def user(text, k):
        return {"role": "user", "content": [image_part(k), {"type": "text", "text": text}]}
    return [
        user("What colour is this?", 0),
        {"role": "assistant", "content": "Mostly red.", "reasoning_content": "Red dominates."},
        user("Name the colour of this one.", 1),
        {"role": "assistant", "content": "", "reasoning_content": "Ask the tool.",
         "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"rgb": "00ff00"}}}]},
        {"role": "tool", "content": "green"},
        {"role": "assistant", "content": "It is green.", "reasoning_content": "The tool says green."},
        user("And this?", 2),
        {"role": "assistant", "content": "Blue-ish.", "reasoning_content": "Bluer."},
    ]


def oracle_messages():
    return conversation(lambda k: {"type": "image"})


def swift_row():
    """ms-swift's own form: ``<image>`` tags in the text, the images in an ``images`` column."""
    messages = conversation(lambda k: {"type": "image"})
    for m in messages:
        if isinstance(m["content"], list):
            m["content"] = "<image>" + m["content"][1]["text"]
    return {"messages": messages, "images": list(IMAGES), "tools": TOOLS}


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def openai_row(tmp_path):
    """OpenAI content parts: ``image_url`` with a file path and with a base64 data URL."""
    paths = []
    for k, image in enumerate(IMAGES):
        paths.append(str(tmp_path / f"img{k}.png"))
        image.save(paths[-1])
    urls = [paths[0], _data_url(IMAGES[1]), paths[2]]
    return {"messages": conversation(lambda k: {"type": "image_url", "image_url": {"url": urls[k]}}),
            "tools": TOOLS}


def check(model, encoded):
    """Every turn exact against the processor, and every sample's media exactly its own."""
    samples = encoded if isinstance(encoded, list) else [encoded]
    processor, stops = model[1], model[2]
    turns = oracle_turns(processor, oracle_messages(), IMAGES, stops, tools=TOOLS, kwargs=model[3])
    where = match_turns(samples, turns)
    for k, sample in enumerate(samples):
        last = [t for t, w in zip(turns, where) if w == k][-1]  # the sample's last turn: all of its images
        image_token = processor.image_token_id
        assert sample["input_ids"].count(image_token) == last["prompt_ids"].count(image_token)
        keys = [key for key in MEDIA_KEYS if key in last["media"]]
        assert keys and all(torch.equal(sample[key], last["media"][key]) for key in keys)
    return samples, where


def test_split_conversation_gives_each_sample_its_own_images(model):
    """Qwen and Gemma-4 rewrite history at each user query: three samples, holding 1, 2 and 3 images."""
    template = _template(model)
    samples, where = check(model, template.encode(copy.deepcopy(swift_row())))
    assert len(samples) == 3 and where == [0, 1, 1, 2]
    image_token = model[1].image_token_id
    counts = [s["input_ids"].count(image_token) for s in samples]
    assert 0 < counts[0] < counts[1] < counts[2]


def test_openai_image_url_parts(model, tmp_path):
    template = _template(model)
    check(model, template.encode(openai_row(tmp_path)))


def test_dataset_loader_lazy_and_pre_tokenized(qwen3_6, tmp_path):
    """One dataset row per sample (``swift_ext_sample``), each with its own images, in both dataset modes."""
    template = _template(qwen3_6)
    row = openai_row(tmp_path)
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    train, _ = load_dataset([str(path)], split_dataset_ratio=0.0, load_from_cache_file=False)
    assert len(train) == 3 and train["swift_ext_sample"] == [0, 1, 2]
    lazy = LazyLLMDataset(train, template.encode, strict=True)
    check(qwen3_6, [lazy[i] for i in range(len(lazy))])
    # in-process (datasets 4.8 forks a pool even for num_proc=1; a fork after torch ran its thread pool can hang)
    with_lengths = AddLengthPreprocessor(template=template)(train, num_proc=None, load_from_cache_file=False,
                                                            strict=True)
    pre = LazyLLMDataset(with_lengths, template.encode, strict=True)
    check(qwen3_6, [pre[i] for i in range(len(pre))])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.tuples(st.integers(8, 400), st.integers(8, 400)), min_size=1, max_size=3))
def test_any_image_size_gets_the_processors_grid(model, sizes):
    """Images of any size (within Qwen's aspect-ratio limit): resized within the processor's pixel limits, so
    the grids and the number of image tokens are the processor's; pixel values differ only by the resampling
    filter (ms-swift resizes with PIL's bicubic, the processor with torchvision's)."""
    sizes = [(w, h) for w, h in sizes if max(w, h) / min(w, h) < 200]
    if not sizes:
        return
    images = [gradient(w, h, k) for k, (w, h) in enumerate(sizes)]
    messages = []
    for k in range(len(images)):
        messages += [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Image {k}?"}]},
                     {"role": "assistant", "content": f"Answer {k}."}]
    template = _template(model)
    row = {"messages": [dict(m, content="<image>" + m["content"][1]["text"]) if m["role"] == "user" else m
                        for m in messages], "images": images}
    samples = template.encode(copy.deepcopy(row))
    samples = samples if isinstance(samples, list) else [samples]
    turns = oracle_turns(model[1], messages, images, model[2], kwargs=model[3])
    where = match_turns(samples, turns)
    for k, sample in enumerate(samples):
        last = [t for t, w in zip(turns, where) if w == k][-1]
        for key in MEDIA_KEYS[1:]:
            if key in last["media"]:
                assert torch.equal(sample[key], last["media"][key])
        assert sample["pixel_values"].shape == last["media"]["pixel_values"].shape
        assert (sample["pixel_values"] - last["media"]["pixel_values"]).abs().mean() < 0.05


def test_more_image_tags_than_images_is_an_error(model):
    template = _template(model)
    row = swift_row()
    row["images"] = row["images"][:2]
    with pytest.raises(ParityError) as info:
        template.encode(row)
    assert info.value.rule == "input-media-count" and info.value.message_index == 6


def test_fewer_image_tags_than_images_is_an_error(model):
    """ms-swift would put the untagged image in front of the first message: a guess, not the user's data."""
    template = _template(model)
    row = swift_row()
    row["messages"][2]["content"] = row["messages"][2]["content"].replace("<image>", "")
    with pytest.raises(ParityError) as info:
        template.encode(row)
    assert info.value.rule == "input-media-count"


def test_max_length_counts_expanded_images_and_drops_never_cuts(model):
    """A sample within --max_length as placeholders but over it once the processor expands its images is
    dropped (ms-swift skips the row), never cut through an image nor trained over-long."""
    processor = model[1]
    row = {"messages": [{"role": "user", "content": "<image>What colour?"},
                        {"role": "assistant", "content": "Red."}], "images": [gradient(256, 256, 5)]}
    base = _template(model)
    (sample,) = [base.encode(copy.deepcopy(row))]
    expanded = len(sample["input_ids"])
    placeholders = expanded - sample["input_ids"].count(processor.image_token_id) + 1
    assert placeholders < expanded - 10
    template = _template(model, max_length=placeholders + 5, truncation_strategy="left")
    with pytest.raises(MaxLengthError):
        template.encode(copy.deepcopy(row))
    assert template.parity_report()["counts"]["dropped"] == 1


def test_placeholder_text_in_a_message_is_an_error(model):
    """A message that writes the model's image placeholder as text gives the sample one more placeholder token
    than the row has images: no list of items can match its tokens."""
    placeholder = model[1].tokenizer.convert_ids_to_tokens(model[1].image_token_id)
    template = _template(model)
    row = {"messages": [{"role": "user", "content": f"<image>What is {placeholder}?"},
                        {"role": "assistant", "content": "A token."}], "images": [gradient(64, 64, 1)]}
    with pytest.raises(ParityError) as info:
        template.encode(row)
    assert info.value.rule == "template-media-placeholders"
