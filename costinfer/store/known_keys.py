"""Which request keys the store holds, in memory while a dataset is read, so that storing a batch of requests does not
scan every stored request.

A key is 64 hex digits of SHA-256. Here each is its 32 bytes, and its first 8 as an unsigned integer (its prefix).
Levels hold prefixes sorted, each with its key's place: a batch's keys, sorted by prefix, are looked up by binary
search in each level, and a hit is compared on all 32 bytes, so the answer is exact. New keys join as a level of
their own, merged with the level before while that one is at most twice as large (a log-structured merge): adding n
keys costs O(n log n) in all, and a lookup searches O(log n) levels. 48 bytes a key: 48 MB at 1,000,000.

Before this, each write found its stored keys with a semi-join over all of ``requests``: 0.016 s for the first of a
1,000,000-row plan and 0.074 s for its last, growing with the store, so about 35 s in all at 10,000,000 rows. Reading
the keys costs about what a scan does (0.3-0.4 s a million keys, with the sort), so a dataset's first writes still
scan (``dataset.SCANNED_WRITES``) and only a larger dataset reads them: a small dataset beside a large store costs no
more than before, and holds no memory for it."""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_DIGEST = np.dtype("S32")


def digests(keys: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The 32 bytes of each 64-hex-digit key, in order, as an ``S32`` array."""
    array = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if len(array) == 0:
        return np.empty(0, _DIGEST)
    array = array.cast(pa.string())
    offsets = np.frombuffer(array.buffers()[1], np.int32, len(array) + 1, array.offset * 4)
    if array.null_count or np.any(np.diff(offsets) != 64):
        raise ValueError("request keys are 64 hex digits each")
    data = array.buffers()[2]
    raw = binascii.unhexlify(memoryview(data)[offsets[0] : offsets[-1]])
    return np.frombuffer(raw, _DIGEST)


def _prefixes(digest: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest as an unsigned integer (in the machine's byte order: only compared)."""
    return np.ascontiguousarray(digest).view(np.uint64).reshape(-1, 4)[:, 0].copy()


@dataclass(frozen=True)
class Lookup:
    """A batch's keys looked up: ``stored`` (held already) and ``twice`` (listed more than once in the batch), a
    boolean per key in the batch's order."""

    stored: np.ndarray
    twice: np.ndarray
    _sorted: tuple[np.ndarray, np.ndarray, np.ndarray]  # (order, prefixes, digests) by prefix

    def new(self) -> tuple[np.ndarray, np.ndarray]:
        """The keys not held yet, each once, sorted by prefix: what ``KnownKeys.add`` takes after they are stored."""
        order, prefix, digest = self._sorted
        keep = ~self.stored[order]
        keep[1:] &= ~((prefix[1:] == prefix[:-1]) & (digest[1:] == digest[:-1]))  # a repeat's first copy stays
        return prefix[keep], digest[keep]


class KnownKeys:
    def __init__(self, stored: np.ndarray | None = None) -> None:
        self._digests = np.empty(0, _DIGEST)  # every key held, in the order added (with room to grow)
        self._held = 0
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted prefixes, their keys' places), largest first
        if stored is not None and len(stored):  # sorted by place, not moved: 32-byte gathers cost more than the sort
            prefix = _prefixes(stored)
            order = np.argsort(prefix)
            self._digests, self._held = stored, len(stored)  # full: the first key added copies it to a larger one
            self._join(prefix[order], order.astype(np.int64, copy=False))

    @classmethod
    def of(cls, keys: Iterable[pa.Array]) -> KnownKeys:
        """Hold the keys of these arrays of 64-hex-digit keys (stored once each)."""
        parts = [digests(array) for array in keys]
        return cls(np.concatenate(parts) if parts else None)

    def __len__(self) -> int:
        return self._held

    def lookup(self, digest: np.ndarray) -> Lookup:
        """Which of a batch's keys are held, and which the batch lists more than once. The batch is sorted by prefix
        first: a binary search for sorted keys walks the level in order (29 ms for 100,000 keys in 500,000 unsorted,
        4 ms sorted)."""
        prefix = _prefixes(digest)
        order = np.argsort(prefix)
        prefix, ordered = prefix[order], digest[order]
        found = np.zeros(len(digest), bool)
        for level_prefix, place in self._levels:
            at = np.minimum(np.searchsorted(level_prefix, prefix), len(level_prefix) - 1)
            hit = np.flatnonzero(level_prefix[at] == prefix)
            same = self._digests[place[at[hit]]] == ordered[hit]
            found[hit[same]] = True
            for i in hit[~same]:  # a held key alike in its first 8 bytes, not in all 32: look at the others
                j = at[i] + 1
                while j < len(level_prefix) and level_prefix[j] == prefix[i] and not found[i]:
                    found[i] = self._digests[place[j]] == ordered[i]
                    j += 1
        stored, twice = np.empty_like(found), np.zeros(len(digest), bool)
        stored[order] = found
        tie = prefix[1:] == prefix[:-1]  # neighbours alike in their first 8 bytes
        same = tie & (ordered[1:] == ordered[:-1])
        twice[order[1:][same]] = True
        twice[order[:-1][same]] = True
        for i in np.flatnonzero(tie & ~same):  # two keys alike in their first 8 bytes only: rare
            members = order[prefix == prefix[i]]
            group = digest[members]
            twice[members] |= np.array([np.count_nonzero(group == g) > 1 for g in group])
        return Lookup(stored, twice, (order, prefix, ordered))

    def add(self, prefix: np.ndarray, digest: np.ndarray) -> None:
        """Hold these keys too (not held yet, sorted by prefix: ``Lookup.new``). A level holds each key's prefix and
        its place among the digests, so that merging levels moves 16 bytes a key, not 40."""
        if len(digest):
            self._join(prefix, self._append(digest))

    def _append(self, digest: np.ndarray) -> np.ndarray:
        start, end = self._held, self._held + len(digest)
        if end > len(self._digests):
            grown = np.empty(max(end, 2 * len(self._digests)), _DIGEST)
            grown[:start] = self._digests[:start]
            self._digests = grown
        self._digests[start:end] = digest
        self._held = end
        return np.arange(start, end, dtype=np.int64)

    def _join(self, prefix: np.ndarray, place: np.ndarray) -> None:
        level = (prefix, place)
        while self._levels and len(self._levels[-1][0]) <= 2 * len(level[0]):
            below = self._levels.pop()  # two sorted runs: the stable sort (a merge sort) joins them in linear time
            joined = np.concatenate([below[0], level[0]])
            order = np.argsort(joined, kind="stable")
            level = (joined[order], np.concatenate([below[1], level[1]])[order])
        self._levels.append(level)
