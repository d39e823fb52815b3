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

import os
import re
import sys
import threading
from array import array
from bisect import bisect_right
from typing import Any

from .errors import PolicyError

_PROBES = (
    "Hello{t} world",
    "a{t}\nb",
    "{t}  spaced\n\n text",
    "x {t} y",
    "{t}{t}Über ünïcode 你好",
    "end.{t}",
)

CACHE_ENV_VAR = "SWIFT_EXT_TOKEN_CACHE_MB"
DEFAULT_CACHE_MB = 256

# What one memoised piece costs beyond its key string (``sys.getsizeof``): the id list's header, a pointer per id
# and the dict slot with its share of the table's spare room. The int objects are counted apart: each generation
# keeps one int object per distinct id (``_ints``) and every list it holds points to those, so an id costs its
# int object (28 bytes, 32 as pymalloc hands them out) and its slot in that table once per generation, not once
# per occurrence (~29 ns per id of a new piece to look up). benchmarks/trajectory.py's 256-round gpt-oss
# trajectory has 98,000 ids of ~1,200 distinct values: one int object per id was 2.5 MB, 30% of encode's peak
# memory (issue 14); tool outputs of real source code have ~4,900 distinct in 87,000. The samples' lists point to
# the same objects. Checked against tracemalloc in tests/reliability/test_cache_bounds.py.
_LIST_BYTES = 56
_ID_BYTES = 8
_INT_BYTES = 32 + 48
_SLOT_BYTES = 48
_ENTRY_BYTES = _LIST_BYTES + _SLOT_BYTES


