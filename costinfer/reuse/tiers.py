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
    near, truncated = _neighbours(vectors, answered + members, members, threshold)
    if similar is not None:
        similar.prefetch(
            sorted({w for p, hits in near.items() for _, e in hits for w in synonym_candidates(texts[p], texts[e])})
        )
    lenders: list[int] = list(answered)
    lending: set[int] = set(lenders)
    deeper = _Lenders(vectors, len(answered) + len(members))
    out: list[tuple[int, int, float]] = []
    for pos in members:
        match = None
        hits = [(sim, e) for sim, e in near.get(pos, []) if e in lending][:TOP_K]
        if pos in truncated and len(hits) < TOP_K and lenders:  # more lenders above the threshold than listed
            hits = [(s, e) for s, e in deeper.search(lenders, pos, TOP_K) if s >= threshold]
        for sim, lender in hits:
            reason = conflict(texts[pos], texts[lender], similar)
            if reason is None:
                match = (lender, sim)
                break
            stats.semantic_vetoed += 1
            stats.vetoes[reason] = stats.vetoes.get(reason, 0) + 1
        if match is None or pos in refused:  # sent: later members may share its answer
            lenders.append(pos)
            lending.add(pos)
        else:
            out.append((pos, match[0], match[1]))
    return out


def _neighbours(
    vectors: np.ndarray, entries: list[int], members: list[int], threshold: float
) -> tuple[dict[int, list[tuple[float, int]]], set[int]]:
    """For each member, the other entries of its group at or above the threshold, most similar first: one search
    for the whole group instead of one per request, and the pairs whose words the guards may compare (encoded in
    one batch: the model's fixed cost per call, about 8 ms on 2 cores, would otherwise outweigh the words). Members
    whose every listed neighbour reached the threshold are ``truncated``: more may lie beyond the list."""
    near: dict[int, list[tuple[float, int]]] = {}
    truncated: set[int] = set()
    if len(entries) < 2:
        return near, truncated
    k = min(2 * TOP_K + 1, len(entries))
    index = _Index(vectors.shape[1], len(entries))
    index.add(_rows(vectors, entries))
    sims, hits = index.search(_rows(vectors, members), k)
    for pos, row_sims, row_hits in zip(members, sims, hits, strict=True):
        listed = [
            (float(sim), entries[h]) for sim, h in zip(row_sims, row_hits, strict=True) if h >= 0 and sim >= threshold
        ]
        if len(listed) == k:
            truncated.add(pos)
        near[pos] = [(sim, e) for sim, e in listed if e != pos]
    return near, truncated


def _rows(vectors: np.ndarray, positions: list[int]) -> np.ndarray:
    """The rows at ``positions``: a view where they are consecutive (a fresh run's single group is every row: a copy
    was 1.5 GB more at 1,000,000 texts), else a copy."""
    if positions and positions[-1] - positions[0] == len(positions) - 1 and positions == sorted(positions):
        return vectors[positions[0] : positions[-1] + 1]
    return vectors[positions]


class _Lenders:
    """A group's lenders to search past a member's listed neighbours (rare: many near-duplicates crowd them): one
    index, made on first need and extended as lenders are added. Made afresh for each such member, as before, it cost
    minutes per member at 1,000,000 rows (an HNSW index of every lender each time), and a run of a million
    near-duplicate-rich rows did not finish."""

    ADD_ROWS = 65_536  # vectors copied into the index at a time (a bounded transient copy)

    def __init__(self, vectors: np.ndarray, most: int) -> None:
        self.vectors = vectors
        self.most = most  # the most lenders the group can have: flat or HNSW is chosen for that size
        self.index: _Index | None = None
        self.ids: list[int] = []  # position of each indexed vector, in the order added

    def search(self, lenders: list[int], pos: int, k: int) -> list[tuple[float, int]]:
        """The ``k`` lenders nearest ``pos``, most similar first (``lenders`` only grows: its new tail is added)."""
        if self.index is None:
            self.index = _Index(self.vectors.shape[1], self.most)
        for start in range(len(self.ids), len(lenders), self.ADD_ROWS):
            new = lenders[start : start + self.ADD_ROWS]
            self.index.add(_rows(self.vectors, new))
            self.ids.extend(new)
        sims, found = self.index.search(self.vectors[pos : pos + 1], min(k, len(self.ids)))
        return [(float(s), self.ids[h]) for s, h in zip(sims[0], found[0], strict=True) if h >= 0]


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
    """Inner-product search over unit vectors: exact (flat) for small groups, HNSW past ``EXACT_SEARCH_LIMIT``."""

    def __init__(self, dim: int, expected: int) -> None:
        import faiss

        self.index: Any
        if expected > EXACT_SEARCH_LIMIT:
            self.index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = 64
        else:
            self.index = faiss.IndexFlatIP(dim)

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return sims, ids
