"""Media in parity templates: ms-swift's vision-language template classes, with and without a vision model.

Qwen3.5/3.6 and Gemma-4 are vision-language templates in ms-swift. With a text-only model the vision hooks are
skipped (``TextOnlyVisionMixin``), so no vision stack (torchvision, qwen_vl_utils) is needed. With a multimodal
model ms-swift's own multimodal path runs: its media loading (``replace_tag``: qwen_vl_utils' ``fetch_image`` /
``fetch_video`` for Qwen), then its placeholder expansion and processor call in the template class's ``_encode``,
over the parity token ids. Two things are the parity template's (``sample_media``, ``load_media``):

* each sample carries exactly the media its tokens refer to: a conversation split into several samples by
  history rewriting (Qwen3.5/3.6) gives sample *k* the images and videos of the messages it holds, in order, not
  every item of the row (ms-swift's ``_encode`` processes all of ``inputs.images``);
* images are resized within the model's own processor limits (``preprocessor_config.json`` ``size``), as an
  inference server's processor resizes them, not within qwen_vl_utils' defaults (4 to 16384 tokens an image
  where Qwen3.5's published processor asks for at least 64: a small image would get fewer image tokens in
  training than at inference).
"""

from __future__ import annotations

from typing import Any

from swift.template import Template

from ..errors import TemplateRenderError
from ..types import Sample
from .conversion import MEDIA_KINDS, media_counts
from .video import video_frames


class TextOnlyVisionMixin:
    """For Qwen3.5/3.6 (a vision-language template in ms-swift): with a text-only model the vision hooks are
    skipped, so no vision stack (torchvision, qwen_vl_utils) is needed; with a multimodal model ms-swift's
    own multimodal path runs unchanged."""

    def _parity_text_only(self) -> bool:
        model_meta = getattr(self, "model_meta", None)
        return model_meta is None or not model_meta.is_multimodal

    def _post_encode(self, model, inputs):
        if self._parity_text_only():
            return Template._post_encode(self, model, inputs)
        return super()._post_encode(model, inputs)

    def _data_collator(self, batch, *, padding_to=None):
        if self._parity_text_only():
            return Template._data_collator(self, batch, padding_to=padding_to)
        return super()._data_collator(batch, padding_to=padding_to)

    def packing_row(self, row):
        if self._parity_text_only():
            return Template.packing_row(self, row)
        return super().packing_row(row)

    def forward_context(self, model, inputs):
        if self._parity_text_only():
            return Template.forward_context(self, model, inputs)
        return super().forward_context(model, inputs)


def media_token_id(template: Any, kind: str) -> int | None:
    """The token id the template's ``_encode`` expands for one ``kind`` item: a class attribute for Qwen
    (``Qwen3_5Template.image_token_id``), the model config's for Gemma-4 (``config.image_token_id``)."""
    value = getattr(template, f"{kind}_token_id", None)
    if value is None:
        try:
            value = getattr(template.config, f"{kind}_token_id", None)
        except Exception:  # no model config (a processor built without one)
            value = None
    return value if isinstance(value, int) else None


def sample_media(template: Any, inputs: Any, messages: list[dict[str, Any]], sample: Sample) -> None:
    """Keep in ``inputs`` (a copy of the row's) the media of ``sample`` only: the items of the messages before
    its last trained turn, in order (assistant turns hold none), checked against the placeholders in its ids."""
    end = max((turn.message_index for turn in sample.turns), default=len(messages))
    counts = media_counts(messages[:end])
    for kind in MEDIA_KINDS:
        items = getattr(inputs, f"{kind}s", None)
        if not items:
            continue
        token = media_token_id(template, kind)
        if token is not None and sample.input_ids.count(token) != counts[kind]:
            raise TemplateRenderError(
                f"a sample of this row holds {sample.input_ids.count(token)} {kind} placeholder token(s) where "
                f"its messages have {counts[kind]} {kind}(s): the template dropped or repeated media (or "
                "--max_length cut through it), so no item list can match its tokens",
                rule="template-media-placeholders", message_index=end)
        setattr(inputs, f"{kind}s", items[:counts[kind]])


def _processor_pixel_bounds(template: Any, kind: str) -> dict[str, int]:
    """``min_pixels`` / ``max_pixels`` from the model's image or video processor (``size``: ``shortest_edge`` /
    ``longest_edge`` are pixel counts for the Qwen2-VL processor family), for qwen_vl_utils' ``fetch_*``."""
    processor = getattr(getattr(template, "processor", None), f"{kind}_processor", None)
    size = getattr(processor, "size", None)
    bounds = {}
    if isinstance(size, dict) or hasattr(size, "get"):
        if size.get("shortest_edge"):
            bounds["min_pixels"] = int(size["shortest_edge"])
        if size.get("longest_edge"):
            bounds["max_pixels"] = int(size["longest_edge"])
    return bounds


def _processor_resize(template: Any) -> Any:
    """``(height, width) -> (height, width)``: the model's image processor's own ``smart_resize`` with its factor
    and pixel limits, or None when its module has none (not the Qwen2-VL processor family).

    qwen_vl_utils' ``smart_resize`` differs from transformers' at the edges (a side under half a patch rounds up to
    one patch there and to zero, then scaled up to the minimum, here: an 8x9 image is a 2x2 grid for
    qwen_vl_utils and 4x2 for Qwen3.5's processor), so the processor's own function decides the size."""
    import sys

    processor = getattr(getattr(template, "processor", None), "image_processor", None)
    resize = getattr(sys.modules.get(type(processor).__module__), "smart_resize", None)
    patch, merge = getattr(processor, "patch_size", None), getattr(processor, "merge_size", None)
    bounds = _processor_pixel_bounds(template, "image")
    if resize is None or not patch or not merge or len(bounds) != 2:
        return None
    return lambda height, width: resize(height, width, factor=patch * merge, **bounds)


