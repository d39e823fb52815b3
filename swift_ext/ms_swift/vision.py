"""Text-only use of ms-swift's vision-language template classes (Qwen3.5/3.6 are one in ms-swift)."""

from __future__ import annotations

from swift.template import Template


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
