"""``--route learned``: predict, before paying for it, whether the cheapest candidate's answer will fail the check,
and send the requests predicted to fail straight to the next candidate.

The router learns from the store's own history: every answer of the cheapest candidate that a cascade's check judged
(the same checks, ``runs.route_check``), in any earlier run and in this run's earlier rounds. A request's chance of
failing is that of its nearest checked neighbours (k-nearest neighbours on the embeddings of the requests' last
message, weighted by a softmax of their cosine similarity, shrunk toward the base rate by one pseudo-answer; the
prompt's length and ``max_tokens`` join the vector when they vary). k-NN was measured against a logistic regression
on the same embeddings (banking77, failures by intent, 1,000 checked answers): at a chance of 0.5 k-NN found 83-89%
of the failures at 90% precision, the regression 27% (the failing topics are clusters, not a half-space).

Which chance is high enough is decided by money, not fixed: each round replays the history leaving each answer out,
and picks the threshold that would have saved the most against the cascade at the run's prices (a request sent
straight to the strong model saves the cheap call when the cheap answer would have failed, and pays the strong call
instead of the cheap one when it would have passed). With no threshold saving at least ``MIN_GAIN`` of the cascade's
cost on the history (failures at random, say), no request skips the cheap model: the run is the cascade. So is a run
with fewer than ``MIN_HISTORY`` checked answers, until its own rounds have checked enough.

A request predicted to fail still goes to the cheap model in ``EXPLORE`` of cases (chosen by a hash of its key and
the seed), so that the router keeps seeing what it predicts. Rows are decided a round at a time (``ROUND_ROWS`` in
input order) and each round learns from the checks of the rounds before it; the rounds and the decisions are kept in
the store (``route_learned``), so a run resumed after a kill makes the same choices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from costinfer.pricing.catalog import ModelPrice
from costinfer.routing.assign import send_to
from costinfer.store.faces import LearnedRoutes

MIN_HISTORY = 50
ROUND_ROWS = 500
EXPLORE = 0.05
NEIGHBOURS = 10
TEMPERATURE = 0.05
MIN_GAIN = 0.01
THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5 to 0.95
_BLOCK = 1024  # queries compared with the history at a time: memory bounded by 1,024 x history


@dataclass
class RoundDecision:
    """What one round decided: how many checked answers it learned from, the threshold, and its requests by
    decision, with the expected failures among those left to the cheap model (the escalations to plan for)."""

    round: int
    history: int
    threshold: float | None
    decisions: dict[str, int] = field(default_factory=dict)
    expected_failures: float = 0.0
    note: str = ""


def fail_chance(
    history: np.ndarray, failed: np.ndarray, queries: np.ndarray, *, leave_one_out: bool = False
) -> np.ndarray:
    """Each query's chance that the cheap answer fails, from its nearest checked answers (rows of ``history``, unit
    vectors; ``failed`` 1.0 or 0.0). ``leave_one_out``: the queries are the history itself, each without its own."""
    base = float(failed.mean()) if len(failed) else 0.0
    k = min(NEIGHBOURS, len(history) - (1 if leave_one_out else 0))
    out = np.full(len(queries), base, dtype=np.float64)
    if k <= 0:
        return out
    for start in range(0, len(queries), _BLOCK):
        block = queries[start : start + _BLOCK]
        sims = block @ history.T
        if leave_one_out:
            sims[np.arange(len(block)), start + np.arange(len(block))] = -np.inf
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(sims, idx, 1)
        weights = np.exp((near - near.max(axis=1, keepdims=True)) / TEMPERATURE)
        out[start : start + len(block)] = ((weights * failed[idx]).sum(axis=1) + base) / (weights.sum(axis=1) + 1.0)
    return out


def best_threshold(
    chance: np.ndarray, failed: np.ndarray, cheap_cost: np.ndarray, strong_cost: np.ndarray
) -> tuple[float | None, float]:
    """The threshold that would have saved the most against the cascade on the history, and the share of the
    cascade's cost it saves; None when none saves at least ``MIN_GAIN``."""
    cascade = float((cheap_cost + failed * strong_cost).sum())
    per_row = cheap_cost - (1.0 - failed) * strong_cost  # what sending the row straight to the strong model saves
    best, best_gain = None, 0.0
    for t in THRESHOLDS:
        gain = float(per_row[chance >= t].sum())
        if gain > best_gain:
            best, best_gain = t, gain
    share = best_gain / cascade if cascade > 0 else 0.0
    return (best, share) if share >= MIN_GAIN else (None, share)


