"""The reuse tiers after exact de-duplication, cheapest first: normalized text, then semantic similarity.

For each distinct request of a run that no earlier answer matches exactly, this decides whether another request's
answer can serve it, and records that in ``run_keys`` (``answer_key``, ``tier``, ``similarity``) before anything is
sent. Reuse never chains: only requests that were (or will be) really sent lend their answers.

- **normalized**: the same request once texts are normalized (NFKC, case, white space). An earlier answer wins;
  otherwise the run's first such request is sent and the others share its answer.
- **semantic**: within a group of requests identical except for the text of their last user message, a text whose
  embedding has cosine similarity >= the threshold with an earlier answered text, or with a text this run will send,
  shares that answer, unless a guard objects (numbers, negations, quoted strings, named entities, a content word in
  one text only, one vs many, roles differ: ``guards.py``, ``content.py``).

A request that lends in the normalized tier may itself borrow in the semantic one; its borrowers are then moved to
its lender (``Store.flatten_reuse``), so every borrower's lender is a request that is really sent or answered.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from costinfer.reuse.content_words import WordSimilarity
from costinfer.reuse.guards import conflict, synonym_candidates
from costinfer.spec import DEFAULT_THRESHOLD
from costinfer.store.faces import Reuse

EXACT_SEARCH_LIMIT = 50_000  # vectors in one group above which search switches from exact to HNSW (benchmarks)
HNSW_M = 32  # links per vector
HNSW_EF_SEARCH = 64  # candidates kept while searching
APPROXIMATION_MARGIN = 0.002  # half-precision cosines within this of the threshold are recomputed in float32
SEARCH_ROWS = 16_384  # members searched at a time (bounds the hits and the recomputed cosines held at once)
TOP_K = 8
TEMPLATE_MIN_GROUP = 8


@dataclass
class DedupeStats:
    normalized: int = 0
    semantic: int = 0
    semantic_vetoed: int = 0  # matches above the threshold that a guard refused
    embeddings_computed: int = 0
    semantic_note: str | None = None
    vetoes: dict[str, int] = field(default_factory=dict)


def resolve(
    store: Reuse,
    run_id: str,
    embedder: Any | None,
    threshold: float = DEFAULT_THRESHOLD,
    opt_out: set[str] | None = None,
) -> DedupeStats:
    """``opt_out``: keys that must not take a semantic answer (a row asked so); they may still lend theirs."""
    stats = DedupeStats()
    stats.normalized = _normalized(store, run_id)
    if embedder is not None:
        _semantic(store, run_id, embedder, threshold, stats, opt_out or set())
        stats.embeddings_computed = embedder.computed
    store.flatten_reuse(run_id)  # a lender that borrowed in a later tier hands its borrowers that answer
    return stats


def _normalized(store: Reuse, run_id: str) -> int:
    rows = store.normalized_matches(run_id)
    store.set_reuse(run_id, [(k, a, "normalized", 1.0) for k, a in rows])
    return len(rows)


def _semantic(
    store: Reuse, run_id: str, embedder: Any, threshold: float, stats: DedupeStats, opt_out: set[str]
) -> None:
    candidates = store.semantic_candidates(run_id)
    if not candidates:
        return
    answered = store.answered_in_groups(sorted({g for _, g, _ in candidates}))
    texts = [t for _, _, t in answered] + [t for _, _, t in candidates]
    by_group: dict[str, list[int]] = defaultdict(list)  # group -> indexes of answered entries
    for i, (_, group, _) in enumerate(answered):
        by_group[group].append(i)
    members_of: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate([g for _, g, _ in answered] + [g for _, g, _ in candidates]):
        members_of[group].append(i)
    compared = list(texts)
    for members in members_of.values():
        for i, core in zip(members, strip_shared([texts[i] for i in members]), strict=True):
            compared[i] = core
    vectors = embedder.embed(compared)
    similar = WordSimilarity(embedder.encode)
    keys = [k for k, _, _ in answered] + [k for k, _, _ in candidates]
    reuse: list[tuple[str, str, str, float]] = []
    offset = len(answered)
    cand_by_group: dict[str, list[int]] = defaultdict(list)
    for j, (_, group, _) in enumerate(candidates):
        cand_by_group[group].append(offset + j)
    refused = {offset + j for j, (k, _, _) in enumerate(candidates) if k in opt_out}
    for group, members in cand_by_group.items():
        for pos, lender, sim in match_group(
            vectors, texts, by_group[group], members, threshold, similar, stats, refused
        ):
            reuse.append((keys[pos], keys[lender], "semantic", round(min(sim, 1.0), 6)))
    store.set_reuse(run_id, reuse)
    stats.semantic = len(reuse)


def match_group(
    vectors: np.ndarray,
    texts: list[str],
    answered: list[int],
    members: list[int],
    threshold: float,
    similar: WordSimilarity | None,
    stats: DedupeStats,
    refused: set[int],
) -> list[tuple[int, int, float]]:
    """(member, lender, cosine) for each member of one group that takes an earlier answer. ``answered``: positions
    (in ``vectors``/``texts``) of entries answered before; ``members``: this run's, in input order. A member takes the
    first of its most similar lenders (top ``TOP_K`` at or above the threshold) that no guard objects to; one that
    takes none, or is in ``refused`` (its row opted out), is sent and lends to later members."""
    entries = answered + members
    near, truncated, index = _neighbours(vectors, entries, members, threshold)
    if similar is not None:
        similar.prefetch(
            sorted({w for p, hits in near.items() for _, e in hits for w in synonym_candidates(texts[p], texts[e])})
        )
    lending: set[int] = set(answered)
    deeper = _Lenders(index, entries, len(answered))
    out: list[tuple[int, int, float]] = []
    for place, pos in enumerate(members, start=len(answered)):
        match = None
        hits = [(sim, e) for sim, e in near.get(pos, []) if e in lending][:TOP_K]
        if pos in truncated and len(hits) < TOP_K and lending:  # more lenders above the threshold than listed
            hits = deeper.search(vectors, pos, TOP_K, threshold)
        for sim, lender in hits:
            reason = conflict(texts[pos], texts[lender], similar)
            if reason is None:
                match = (lender, sim)
                break
            stats.semantic_vetoed += 1
            stats.vetoes[reason] = stats.vetoes.get(reason, 0) + 1
        if match is None or pos in refused:  # sent: later members may share its answer
            lending.add(pos)
            deeper.lend(place)
        else:
            out.append((pos, match[0], match[1]))
    return out


def _neighbours(
    vectors: np.ndarray, entries: list[int], members: list[int], threshold: float
) -> tuple[dict[int, list[tuple[float, int]]], set[int], _Index | None]:
    """For each member, the other entries of its group at or above the threshold, most similar first: one index for
    the whole group instead of one per request, searched a slice of members at a time. Members whose every listed
    neighbour reached the threshold are ``truncated``: more may lie beyond the list. The index is returned for the
    search past the list (``_Lenders``). The cosines are exact (``_Index.exact``), whatever the index stores."""
    near: dict[int, list[tuple[float, int]]] = {}
    truncated: set[int] = set()
    if len(entries) < 2:
        return near, truncated, None
    k = min(2 * TOP_K + 1, len(entries))
    index = _Index(vectors, len(entries))
    for start in range(0, len(entries), SEARCH_ROWS):
        index.add(_rows(vectors, entries[start : start + SEARCH_ROWS]))
    ids = np.asarray(entries, dtype=np.int64)
    for start in range(0, len(members), SEARCH_ROWS):
        part = members[start : start + SEARCH_ROWS]
        sims, hits = index.search(_rows(vectors, part), k)
        positions = _positions_of(ids, hits)
        sims, full = index.exact(np.asarray(part, dtype=np.int64), positions, sims, threshold)
        for pos, row_sims, row_hits, is_full in zip(part, sims, positions, full, strict=True):
            listed = _most_similar(row_sims, row_hits, threshold)
            if is_full:
                truncated.add(pos)
            others = [(sim, e) for sim, e in listed if e != pos]
            if others:  # most members have none: a million empty lists held 132 MB
                near[pos] = others
    return near, truncated, index


def _rows(vectors: np.ndarray, positions: list[int]) -> np.ndarray:
    """The rows at ``positions``: a view where they are consecutive (a fresh run's single group is every row: a copy
    was 1.5 GB more at 1,000,000 texts), else a copy."""
    if positions and positions[-1] - positions[0] == len(positions) - 1 and positions == sorted(positions):
        return vectors[positions[0] : positions[-1] + 1]
    return vectors[positions]


class _Lenders:
    """A group's lenders to search past a member's listed neighbours (rare: many near-duplicates crowd them). The
    group's own index is searched, restricted to the entries that lend so far (a bitmap of index ids). A separate
    index of the lenders cost a second build (1.7 minutes and about 1.8 GB at 1,000,000 rows); one made afresh for
    each such member, before that, cost minutes per member, and a million-row run did not finish."""

    EF_SEARCH = 256  # HNSW: candidates kept while searching past the crowd of reused near-duplicates

    def __init__(self, index: _Index | None, entries: list[int], lenders: int) -> None:
        self.index = index
        self.entries = entries
        self.answered = lenders  # the first entries, answered before, lend from the start
        self.sent: list[int] = []  # index ids of members sent before the first search (then the bitmap has them)
        self.bits: np.ndarray | None = None  # bit i: the entry with index id i lends; made on first search
        self._positions: np.ndarray | None = None
        self._params: Any = None

    def lend(self, i: int) -> None:
        """The entry with index id ``i`` (its place in ``entries``) lends from now on."""
        if self.bits is None:
            self.sent.append(i)
        else:
            self.bits[i >> 3] |= np.uint8(1 << (i & 7))

    def _start(self, index: _Index) -> None:
        """The bitmap of the lenders so far, and the search parameters that read it (a group of one member, the
        common case, never gets here: 12 µs a group saved)."""
        faiss = _faiss()
        self.bits = np.zeros((len(self.entries) + 7) // 8, dtype=np.uint8)
        self.bits[: self.answered // 8] = 0xFF
        for i in [*range(self.answered // 8 * 8, self.answered), *self.sent]:
            self.lend(i)
        self._positions = np.asarray(self.entries, dtype=np.int64)
        selector = faiss.IDSelectorBitmap(len(self.entries), faiss.swig_ptr(self.bits))  # reads ``bits`` live
        self._params = index.params(selector, self.EF_SEARCH)
        self._selector = selector  # kept alive as long as the parameters that point to it

    def search(self, vectors: np.ndarray, pos: int, k: int, threshold: float) -> list[tuple[float, int]]:
        """The ``k`` lenders nearest ``pos`` at or above the threshold, most similar first."""
        if self.index is None:
            return []
        if self.bits is None:
            self._start(self.index)
        assert self._positions is not None
        sims, hits = self.index.search(vectors[pos : pos + 1], k, self._params)
        found = _positions_of(self._positions, hits)
        sims, _ = self.index.exact(np.array([pos], dtype=np.int64), found, sims, threshold)
        return _most_similar(sims[0], found[0], threshold)


def _positions_of(ids: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """The positions (in ``vectors``) of the index ids a search found; -1 where it found none."""
    return np.where(hits >= 0, ids[np.maximum(hits, 0)], -1)


def _most_similar(sims: np.ndarray, positions: np.ndarray, threshold: float) -> list[tuple[float, int]]:
    """(cosine, position) of the entries found at or above the threshold, most similar first, the earlier entry
    first among equals (a text repeated in a group)."""
    found = [(float(s), int(e)) for s, e in zip(sims, positions, strict=True) if e >= 0 and s >= threshold]
    return sorted(found, key=lambda hit: (-hit[0], hit[1]))


def strip_shared(texts: list[str]) -> list[str]:
    """Drop the words that every text of a group starts or ends with (a prompt template's fixed parts), so that
    similarity is measured on what varies. Only in groups of ``TEMPLATE_MIN_GROUP`` texts or more: in a handful of
    texts, shared words are as likely to be meaning as template. A text left empty keeps its full form."""
    if len(texts) < TEMPLATE_MIN_GROUP:
        return texts
    words = [t.split() for t in texts]
    shortest = min(len(w) for w in words)
    head = 0
    while head < shortest and all(w[head] == words[0][head] for w in words):
        head += 1
    tail = 0
    while tail < shortest - head and all(w[-1 - tail] == words[0][-1 - tail] for w in words):
        tail += 1
    out = []
    for text, w in zip(texts, words, strict=True):
        core = " ".join(w[head : len(w) - tail])
        out.append(core or text)
    return out


class _Index:
    """Inner-product search over unit vectors: exact (flat) for small groups; past ``EXACT_SEARCH_LIMIT``, HNSW over
    half-precision copies of the vectors, whose cosines ``exact`` recomputes from the float32 vectors. At 1,000,000
    real prompts: 981 MB against 1,738 MB over float32 copies, the same recall (501 of 504 sampled pairs at or above
    0.95), about 12% slower to build (175 s against 156 s) and to search. M=16 built in 98 s but found 493."""

    def __init__(self, vectors: np.ndarray, expected: int) -> None:
        faiss = _faiss()
        self.vectors = vectors
        dim = vectors.shape[1]
        self.index: Any
        self.approximate = expected > EXACT_SEARCH_LIMIT
        if self.approximate:
            fp16 = faiss.ScalarQuantizer.QT_fp16
            self.index = faiss.IndexHNSWSQ(dim, fp16, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            self.index = faiss.IndexFlatIP(dim)

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def params(self, selector: Any, ef_search: int) -> Any:
        """Search parameters restricting results to ``selector``'s ids."""
        faiss = _faiss()
        if self.approximate:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef_search)
        return faiss.SearchParameters(sel=selector)

    def search(self, vectors: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k, params=params)
        return sims, ids

    def exact(
        self, queries: np.ndarray, found: np.ndarray, sims: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The cosines of each query's row (a position in ``vectors``) with the positions ``found`` for it (-1: none),
        recomputed in float32 where the index's may be near the threshold, and for each query whether every one
        found is at or above the threshold (more may lie beyond them). A flat index's cosines are exact already."""
        full = (found >= 0).all(axis=1) & (sims >= threshold - APPROXIMATION_MARGIN).all(axis=1)
        if not self.approximate:
            return sims, np.asarray(full & (sims >= threshold).all(axis=1))
        out = np.full(sims.shape, -1.0, dtype=np.float32)
        near = (found >= 0) & (found != queries[:, None]) & (sims >= threshold - APPROXIMATION_MARGIN)
        rows, cols = np.nonzero(near)  # a query found itself: left out, it never lends to itself
        if len(rows):
            left = self.vectors[queries[rows]]
            out[rows, cols] = np.einsum("ij,ij->i", left, self.vectors[found[rows, cols]])
        return out, np.asarray(full)


def _faiss() -> Any:
    """faiss, untyped: its stubs lack the search parameters and the scalar quantizer's types."""
    import faiss

    return faiss
