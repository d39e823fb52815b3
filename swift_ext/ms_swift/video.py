"""A video of a parity-template row, read by ms-swift's loader at the size the model's video processor gives it.

ms-swift 4.6 reads a Qwen3.5/3.6 video with qwen_vl_utils' ``fetch_video`` (``Qwen2VLTemplate.replace_tag``) and
hands the frames to the processor with ``do_resize=False``: the frames' size is qwen_vl_utils' choice, which is not
the processor's (measured on the Qwen3.5 video processor config: 100x70 frames give a 4x8 patch grid where the
processor gives 4x6; 640x480, 8 frames: 32x40 where it gives 18x26), so a video would have more or fewer tokens in
training than at inference. Two things are fixed here, around ms-swift's own loading:

* size: the frame count and size are read first (a list of frames: its length and first frame; a file: qwen_vl_utils'
  own reader, which samples the frames, so a file is decoded twice), the processor's ``smart_resize`` gives the
  size, and qwen_vl_utils reads the video at it (``resized_height`` / ``resized_width``);
* timestamps of a list with an odd number of frames: qwen_vl_utils pads it with a copy of the last frame and gives
  the copy the next frame index; the processor, given the list, pads the same way but repeats the last frame's
  index (``Qwen3VLProcessor._calculate_timestamps``), so the last ``<t seconds>`` differs. The copy takes the last
  frame's index, as the processor's.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, TemplateRenderError


def _video_resize(template: Any) -> Any:
    """``(frames, height, width) -> (height, width)``: the model's video processor's own ``smart_resize`` with its
    factor, temporal patch, pixel limits and per-frame cap (transformers 5.19 ``Qwen3VLVideoProcessor.resize``), or
    None when its module has none of that form."""
    processor = getattr(getattr(template, "processor", None), "video_processor", None)
    resize = getattr(sys.modules.get(type(processor).__module__), "smart_resize", None)
    if resize is None or "num_frames" not in inspect.signature(resize).parameters:
        return None
    size = getattr(processor, "size", None)
    shortest = size.get("shortest_edge") if size is not None else None
    longest = size.get("longest_edge") if size is not None else None
    patch, merge = getattr(processor, "patch_size", None), getattr(processor, "merge_size", None)
    temporal = getattr(processor, "temporal_patch_size", None)
    if not (shortest and longest and patch and merge and temporal):
        return None
    factor = patch * merge

    def target(frames: int, height: int, width: int) -> tuple[int, int]:
        max_pixels = longest
        if getattr(processor, "cap_pixels_per_frame", None):
            frame_cap = processor.max_video_tokens * factor * factor
            max_pixels = max(min(frame_cap, longest // frames), int(shortest * 1.05)) * frames
        return resize(num_frames=frames, height=height, width=width, factor=factor, temporal_factor=temporal,
                      min_pixels=shortest, max_pixels=max_pixels)

    return target


def _read_shape(video: Any, element: dict[str, Any]) -> tuple[int, int, int]:
    """(frames, height, width) of a video as the processor would get it: a list of frames as given; a file as
    qwen_vl_utils' reader samples it (its backend, falling back to torchvision as ``fetch_video`` does)."""
    if isinstance(video, (list, tuple)):
        from swift.template.vision_utils import load_image

        first = load_image(video[0])
        return len(video), first.size[1], first.size[0]
    from qwen_vl_utils import vision_process

    backend = vision_process.get_video_reader_backend()
    try:
        frames = vision_process.VIDEO_READER_BACKENDS[backend](element)[0]
    except Exception as first:
        try:
            frames = vision_process.VIDEO_READER_BACKENDS["torchvision"](element)[0]
        except Exception as second:
            raise InputError(f"cannot read the video {str(video)[:200]!r}: qwen_vl_utils' {backend} reader "
                             f"({type(first).__name__}: {str(first)[:200]}) and torchvision's "
                             f"({type(second).__name__}: {str(second)[:200]}) failed; a missing file, a broken "
                             "one, or no video reader (pip install decord)", rule="input-media-unreadable") from None
    return int(frames.shape[0]), int(frames.shape[2]), int(frames.shape[3])


@dataclass
class VideoFrames:
    """One video of the row: how many frames the processor gets, and the size it gives them."""

    frames: int
    height: int
    width: int
    listed: bool
    """A list of frames (not a file)."""

    def size_kwargs(self) -> dict[str, int]:
        """qwen_vl_utils' keys for the size to read the video at."""
        return {"resized_height": self.height, "resized_width": self.width}

    def settle(self, inputs: Any, index: int) -> None:
        """After ms-swift's loading: the frames at the processor's size (qwen_vl_utils never goes below its
        minimum of 4 tokens a frame, the processor can: then resized again), the padding frame's timestamp."""
        video = inputs.videos[index]
        if hasattr(video, "shape") and tuple(video.shape[-2:]) != (self.height, self.width):
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms import functional as tvf

            resized = tvf.resize(video.float(), [self.height, self.width], interpolation=InterpolationMode.BICUBIC,
                                 antialias=True)
            inputs.videos[index] = resized.round().clamp(0, 255).to(video.dtype)
        metadata = (inputs.mm_processor_kwargs.get("video_metadata") or [None])[-1]
        indices = metadata.get("frames_indices") if isinstance(metadata, dict) else None
        if self.listed and indices is not None and len(indices) > self.frames:
            metadata["frames_indices"] = [*indices[:self.frames], *[indices[self.frames - 1]] *
                                          (len(indices) - self.frames)]


def video_frames(template: Any, inputs: Any, index: int, row_kwargs: dict[str, Any] | None) -> VideoFrames:
    """The frame count and processor size of the row's ``index``-th video, before ms-swift loads it."""
    resize = _video_resize(template)
    if resize is None:
        raise TemplateRenderError(
            "this model's video processor has no size rule the parity template knows (a Qwen-VL smart_resize), so "
            "a video's tokens cannot be made the processor's", rule="template-media-unsupported")
    video = inputs.videos[index]
    row_kwargs = row_kwargs or {}
    frames, height, width = _read_shape(video, {"video": video, **row_kwargs})
    if "resized_height" in row_kwargs and "resized_width" in row_kwargs:  # the row's own choice, as at inference
        height, width = int(row_kwargs["resized_height"]), int(row_kwargs["resized_width"])
    else:
        height, width = resize(frames, height, width)
    return VideoFrames(frames, height, width, listed=isinstance(video, (list, tuple)))
