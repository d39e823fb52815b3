"""Tokenize rendered strings exactly as ``tokenizer(text, add_special_tokens=False)``.

Every string handed in is a *whole* rendered string (a generation prompt, or
one turn's completion); nothing is tokenized in arbitrary chunks, because a BPE
merge can cross a chunk edge.

Speed comes from one fact about Hugging Face tokenizers: added tokens such as
``<|im_end|>`` are cut out of the text before normalisation and BPE, and the
pieces between them are tokenized independently. So the text between two added
tokens always gives the same ids, and the many generation prompts of one
conversation (each a prefix-sharing rendering of the history) can reuse the
ids of the pieces they share. ``SegmentTokenizer`` does that, and checks the
property on probe strings when it is built: a tokenizer whose pre-tokenizer
breaks it (e.g. a Metaspace "first" prefix) is tokenized whole, always.
"""

from __future__ import annotations

import re
from typing import Any

_PROBES = (
    "Hello{t} world",
    "a{t}\nb",
    "{t}  spaced\n\n text",
    "x {t} y",
    "{t}{t}Über ünïcode 你好",
    "end.{t}",
)


class SegmentTokenizer:
    """Fast, exact text -> ids for one Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any, split_on: str | None = None, cache_size: int = 200_000) -> None:
        """``split_on``: when given (a chat template's text), split only at the added
        tokens that occur in it. Pieces are still tokenized by the tokenizer itself,
        so fewer split points only mean coarser memoisation, and a smaller regex."""
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = backend if backend is not None and hasattr(backend, "encode_batch") else None
        self._cache: dict[str, list[int]] = {}
        self._cache_size = cache_size
        self._split_tokens = [t for t in self._splittable_added_tokens() if split_on is None or t in split_on]
        self._splitter = (
            re.compile("(" + "|".join(re.escape(t) for t in sorted(self._split_tokens, key=len, reverse=True)) + ")")
            if self._split_tokens
            else None
        )
        if self._splitter is not None and not self._probe():
            self._splitter = None

    # -- public -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with no special tokens added."""
        if self._splitter is None:
            return self.encode_whole(text)
        pieces = [piece for piece in self._splitter.split(text) if piece]
        if len(self._cache) > self._cache_size:
            self._cache.clear()
        cache = self._cache
        missing = [piece for piece in pieces if piece not in cache]
        if missing:
            self._remember(missing)
        ids: list[int] = []
        for piece in pieces:
            ids.extend(cache[piece])
        return ids

    def encode_whole(self, text: str) -> list[int]:
        """Reference path: the tokenizer on the whole string."""
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def boundaries(self, text: str) -> list[int]:
        """Character offsets at which ``text``'s tokens end (ascending, ``len(text)`` last)."""
        if self._backend is not None:
            ends = sorted({end for _, end in self._backend.encode(text, add_special_tokens=False).offsets})
        else:
            ends = [k + 1 for k, ch in enumerate(text) if ch == "\n"]
            ends += [m.end() for m in self._splitter.finditer(text)] if self._splitter is not None else []
        return sorted({e for e in ends if 0 < e < len(text)} | {len(text)})

    def token_id(self, text: str) -> int | None:
        """The id of ``text`` when it is exactly one token."""
        ids = self.encode_whole(text)
        return ids[0] if len(ids) == 1 else None

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @property
    def memoised(self) -> bool:
        return self._splitter is not None

    # -- internals ---------------------------------------------------------------
    def _remember(self, pieces: list[str]) -> None:
        unique = list(dict.fromkeys(pieces))
        if self._backend is not None:
            encodings = self._backend.encode_batch(unique, add_special_tokens=False)
            for piece, enc in zip(unique, encodings):
                self._cache[piece] = enc.ids
        else:
            for piece in unique:
                self._cache[piece] = self.encode_whole(piece)

    def _splittable_added_tokens(self) -> list[str]:
        """Added tokens the tokenizer cuts out verbatim (no stripping, not normalised)."""
        decoder = getattr(self.tokenizer, "added_tokens_decoder", None) or {}
        tokens = []
        for added in decoder.values():
            content = getattr(added, "content", None)
            if not content:
                continue
            if getattr(added, "lstrip", False) or getattr(added, "rstrip", False):
                continue
            if getattr(added, "single_word", False) or getattr(added, "normalized", False):
                continue
            tokens.append(content)
        return tokens

    def _probe(self) -> bool:
        """Check on a few strings per token that piecewise ids equal whole-string ids."""
        sample = self._split_tokens[:: max(1, len(self._split_tokens) // 16)][:16]
        for token in sample:
            for probe in _PROBES:
                text = probe.format(t=token)
                if self.encode(text) != self.encode_whole(text):
                    self._cache.clear()
                    return False
        return True