def cache_budget(cache_bytes: int | None = None) -> int:
    """Bytes one tokenizer's piece cache may hold: ``cache_bytes``, else ``$SWIFT_EXT_TOKEN_CACHE_MB`` (MiB,
    may be fractional), else 256 MiB. 0 turns memoisation off."""
    if cache_bytes is not None:
        return max(0, int(cache_bytes))
    raw = os.environ.get(CACHE_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_CACHE_MB << 20
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:  # also rejects nan
        raise PolicyError(f"{CACHE_ENV_VAR}={raw!r} is not a number of MiB >= 0", rule="policy-token-cache")
    return int(megabytes * (1 << 20))


def entry_bytes(piece: str, ids: list[int], new_ids: int | None = None) -> int:
    """The memory one cache entry holds (key string, id list, dict slot, and the int objects of the ``new_ids``
    ids its generation did not hold yet: all of them when not given), rounded up."""
    return sys.getsizeof(piece) + _ENTRY_BYTES + _ID_BYTES * len(ids) + _INT_BYTES * (
        len(ids) if new_ids is None else new_ids)


def _intern(ids: list[int], ints: dict[int, int]) -> tuple[list[int], int]:
    """``ids`` as a list of ``ints``' int objects (those it lacks added), and how many were added. Promoted
    entries go through it too, so a dropped generation leaves no int objects its successor holds uncounted."""
    held = len(ints)
    shared = list(map(ints.setdefault, ids, ids))
    return shared, len(ints) - held


class SegmentTokenizer:
    """Fast, exact text -> ids for one Hugging Face tokenizer; safe to share between threads.

    The piece cache is two generations of plain dicts, bounded in bytes: new pieces (and old-generation pieces
    that are used again) go into the young one; when it would pass half the budget it becomes the old one and
    the previous old one is dropped. Dicts are only ever added to, never cleared or shrunk, so a reader that took
    one needs no lock: only writers (pieces not yet cached, once per new message text) take it. The lists of one
    generation share one int object per distinct id (``_ints``, replaced with the generation).
    """

    def __init__(self, tokenizer: Any, split_on: str | None = None, cache_bytes: int | None = None) -> None:
        """``split_on``: when given (a chat template's text), split only at the added
        tokens that occur in it. Pieces are still tokenized by the tokenizer itself,
        so fewer split points only mean coarser memoisation, and a smaller regex.
        ``cache_bytes``: the piece cache's bound (see ``cache_budget``)."""
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = backend if backend is not None and hasattr(backend, "encode_batch") else None
        self.cache_bytes = cache_budget(cache_bytes)
        self._lock = threading.Lock()
        self._young: dict[str, list[int]] = {}
        self._old: dict[str, list[int]] = {}
        self._ints: dict[int, int] = {}  # the young generation's int object of each id it holds
        self._young_bytes = 0
        self._old_bytes = 0
        self.evictions = 0
        decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
        self._vocabulary = self._vocabulary_state(decoder)
        self._split_tokens = [t for t in self._splittable_added_tokens(decoder) if split_on is None or t in split_on]
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
        cache = self._young  # this dict keeps every entry it has, whatever other threads do meanwhile
        missing = [piece for piece in pieces if piece not in cache]
        if missing:
            fresh = self._remember(missing, cache)
            if fresh is not None:
                return self._join(pieces, cache, fresh)
        ids: list[int] = []
        for piece in pieces:
            ids.extend(cache[piece])
        return ids

    def prefixes(self, text: str) -> PrefixIds:
        """Ids of ``text``'s prefixes, each followed by a short tail, from one tokenization of ``text``."""
        return PrefixIds(self, text)

    def piece_ids(self, pieces: list[str]) -> list[list[int]]:
        """The ids of each piece (text between added tokens, or one added token), memoised as in ``encode``."""
        cache = self._young
        missing = [piece for piece in pieces if piece not in cache]
        fresh = self._remember(missing, cache) if missing else None
        if fresh is None:
            return [cache[piece] for piece in pieces]
        return [cache[piece] if piece not in fresh else fresh[piece] for piece in pieces]

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

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The character span of each of ``text``'s tokens (whole-string tokenization; a token that is part of a
        character, as byte-level BPE makes of rare characters, spans that character)."""
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=False).offsets)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(pair) for pair in encoded["offset_mapping"]]

    def token_id(self, text: str) -> int | None:
        """The id of ``text`` when it is exactly one token."""
        ids = self.encode_whole(text)
        return ids[0] if len(ids) == 1 else None

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @property
    def memoised(self) -> bool:
        return self._splitter is not None

    @property
    def cached_bytes(self) -> int:
        """The accounted size of the piece cache (never above ``cache_bytes``)."""
        with self._lock:
            return self._young_bytes + self._old_bytes

    def current(self) -> bool:
        """Whether the tokenizer still tokenizes as when this was built: same backend, no token added since.

        Cheap enough for every call (one id lookup): a token with new text always gets the next free id, so
        that id being taken means the added tokens, and so the split points and piece ids, changed."""
        backend = self._backend
        if backend is None:
            return len(self.tokenizer) == self._vocabulary
        if getattr(self.tokenizer, "backend_tokenizer", None) is not self._backend:
            return False
        return backend.id_to_token(self._vocabulary) is None

    # -- internals ---------------------------------------------------------------
    def _vocabulary_state(self, added_ids) -> int:
        """The next free id (fast tokenizers, the rule tokenizers' AddedVocabulary assigns ids by), else the size."""
        if self._backend is None:
            return len(self.tokenizer)
        return max([self._backend.get_vocab_size(with_added_tokens=False), *(int(i) + 1 for i in added_ids)])

    def _remember(self, missing: list[str], into: dict[str, list[int]]) -> dict[str, list[int]] | None:
        """Ids of the pieces the young generation lacks, from the old one, else the tokenizer (outside the lock:
        HF fast tokenizers' ``encode_batch`` is thread-safe); then cached. None when all of them landed in
        ``into`` (the reader's dict), else their ids."""
        todo = list(dict.fromkeys(missing))
        old = self._old
        pairs = [(piece, old[piece]) for piece in todo if piece in old] if old else []
        if pairs:  # used again: promoted to the young generation, so what is in use survives the next swap
            todo = [piece for piece in todo if piece not in old]
        if todo and self._backend is not None:
            pairs += zip(todo, [enc.ids for enc in self._backend.encode_batch(todo, add_special_tokens=False)])
        elif todo:
            pairs += [(piece, self.encode_whole(piece)) for piece in todo]
        half, fixed, per_id, per_int, getsizeof = self.cache_bytes // 2, _ENTRY_BYTES, _ID_BYTES, _INT_BYTES, \
            sys.getsizeof
        found: dict[str, list[int]] = {}
        with self._lock:
            young, ints = self._young, self._ints
            landed = young is into
            used = self._young_bytes
            for piece, ids in pairs:
                size = getsizeof(piece) + fixed + per_id * len(ids)  # entry_bytes, inlined: once per new piece
                if size + per_int * len(ids) > half and size + per_int * len(set(ids)) > half:
                    found[piece] = ids
                    landed = False
                    continue  # bigger than a generation: tokenized each time it occurs
                shared, new = _intern(ids, ints)
                if used + size + per_int * new > half:
                    # The young generation becomes the old one; readers still holding the dropped one keep it
                    # alive until they return, and it is never cleared under them.
                    self._old, self._old_bytes = young, used
                    young = self._young = {}
                    ints = self._ints = {}
                    used = 0
                    self.evictions += 1
                    landed = False
                    shared, new = _intern(ids, ints)
                young[piece] = found[piece] = shared  # if another thread cached it meanwhile: counted twice
                used += size + per_int * new
            self._young_bytes = used
        return None if landed else found

    @staticmethod
    def _join(pieces: list[str], cache: dict[str, list[int]], fresh: dict[str, list[int]]) -> list[int]:
        ids: list[int] = []
        for piece in pieces:
            found = fresh.get(piece)
            ids.extend(cache[piece] if found is None else found)
        return ids

    def _forget(self) -> None:
        with self._lock:
            self._young, self._old, self._ints = {}, {}, {}
            self._young_bytes = self._old_bytes = 0

    @staticmethod
    def _splittable_added_tokens(decoder: dict) -> list[str]:
        """Added tokens the tokenizer cuts out verbatim (no stripping, not normalised)."""
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
                    self._forget()
                    return False
        return True


class PrefixIds:
    """The ids of ``text[:end] + tail`` for many ``end`` (the generation prompts of one long conversation are its
    rendering cut at each turn plus a short generation prompt), at a cost that does not grow with ``end``.

    The splitter finds added tokens by trying, at each position, the literal tokens (longest first): what it
    decides at position p depends only on the characters p .. p + longest token. So in ``text[:end] + tail`` every
    added token that starts at or before ``end - longest`` is found exactly where it is found in ``text``, and
    the scan after the last of them starts afresh. The ids are then: the ids of ``text``'s pieces up to the end
    of that token (a count: ``ids(0, count)``), and the tokenization of the rest, ``text[that end:end] + tail``.
    The pieces' id lists are the piece cache's own (no copy of the text's ids is made)."""

    def __init__(self, tokens: SegmentTokenizer, text: str) -> None:
        self.tokens = tokens
        self.text = text
        splitter = tokens._splitter
        self.memoised = splitter is not None
        if splitter is None:
            return  # no pieces: every prompt is tokenized whole (exact, and as slow as before)
        pieces = splitter.split(text)  # text, token, text, token, ..., text
        self.longest = max(map(len, tokens._split_tokens))
        # Offsets and counts are machine ints (array 'q'), not lists of int objects: for a 256-round gpt-oss
        # trajectory they were 11,000 int objects (0.37 MB, 4% of encode's peak memory) alive for the whole call.
        self.starts = array("q")  # where each added token starts in the text
        self.cut_ends = array("q")  # where it ends
        self.cut_counts = array("q")  # how many ids precede its end
        self.lists: list[list[int]] = []  # the non-empty id lists of the pieces, in order
        self.counts = array("q", [0])  # how many ids precede each of them (and, last, the total)
        at = total = 0
        for k, ids in enumerate(tokens.piece_ids(pieces)):
            if ids:
                self.lists.append(ids)
                total += len(ids)
                self.counts.append(total)
            if k % 2:
                self.starts.append(at)
                self.cut_ends.append(at + len(pieces[k]))
                self.cut_counts.append(total)
            at += len(pieces[k])

    def split(self, end: int, tail: str) -> tuple[int, list[int]]:
        """``(count, rest)``: the ids of ``text[:end] + tail`` are ``ids(0, count) + rest``."""
        if not self.memoised:
            return 0, self.tokens.encode(self.text[:end] + tail)
        k = bisect_right(self.starts, end - self.longest) - 1
        cut, count = (self.cut_ends[k], self.cut_counts[k]) if k >= 0 else (0, 0)
        return count, self.tokens.encode(self.text[cut:end] + tail)

    def ids(self, start: int, stop: int) -> list[int]:
        """The text's ids ``start`` to ``stop`` (as ``encode(text)[start:stop]``)."""
        out: list[int] = []
        counts, lists = self.counts, self.lists
        k = bisect_right(counts, start) - 1
        while start < stop and k < len(lists):
            base = counts[k]
            out.extend(lists[k][start - base:stop - base])
            start = counts[k + 1]
            k += 1
        return out