def _refuse_unplaced_media(template: Any, inputs: Any) -> None:
    """A kind the row holds that the family's ``[media]`` does not list is refused: the parity templates place
    only what tests/multimodal prove against the model's processor."""
    family = getattr(template, "parity_family_obj", None)
    placed = dict(getattr(family, "media", ()))
    unsupported = [kind for kind in MEDIA_KINDS if getattr(inputs, f"{kind}s", None) and kind not in placed]
    if unsupported:
        name = getattr(family, "name", "hf")
        raise TemplateRenderError(
            f"the parity template of family {name!r} does not place {' and '.join(unsupported)} exactly (its "
            f"templates/{name}.toml [media] lists {sorted(placed) or 'none'}); train such rows with ms-swift's own "
            "template, or leave them out", rule="template-media-unsupported")


def _resize_images(template: Any, inputs: Any) -> None:
    """Bring each image to the size the model's image processor gives it (``_processor_resize``)."""
    resize = _processor_resize(template)
    for index, image in enumerate(inputs.images or []):
        if resize is not None and hasattr(image, "size") and hasattr(image, "resize"):
            height, width = resize(image.size[1], image.size[0])
            if (width, height) != tuple(image.size):
                inputs.images[index] = image.resize((width, height))  # PIL's bicubic, as qwen_vl_utils resizes


def load_media(template: Any, inputs: Any) -> dict[str, list[int]]:
    """ms-swift's own media loading for each item of the row (``replace_tag``, which ms-swift calls for each
    ``<image>`` / ``<video>`` tag of text it tokenizes; the parity template hands it token ids instead). Images
    are first brought to the size the model's processor gives them (``_processor_resize``), videos are read at
    that size (``video.video_frames``), then qwen_vl_utils runs within the processor's pixel limits (a row's
    ``chat_template_kwargs`` ``min_pixels`` / ``max_pixels`` / ``resized_height`` still override those). A kind
    the family's ``[media]`` does not list is refused (``template-media-unsupported``).

    Returns, for each kind the row holds, the token ids ms-swift's ``_encode`` expands for one item (what
    ``replace_tag`` returns): ``media_ids`` puts them where the chat template wrote its own text for the item."""
    _refuse_unplaced_media(template, inputs)
    _resize_images(template, inputs)
    saved = inputs.chat_template_kwargs
    tags: dict[str, list[int]] = {}
    try:
        for kind in ("image", "video"):
            for index in range(len(getattr(inputs, f"{kind}s", None) or [])):
                frames = video_frames(template, inputs, index, saved) if kind == "video" else None
                # a video is read at the processor's size; an image within its pixel limits
                size = _processor_pixel_bounds(template, kind) if frames is None else frames.size_kwargs()
                inputs.chat_template_kwargs = {**size, **(saved or {})}
                tags[kind] = _context_ids(template, template.replace_tag(kind, index, inputs))
                if frames is not None:
                    frames.settle(inputs, index)
    finally:
        inputs.chat_template_kwargs = saved
    return tags


def _context_ids(template: Any, context: list[Any]) -> list[int]:
    """ms-swift's context list (text pieces and token-id lists) as token ids."""
    ids: list[int] = []
    for piece in context:
        ids += template.tokenizer.encode(piece, add_special_tokens=False) if isinstance(piece, str) else list(piece)
    return ids


def media_ids(template: Any, ids: list[int], scales: list[float], tags: dict[str, list[int]],
              message_index: int | None = None) -> tuple[list[int], list[float]]:
    """``ids`` (a sample's, or an inference prompt's) with the chat template's text for each media item (the
    family's ``[media]``) replaced by the ids ms-swift's ``_encode`` expands (``tags``, from ``load_media``).

    They differ for Qwen3.5/3.6 video: the template writes ``<|vision_start|><|video_pad|><|vision_end|>`` and
    ms-swift 4.6 replaces ``<|video_pad|>`` by the processor's output for that whole text, which keeps the markers:
    given the template's ids as they are, the sample would hold them twice. An item whose text is not in the ids
    is ``template-media-placeholders``."""
    placed = dict(getattr(template, "parity_family_obj", None).media)
    for kind, tag in tags.items():
        written = template.tokenizer.encode(placed[kind], add_special_tokens=False)
        token = media_token_id(template, kind)
        if written == tag:
            continue
        if token is None or token not in written:
            raise TemplateRenderError(
                f"the family's [media] {kind} text {placed[kind]!r} holds no {kind} placeholder token of this "
                "model, so its items cannot be found in the sample", rule="template-media-placeholders",
                message_index=message_index)
        lead = written.index(token)  # where the placeholder token sits in the item's text
        starts = [j - lead for j, x in enumerate(ids)
                  if x == token and j >= lead and ids[j - lead:j - lead + len(written)] == written]
        if len(starts) != ids.count(token):
            raise TemplateRenderError(
                f"{ids.count(token)} {kind} placeholder token(s) but {len(starts)} of them written as the family's "
                f"[media] {kind} text {placed[kind]!r}: the chat template writes media otherwise than its family "
                "file says", rule="template-media-placeholders", message_index=message_index)
        out_ids: list[int] = []
        out_scales: list[float] = []
        end = 0
        for start in starts:
            out_ids += ids[end:start] + tag
            out_scales += scales[end:start] + [scales[start]] * len(tag)
            end = start + len(written)
        ids, scales = out_ids + ids[end:], out_scales + scales[end:]
    return ids, scales
