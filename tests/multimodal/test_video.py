"""Qwen3.5 / Qwen3.6 parity templates with video, through ms-swift's own loading (qwen_vl_utils' ``fetch_video``) and
placeholder expansion, against the model's own Hugging Face processor.

Ground truth for a trained turn: ``processor(text=apply_chat_template(messages[:i], add_generation_prompt=True),
videos=<the frames of the videos of messages[:i]>, video_metadata=<their frame indices and rate>)``: the frame
timestamps (``<0.2 seconds>``), the per-frame markers and the number of video tokens are the processor's; the
frames are resized by the processor itself. Which frames a file gives is the loader's choice (qwen_vl_utils samples
2 frames a second), so the oracle takes the frames and their indices from qwen_vl_utils' reader directly; a list of
frames is a video at qwen_vl_utils' 2 frames a second (``sample_fps``), ms-swift's convention for frame lists."""

from __future__ import annotations

import copy
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
from swift_ext.ms_swift.vision import media_ids  # noqa: E402

ms.register()

from swift.dataset import AddLengthPreprocessor, LazyLLMDataset, load_dataset  # noqa: E402
from swift.model import get_model_processor  # noqa: E402
from swift.template import get_template  # noqa: E402

FAMILIES = {"qwen3_5": "qwen3_5_parity", "qwen3_6": "qwen3_6_parity"}
STOPS = ("<|im_end|>",)
LIST_FPS = 2.0
"""qwen_vl_utils' rate for a video given as a list of frames (``vision_process.FPS``, which ms-swift passes)."""

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look up a colour name",
                                           "parameters": {"type": "object", "properties": {
                                               "rgb": {"type": "string"}}, "required": ["rgb"]}}}]

_BUILT: dict = {}


def _build(fixture_name, tmp_path_factory):
    if fixture_name not in _BUILT:
        testing.fixture_dir(fixture_name)
        folder = tiny.build_tiny_vl_model(fixture_name, tmp_path_factory.mktemp(fixture_name), "qwen3_5")
        processor = get_model_processor(str(folder), load_model=False, model_type="qwen3_5")[1]
        _BUILT[fixture_name] = (FAMILIES[fixture_name], processor)
    return _BUILT[fixture_name]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request, tmp_path_factory):
    return _build(request.param, tmp_path_factory)


def _template(model, **kwargs):
    template = get_template(model[1], template_type=model[0], template_backend="jinja", **kwargs)
    template.set_mode("train")
    return template


def frames(width, height, count, seed=0):
    """A video as a list of frames: a gradient whose tint changes from frame to frame."""
    return [gradient(width, height, seed * 10 + k) for k in range(count)]


def list_metadata(videos):
    """The processor's ``video_metadata`` for videos given as frame lists."""
    return [{"fps": LIST_FPS, "frames_indices": list(range(len(v))), "total_num_frames": len(v)} for v in videos]


