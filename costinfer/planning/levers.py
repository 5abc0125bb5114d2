"""What the plan expects each lever to save against the naive cost (every row sent as a call of its own): the reuse
tiers, routing, the provider's prompt cache and batch pricing. And, for ``--route cascade``, the escalations the plan
expects: the share of cheap answers that failed the check in earlier runs of the dataset (10 checked answers or
more), else an assumed ``ASSUMED_ESCALATION`` of them, said as such. For ``--route learned``, the requests its first
round sent straight to the strong model (the cheap calls it skips), the escalations its predictions expect among the
rest (the cascade's share for rounds not decided yet), and its expected cost against the plain cascade and the strong
model alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from costinfer.backends.prompt_cache import PromptCache
from costinfer.planning.plan import MIN_SAMPLES, ModelLine, OutputModel, Plan, ceil_tokens
from costinfer.pricing.catalog import ModelPrice
from costinfer.reading.tokens import TokenCounter
from costinfer.store.faces import Planning

ASSUMED_ESCALATION = Decimal("0.2")
SHORTEST_CACHED = 1024  # no provider caches a prefix under 1,024 tokens
ZERO = Decimal(0)


@dataclass
class RoutingInput:
    candidates: list[str]
    policy: str


@dataclass
class Expected:
    """One request shape's expected cost at a given model."""

    learned: OutputModel
    prices: dict[str, ModelPrice]

    def cost(self, model: str, max_tokens: int, n: int, counted: int) -> Decimal:
        per_request, _ = self.learned.expected(model, max_tokens)
        tokens_in = ceil_tokens(counted * self.learned.input_correction(model))
        return self.prices[model].cost(tokens_in, ceil_tokens(per_request * n))


def add_levers(
    plan: Plan,
    store: Planning,
    run_id: str,
    prices: dict[str, ModelPrice],
    input_path: str | None,
    routing: RoutingInput | None,
    prompt_cache: PromptCache | None,
) -> None:
    """Fill ``plan.levers`` (and ``plan.routing``, with the cascade's expected escalations as model lines)."""
    expected = Expected(OutputModel(store, input_path), prices)
    levers: dict[str, Decimal] = {}
    reused = plan.duplicates or plan.cache_hits or plan.normalized or plan.semantic
    for lever, model, max_tokens, rows, tokens in (
        store.reused_groups(run_id, cache=plan.cache_hits > 0) if reused else []
    ):
        if model in prices:
            levers[lever] = levers.get(lever, ZERO) + expected.cost(model, max_tokens, rows, tokens)
    if routing is not None:
        plan.routing = _routing(plan, store, run_id, expected, routing, input_path)
        levers["routing"] = Decimal(plan.routing["saved_usd"])
    if prompt_cache is not None and plan.longest_prompt >= SHORTEST_CACHED:  # else no prefix is cached
        levers["prompt_cache"] = _prompt_cache(store, run_id, prices, prompt_cache)
    batch = plan.expected_cost_usd - plan.expected_batch_cost_usd
    if batch > 0:
        levers["batch_if_chosen"] = batch
    plan.levers = {k: v for k, v in levers.items() if v}


