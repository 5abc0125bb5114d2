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
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from costinfer.core.content import WordSimilarity
from costinfer.core.guards import conflict
from costinfer.store import Store

DEFAULT_THRESHOLD = 0.95  # calibrated on STS-B train+dev (docs/semantic.md); --semantic-threshold overrides it
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
    store: Store,
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
    return stats


def _normalized(store: Store, run_id: str) -> int:
    rows = store.normalized_matches(run_id)
    store.set_reuse(run_id, [(k, a, "normalized", 1.0) for k, a in rows])
    return len(rows)


def _semantic(
    store: Store, run_id: str, embedder: Any, threshold: float, stats: DedupeStats, opt_out: set[str]
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
    for group, members in cand_by_group.items():
        index = _Index(vectors.shape[1], len(by_group[group]) + len(members))
        lenders: list[int] = []  # positions (in keys/texts) of the entries in the index
        if by_group[group]:
            index.add(vectors[by_group[group]])
            lenders.extend(by_group[group])
        for pos in members:
            match = None
            if lenders:
                sims, hits = index.search(vectors[pos : pos + 1], min(TOP_K, len(lenders)))
                for sim, hit in zip(sims[0], hits[0], strict=True):
                    if hit < 0 or sim < threshold:
                        break
                    reason = conflict(texts[pos], texts[lenders[hit]], similar)
                    if reason is None:
                        match = (lenders[hit], float(sim))
                        break
                    stats.semantic_vetoed += 1
                    stats.vetoes[reason] = stats.vetoes.get(reason, 0) + 1
            if match is not None and keys[pos] in opt_out:
                match = None  # a row of this request opted out: it is sent, and may lend its answer
            if match is None:
                index.add(vectors[pos : pos + 1])  # this request will be sent: later ones may share its answer
                lenders.append(pos)
            else:
                reuse.append((keys[pos], keys[match[0]], "semantic", round(min(match[1], 1.0), 6)))
    store.set_reuse(run_id, reuse)
    stats.semantic = len(reuse)


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
