"""The semantic tier's matching within one group, on vectors made up for the purpose (no embedding model): which
member takes which lender's answer, and the search past the first neighbours when near-duplicates crowd them."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from costinfer.reuse.tiers import TOP_K, DedupeStats, match_group

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="faiss (the semantic extra) is absent"
)


def unit(*rows: tuple[float, ...]) -> np.ndarray:
    v = np.array(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_lender_ranked_behind_many_reused_near_duplicates_is_still_found() -> None:
    # entry 0 was answered before; 1..20 sit closer to each other (cosine ~1) than to it (0.970), and all take its
    # answer, so they lend nothing. The last member's 2*TOP_K+1 nearest entries are all reused ones: its only lender
    # lies beyond them, and must still be found.
    n = 3 * TOP_K
    rng = np.random.default_rng(0)
    rows = [(1.0, 0.25, 0.0)] + [(1.0, 0.0, float(x)) for x in rng.uniform(-1e-3, 1e-3, n)] + [(1.0, 0.0, 0.0)]
    vectors = unit(*rows)
    texts = ["what is the refund policy"] * len(rows)  # the same words: no guard objects
    members = list(range(1, len(rows)))
    stats = DedupeStats()
    matched = match_group(vectors, texts, [0], members, 0.95, None, stats, refused=set())
    assert [(pos, lender) for pos, lender, _ in matched] == [(pos, 0) for pos in members]
    assert all(abs(sim - 0.970) < 1e-3 for _, _, sim in matched)


def test_members_lend_in_input_order_and_a_refused_member_is_sent_and_lends() -> None:
    vectors = unit((1.0, 0.0), (1.0, 0.01), (1.0, 0.02), (0.0, 1.0))
    texts = ["reset my password", "reset my password", "reset my password", "where is my parcel"]
    stats = DedupeStats()
    matched = match_group(vectors, texts, [], [0, 1, 2, 3], 0.95, None, stats, refused={0})
    assert [(pos, lender) for pos, lender, _ in matched] == [(1, 0), (2, 0)]  # 0 opted out of taking, not of lending


def test_a_guard_objection_moves_on_to_the_next_lender_and_is_counted() -> None:
    vectors = unit((1.0, 0.0), (1.0, 0.02), (1.0, 0.004))
    texts = ["refund order 1234", "refund order 1243", "refund order 1243 please"]
    stats = DedupeStats()
    matched = match_group(vectors, texts, [0, 1], [2], 0.95, None, stats, refused=set())
    assert [(pos, lender) for pos, lender, _ in matched] == [(2, 1)]  # 0 is nearer but its number differs
    assert stats.semantic_vetoed == 1 and stats.vetoes == {"numbers differ": 1}


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_the_search_past_crowded_neighbours_searches_the_group_index_for_its_lenders(
    monkeypatch: pytest.MonkeyPatch, index: str
) -> None:
    """Three clusters of near-duplicates, each behind an earlier answer: most members find their lender only past
    their listed neighbours. The group's one index is searched again, restricted to the lenders so far (a second
    index of the lenders cost minutes at a million rows; one per such member, before that, never finished), and
    every member still takes the lender an exact search of the lenders at its turn gives, with the exact cosine,
    whether the index is flat or HNSW over half-precision vectors."""
    from costinfer.reuse import tiers

    made: list[int] = []

    class Counted(tiers._Index):
        def __init__(self, vectors: np.ndarray, expected: int) -> None:
            made.append(expected)
            super().__init__(vectors, expected)

    monkeypatch.setattr(tiers, "_Index", Counted)
    if index == "hnsw":
        monkeypatch.setattr(tiers, "EXACT_SEARCH_LIMIT", 0)
    rng = np.random.default_rng(1)
    n = 3 * TOP_K
    rows, answered, members, cluster_of = [], [], [], {}
    for c in range(3):
        answered.append(len(rows))
        rows.append((1.0, *(0.25 * (d == c) for d in range(3))))
        cluster_of[answered[-1]] = c
    for i in range(3 * n):  # the three clusters' members, interleaved
        c = i % 3
        jitter = rng.uniform(-1e-3, 1e-3, 4)
        members.append(len(rows))
        cluster_of[members[-1]] = c
        rows.append(tuple(float(1.0 + jitter[0] if d == 0 else 0.05 * (d == c + 1) + jitter[d]) for d in range(4)))
    vectors = unit(*rows)
    texts = ["what is the refund policy"] * len(rows)
    matched = match_group(vectors, texts, answered, members, 0.9, None, DedupeStats(), refused=set())
    # the reference: each member in turn, an exact search of the lenders so far
    lenders, expected = list(answered), []
    for pos in members:
        sims = vectors[lenders] @ vectors[pos]
        best = int(np.argmax(sims))
        if sims[best] >= 0.9:
            expected.append((pos, lenders[best], float(sims[best])))
        else:
            lenders.append(pos)
    assert [(pos, lender) for pos, lender, _ in matched] == [(pos, lender) for pos, lender, _ in expected]
    assert [sim for _, _, sim in matched] == pytest.approx([sim for _, _, sim in expected], abs=1e-6)
    assert all(cluster_of[pos] == cluster_of[lender] for pos, lender, _ in expected) and len(expected) == 3 * n
    assert made == [len(answered) + len(members)]  # the group's index, and no other


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_members_sent_before_and_after_the_first_search_past_the_crowd_are_found_as_lenders(
    monkeypatch: pytest.MonkeyPatch, index: str
) -> None:
    """The first member is sent (nothing to borrow from) before any search past the crowd; a member that opted out
    is sent after the first such search. Both must be found by it: the later near-duplicates take the opted-out one,
    which is nearer, and none takes an answer from a member that did not lend."""
    from costinfer.reuse import tiers

    if index == "hnsw":
        monkeypatch.setattr(tiers, "EXACT_SEARCH_LIMIT", 0)
    rng = np.random.default_rng(2)
    rows = [(1.0, 0.3, 0.0, 0.0)]  # the head: cosine 0.958 with the crowd
    for _ in range(4 * TOP_K):
        jitter = rng.uniform(-1e-3, 1e-3, 3)
        rows.append((1.0, float(jitter[0]), float(jitter[1]), float(jitter[2])))
    vectors = unit(*rows)
    texts = ["what is the refund policy"] * len(rows)
    members = list(range(len(rows)))
    opted_out = 2 * TOP_K + 4  # well after the first search past the crowd
    matched = match_group(vectors, texts, [], members, 0.95, None, DedupeStats(), refused={opted_out})
    lenders, expected = [], []
    for pos in members:
        sims = vectors[lenders] @ vectors[pos] if lenders else np.array([])
        best = int(np.argmax(sims)) if lenders else -1
        if pos != opted_out and lenders and sims[best] >= 0.95:
            expected.append((pos, lenders[best]))
        else:
            lenders.append(pos)
    assert lenders == [0, opted_out]
    assert [(pos, lender) for pos, lender, _ in matched] == expected
    assert {lender for _, lender, _ in matched} == {0, opted_out}