def conversation(video_part, image_part):
    """A video, then an image and a tool call, then a second video (odd frame count): Qwen rewrites history at
    each user query, so three samples."""
    return [
        {"role": "user", "content": [video_part(0), {"type": "text", "text": "What happens here?"}]},
        {"role": "assistant", "content": "The colour shifts.", "reasoning_content": "Frames get bluer."},
        {"role": "user", "content": [image_part(0), {"type": "text", "text": "Name this colour."}]},
        {"role": "assistant", "content": "", "reasoning_content": "Ask the tool.",
         "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"rgb": "00ff00"}}}]},
        {"role": "tool", "content": "green"},
        {"role": "assistant", "content": "Green.", "reasoning_content": "The tool says green."},
        {"role": "user", "content": [video_part(1), {"type": "text", "text": "And now?"}]},
        {"role": "assistant", "content": "It flickers.", "reasoning_content": "Odd frames."},
    ]


VIDEOS = [frames(64, 64, 4, seed=1), frames(96, 64, 5, seed=2)]
IMAGES = [gradient(64, 96, 7)]


def swift_row(tmp_path):
    """ms-swift's own form: ``<video>`` / ``<image>`` tags, ``videos`` as lists of frame files."""
    videos = []
    for v, video in enumerate(VIDEOS):
        videos.append([])
        for k, frame in enumerate(video):
            videos[-1].append(str(tmp_path / f"v{v}_{k}.png"))
            frame.save(videos[-1][-1])
    messages = conversation(lambda k: {"type": "video"}, lambda k: {"type": "image"})
    for m in messages:
        if isinstance(m["content"], list):
            tag = "<video>" if m["content"][0]["type"] == "video" else "<image>"
            m["content"] = tag + m["content"][1]["text"]
    return {"messages": messages, "videos": videos, "images": list(IMAGES), "tools": TOOLS}


def check(model, samples, videos, metadata, images=IMAGES, messages=None, tools=TOOLS):
    """Every turn exact against the processor; each sample's video grids its own; pixel values equal but for
    the resampling filter (ms-swift resizes frames with PIL's bicubic, the processor with torchvision's)."""
    samples = samples if isinstance(samples, list) else [samples]
    processor = model[1]
    messages = messages or conversation(lambda k: {"type": "video"}, lambda k: {"type": "image"})
    turns = oracle_turns(processor, messages, images, STOPS, tools=tools, videos=videos,
                         video_kwargs={"video_metadata": metadata, "do_sample_frames": False})
    where = match_turns(samples, turns)
    for k, sample in enumerate(samples):
        last = [t for t, w in zip(turns, where) if w == k][-1]
        assert sample["input_ids"].count(processor.video_token_id) == last["prompt_ids"].count(
            processor.video_token_id)
        if last["n_videos"]:
            assert torch.equal(sample["video_grid_thw"], last["media"]["video_grid_thw"])
            ours, theirs = sample["pixel_values_videos"], last["media"]["pixel_values_videos"]
            assert ours.shape == theirs.shape and (ours - theirs).abs().mean() < 0.05
        else:
            assert "video_grid_thw" not in sample
    return samples, where


def test_video_frame_lists_each_turn_exact_each_sample_its_own_videos(model, tmp_path):
    """Three samples (history rewriting): 1, 1 and 2 videos; the timestamps, per-frame markers and tokens are
    the processor's (before: ms-swift wrote the template's <|vision_start|> / <|vision_end|> twice)."""
    samples, where = check(model, _template(model).encode(swift_row(tmp_path)), VIDEOS, list_metadata(VIDEOS))
    assert len(samples) == 3 and where == [0, 1, 1, 2]
    assert [len(s["video_grid_thw"]) for s in samples] == [1, 1, 2]
    start = model[1].tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert all(a != start or b != start for s in samples for a, b in zip(s["input_ids"], s["input_ids"][1:]))


def test_dataset_loader_lazy_and_pre_tokenized(tmp_path_factory, tmp_path):
    """One dataset row per sample (``swift_ext_sample``), each with its own videos, in both dataset modes."""
    model = _build("qwen3_6", tmp_path_factory)
    template = _template(model)
    row = swift_row(tmp_path)
    row["images"] = [str(tmp_path / "image0.png")]
    IMAGES[0].save(row["images"][0])
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    train, _ = load_dataset([str(path)], split_dataset_ratio=0.0, load_from_cache_file=False)
    assert len(train) == 3 and train["swift_ext_sample"] == [0, 1, 2]
    metadata = list_metadata(VIDEOS)
    check(model, [LazyLLMDataset(train, template.encode, strict=True)[i] for i in range(3)], VIDEOS, metadata)
    # in-process (datasets 4.8 forks a pool even for num_proc=1; a fork after torch ran its thread pool can hang)
    with_lengths = AddLengthPreprocessor(template=template)(train, num_proc=None, load_from_cache_file=False,
                                                            strict=True)
    pre = LazyLLMDataset(with_lengths, template.encode, strict=True)
    check(model, [pre[i] for i in range(3)], VIDEOS, metadata)


def test_openai_video_parts_with_pil_frames(model):
    """A video as a content part holding its frames (``{"type": "video", "video": [PIL images]}``)."""
    messages = conversation(lambda k: {"type": "video", "video": VIDEOS[k]},
                            lambda k: {"type": "image", "image": IMAGES[k]})
    check(model, _template(model).encode({"messages": copy.deepcopy(messages), "tools": TOOLS}), VIDEOS,
          list_metadata(VIDEOS))


def _mp4(path, width, height, count, rate):
    """A small MPEG-4 file written with PyAV (qwen_vl_utils' dependency)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(count):
            frame = np.zeros((height, width, 3), np.uint8)
            frame[..., 0] = (k * 255) // max(count - 1, 1)
            frame[..., 1] = (np.arange(width)[None, :] * 255) // max(width - 1, 1)
            frame[..., 2] = (np.arange(height)[:, None] * 255) // max(height - 1, 1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_file_frames_and_timestamps_are_the_processors(model, tmp_path):
    """An .mp4 (100x70, 25 frames at 10 fps): the frames qwen_vl_utils' reader samples, at the processor's size,
    with the timestamps the processor computes from their indices in the file."""
    from qwen_vl_utils import vision_process

    path = tmp_path / "clip.mp4"
    _mp4(path, 100, 70, 25, 10)
    reader = vision_process.VIDEO_READER_BACKENDS[vision_process.get_video_reader_backend()]
    video, metadata, _ = reader({"video": str(path)})
    assert len(metadata["frames_indices"]) >= 4 and metadata["frames_indices"][-1] > len(video)  # sampled
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
                {"role": "assistant", "content": "It fades.", "reasoning_content": "Red grows."}]
    row = {"messages": [{"role": "user", "content": "<video>What happens?"}, messages[1]], "videos": [str(path)]}
    (sample,) = check(model, [_template(model).encode(row)], [video], [metadata], images=[], messages=messages,
                      tools=None)[0]
    text = model[1].tokenizer.decode(sample["input_ids"])
    assert "seconds>" in text and text.count("<|vision_start|>") == 1 + int(sample["video_grid_thw"][0][0])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(st.integers(12, 400), st.integers(12, 400), st.integers(2, 9)))
def test_any_frame_size_and_count_gets_the_processors_grid(model, shape):
    """Frame lists of any size and count (odd counts too: the padding frame takes the last frame's timestamp, as
    the processor's): tokens, grid and timestamps equal the processor's."""
    width, height, count = shape
    if max(width, height) / min(width, height) >= 200:
        return
    video = frames(width, height, count, seed=3)
    messages = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "Hm?"}]},
                {"role": "assistant", "content": "Fine."}]
    oracle = [dict(messages[0], content=[{"type": "video"}, messages[0]["content"][1]]), messages[1]]
    check(model, _template(model).encode({"messages": messages}), [video], list_metadata([video]), images=[],
          messages=oracle, tools=None)


def test_video_on_a_family_without_video_is_refused(tmp_path_factory, tmp_path):
    """Gemma-4's ``[media]`` lists images only: a video row is an error naming the rule, not a guess."""
    testing.fixture_dir("gemma4")
    folder = tiny.build_tiny_vl_model("gemma4", tmp_path_factory.mktemp("gemma4"), "gemma4")
    processor = get_model_processor(str(folder), load_model=False, model_type="gemma4")[1]
    template = get_template(processor, template_type="gemma4_parity", template_backend="jinja")
    template.set_mode("train")
    video = []
    for k, frame in enumerate(frames(64, 64, 4)):
        video.append(str(tmp_path / f"f{k}.png"))
        frame.save(video[-1])
    row = {"messages": [{"role": "user", "content": "<video>What happens?"},
                        {"role": "assistant", "content": "Colours change."}], "videos": [video]}
    with pytest.raises(ParityError) as info:
        template.encode(row)
    assert info.value.rule == "template-media-unsupported" and "gemma4" in str(info.value)


def test_media_text_the_family_file_does_not_describe_is_an_error(model):
    """``media_ids`` finds each item where the family's ``[media]`` text is: a template that writes a video
    placeholder otherwise (here: without its markers) is ``template-media-placeholders``, never half-replaced."""
    template = _template(model)
    tok = model[1].tokenizer
    pad = model[1].video_token_id
    ids = tok.encode("<|vision_start|><|video_pad|><|vision_end|>a<|video_pad|>b", add_special_tokens=False)
    with pytest.raises(ParityError) as info:
        media_ids(template, ids, [0.0] * len(ids), {"video": [pad]}, message_index=0)
    assert info.value.rule == "template-media-placeholders"
    ok = tok.encode("x<|vision_start|><|video_pad|><|vision_end|>y", add_special_tokens=False)
    assert media_ids(template, ok, [0.0] * len(ok), {"video": [pad]})[0] == tok.encode(
        "x<|video_pad|>y", add_special_tokens=False)


def test_unreadable_video_file_is_an_error(model, tmp_path):
    """A video file no reader can open (here: not a video) is an error naming the file, not a raw crash."""
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video")
    row = {"messages": [{"role": "user", "content": "<video>What happens?"},
                        {"role": "assistant", "content": "Nothing."}], "videos": [str(path)]}
    with pytest.raises(ParityError) as info:
        _template(model).encode(row)
    assert info.value.rule == "input-media-unreadable" and "broken.mp4" in str(info.value)