def explores(key: str, seed: int) -> bool:
    """Whether a request predicted to fail goes to the cheap model anyway (``EXPLORE`` of them, by a hash)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < EXPLORE


class LearnedRouter:
    """Decides a learned run's rounds, one after another (``decide_next``), in the store."""

    def __init__(
        self,
        store: LearnedRoutes,
        run_id: str,
        candidates: list[str],
        prices: dict[str, ModelPrice],
        endpoint: str,
        check: str,
        embed: Callable[[list[str]], np.ndarray] | None,
        seed: int = 0,
    ) -> None:
        self.store, self.run_id, self.endpoint, self.check = store, run_id, endpoint, check
        self.cheap, self.strong = candidates[0], candidates[1]
        self.cheap_price, self.strong_price = prices[self.cheap], prices[self.strong]
        self.embed, self.seed = embed, seed

    def start(self) -> int:
        """The run's rounds (made once; a resumed run keeps its own)."""
        return self.store.learned_rounds(self.run_id, self.cheap, ROUND_ROWS)

    def decide_next(self) -> RoundDecision | None:
        """Decide the first undecided round from the history so far; None when every round is decided."""
        round_ = self.store.undecided_round(self.run_id)
        if round_ is None:
            return None
        requests = self.store.round_requests(self.run_id, round_)
        history = self.store.check_history(self.cheap, self.check, self.run_id, round_)
        result = RoundDecision(round_, len(history), None)
        if self.embed is None:
            result.note = "learned routing off (the semantic extra is not installed): a plain cascade"
        elif len(history) < MIN_HISTORY:
            result.note = (
                f"learned routing: {len(history)} checked answers of {self.cheap} in the store ({MIN_HISTORY} "
                f"needed): round {round_ + 1} is a plain cascade, and its checks teach the next"
            )
        else:
            return self._predict(result, requests, history)
        self.store.decide(self.run_id, [(str(r["key"]), None, None, len(history), "cascade") for r in requests])
        result.decisions = {"cascade": len(requests)}
        return result

    def _predict(
        self, result: RoundDecision, requests: list[dict[str, Any]], history: list[dict[str, Any]]
    ) -> RoundDecision:
        assert self.embed is not None
        known = features(self.embed, history)
        failed, cheap, strong = history_costs(history, self.cheap_price, self.strong_price)
        threshold, share = best_threshold(fail_chance(known, failed, known, leave_one_out=True), failed, cheap, strong)
        result.threshold = threshold
        chance = fail_chance(known, failed, features(self.embed, requests, history)) if requests else np.zeros(0)
        decisions: list[tuple[str, float | None, float | None, int, str]] = []
        moves: list[tuple[str, str, str]] = []
        for request, p in zip(requests, chance, strict=True):
            key = str(request["key"])
            if threshold is None or p < threshold:
                decision = "cheap"
                result.expected_failures += float(p)
            elif explores(key, self.seed):
                decision = "explore"
                result.expected_failures += float(p)
            else:
                decision = "strong"
                moves.append((key, self.strong, f"learned: {p:.0%} chance {self.cheap} fails the check"))
            decisions.append((key, float(p), threshold, len(history), decision))
            result.decisions[decision] = result.decisions.get(decision, 0) + 1
        send_to(self.store, self.run_id, moves, self.endpoint)
        self.store.decide(self.run_id, decisions)
        if threshold is None:
            result.note = (
                f"learned routing: {len(history)} checked answers of {self.cheap} do not predict its failures well "
                f"enough to pay (best replayed saving {share:.1%} of the cascade's cost): a plain cascade"
            )
        else:
            result.note = (
                f"learned routing: from {len(history)} checked answers, {result.decisions.get('strong', 0)} requests "
                f"of round {result.round + 1} predicted to fail go straight to {self.strong} (chance >= "
                f"{threshold:.2f}; {share:.0%} saved on the replayed history)"
            )
        return result


def features(
    embed: Callable[[list[str]], np.ndarray], rows: list[dict[str, Any]], reference: list[dict[str, Any]] | None = None
) -> np.ndarray:
    """Unit vectors: the embedding of each request's last message, with its length and max_tokens (z-scored on
    ``reference``, the history, else on ``rows``) when they vary."""
    vectors = embed([str(r["text"] or "") for r in rows])
    base = reference if reference is not None else rows
    extra = []
    for name in ("input_tokens", "max_tokens"):
        ref = np.log1p(np.array([float(r[name]) for r in base]))
        if ref.std() > 0:
            values = np.log1p(np.array([float(r[name]) for r in rows]))
            extra.append(0.15 * (values - ref.mean()) / ref.std())
    if extra:
        vectors = np.hstack([vectors, np.stack(extra, axis=1)])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def history_costs(
    history: list[dict[str, Any]], cheap: ModelPrice, strong: ModelPrice
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(failed, cheap cost, strong cost) of checked answers: each request's counted input and the cheap answer's
    billed output (half of max_tokens when unknown) at each model's list price."""
    failed = np.array([1.0 if h["failed"] else 0.0 for h in history])
    out = np.array([float(h["billed_output"] or h["max_tokens"] / 2) for h in history])
    tokens = np.array([float(h["input_tokens"]) for h in history])
    return (
        failed,
        tokens * float(cheap.input) + out * float(cheap.output),
        tokens * float(strong.input) + out * float(strong.output),
    )