def _routing(
    plan: Plan, store: Planning, run_id: str, expected: Expected, routing: RoutingInput, input_path: str | None
) -> dict[str, Any]:
    candidates, strongest = routing.candidates, routing.candidates[-1]
    by_model: dict[str, int] = {}
    with_routing = without = ZERO
    escalations: dict[str, ModelLine] = {}
    share_note = None
    alone = dict.fromkeys(candidates, ZERO)  # every routed request on one candidate, for each candidate
    for model, max_tokens, n, counted, bound in store.routed_pending(run_id):
        by_model[model] = by_model.get(model, 0) + n
        for candidate in candidates:
            alone[candidate] += expected.cost(candidate, max_tokens, n, counted)
        with_routing += expected.cost(model, max_tokens, n, counted)
        without += expected.cost(strongest, max_tokens, n, counted)
        if routing.policy not in ("cascade", "learned") or model == strongest or model not in candidates:
            continue
        share, share_note = _escalation_share(store, input_path, model, run_id)
        if routing.policy == "learned" and model == candidates[0]:
            share, share_note = _learned_share(store, run_id, share, share_note)
        stronger = candidates[candidates.index(model) + 1]
        moved = ceil_tokens(share * n)
        cost = expected.cost(stronger, max_tokens, moved, ceil_tokens(counted * share))
        with_routing += cost
        price = expected.prices[stronger]
        line = escalations.setdefault(
            stronger, ModelLine(f"{stronger} (escalations)", 0, 0, 0, 0, 0, ZERO, ZERO, f"cascade: {share_note}")
        )
        per_request, _ = expected.learned.expected(stronger, max_tokens)
        line.requests += moved
        line.input_tokens += ceil_tokens(counted * share)
        line.input_bound += bound
        line.expected_output_tokens += ceil_tokens(per_request * moved)
        line.worst_output_tokens += n * max_tokens
        line.expected_cost_usd += cost
        line.expected_batch_cost_usd += cost
        line.worst_cost_usd += price.worst_case(bound, n * max_tokens)  # every cheap answer may fail the check
    plan.models.extend(escalations.values())
    learned = _learned(store, run_id, expected, candidates, with_routing) if routing.policy == "learned" else None
    return {
        **({"learned": learned} if learned else {}),
        "policy": routing.policy,
        "candidates": candidates,
        "requests_by_model": by_model,
        "expected_escalations": sum(line.requests for line in escalations.values()),
        "escalation_basis": share_note,
        "with_routing_usd": with_routing,
        "without_routing_usd": without,
        "alone_usd": alone,
        "saved_usd": without - with_routing,
    }


def _learned_share(store: Planning, run_id: str, share: Decimal, basis: str) -> tuple[Decimal, str]:
    """The share of the cheap model's requests expected to fail: the predicted chances of those decided; for later
    rounds, the mean chance predicted for the first (a cascade's share where there was too little history)."""
    decided = store.learned_plan(run_id)
    predicted = [decided[d] for d in ("cheap", "explore") if d in decided]
    if not predicted:
        return share, basis
    all_predicted = [decided[d] for d in ("cheap", "explore", "strong") if d in decided]
    mean = Decimal(str(sum(p[1] for p in all_predicted) / sum(p[0] for p in all_predicted)))
    later, cascade = decided.get("undecided", (0,))[0], decided.get("cascade", (0,))[0]
    n = sum(p[0] for p in predicted) + later + cascade
    expected = Decimal(str(sum(p[1] for p in predicted))) + mean * later + share * cascade
    note = f"predicted by the learned router for {n - later - cascade} requests"
    if later:
        note += f", {mean:.0%} (the first round's mean prediction) for the {later} of later rounds"
    return expected / n, note


def _learned(
    store: Planning, run_id: str, expected: Expected, candidates: list[str], with_routing: Decimal
) -> dict[str, Any]:
    """What the learned route expects against the plain cascade: the cheap calls it skips, at their expected cost."""
    decided = store.learned_plan(run_id)
    skipped, _, tokens, max_tokens = decided.get("strong", (0, 0.0, 0, 0))
    skipped_usd = expected.cost(candidates[0], max_tokens // skipped, skipped, tokens) if skipped else ZERO
    return {
        "skipped_cheap_calls": skipped,
        "explored": decided.get("explore", (0,))[0],
        "undecided": decided.get("undecided", (0,))[0] + decided.get("cascade", (0,))[0],
        "expected_usd": with_routing,
        "cascade_usd": with_routing + skipped_usd,
    }


def _escalation_share(store: Planning, input_path: str | None, model: str, run_id: str) -> tuple[Decimal, str]:
    checked, escalated = store.escalation_history(input_path, model, run_id)
    if checked >= MIN_SAMPLES:
        share = Decimal(escalated) / Decimal(checked)
        return share, f"{share:.0%} of {model}'s answers escalated in earlier runs ({checked} checked)"
    return ASSUMED_ESCALATION, f"assumed {ASSUMED_ESCALATION:.0%} of {model}'s answers escalate (no history yet)"


def _prompt_cache(store: Planning, run_id: str, prices: dict[str, ModelPrice], cache: PromptCache) -> Decimal:
    counter = TokenCounter()
    saved = ZERO
    # no provider caches a prefix under 1,024 tokens, and a prefix is shorter than its prompt
    for model, n, body_json in store.prefix_groups(run_id, min_tokens=SHORTEST_CACHED):
        price = prices.get(model)
        body = orjson.loads(body_json)
        if price is None or len(body["messages"]) < 2:
            continue
        prefix = max(0, counter.count_body({"model": model, "messages": body["messages"][:-1]}) - 3)
        saved += cache.expected_saving(price, n, prefix)
    return saved
