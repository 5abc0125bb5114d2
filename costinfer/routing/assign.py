"""Routing across candidate models (``--models a,b --route cheapest|cascade|budget``), decided before the calls.

Rows that name no model of their own are routed (a row's own ``model`` always wins). Every policy first sends each
routed request to the cheapest candidate that can take it: its prompt and ``max_tokens`` within the model's limits,
its tools and ``response_format: json_schema`` supported (the catalog's ``supports_function_calling`` and
``supports_response_schema``). Then:

- ``cheapest`` stops there;
- ``budget`` upgrades requests to stronger candidates, highest ``priority`` first (then the ``difficulty`` metadata
  value, then the longest prompt), while the run's worst case still fits the budget; it stops at the first request it
  cannot upgrade, so no lower-priority request is upgraded before a higher one;
- ``cascade`` leaves the rest to ``core/cascade.py``: after the calls, an answer that fails the user's check goes to
  the next candidate.

A routed request is sent as the chosen model's own request (``Store.reroute``): its answer is cached under that
request's key, so a later run that asks the model directly reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from costinfer.pricing.catalog import ModelPrice
from costinfer.reading.keys import KeyMaker
from costinfer.store.faces import LearnedRoutes, Routing


@dataclass
class RouteStats:
    policy: str
    candidates: list[str]
    moved: dict[str, int] = field(default_factory=dict)  # model -> requests sent to it before any call
    misfits: int = 0  # requests the cheapest candidate cannot take
    upgrades: int = 0  # requests the budget policy upgraded


def misfit(price: ModelPrice, row: dict[str, Any]) -> str | None:
    """Why a model cannot take a request, or None when it can."""
    if price.max_input_tokens is not None and int(row["input_bound"]) > price.max_input_tokens:
        return f"prompt longer than {price.model}'s {price.max_input_tokens:,} tokens"
    if price.max_output_tokens is not None and int(row["max_tokens"]) > price.max_output_tokens:
        return f"max_tokens above {price.model}'s {price.max_output_tokens:,}"
    if row.get("tools") and not price.tools:
        return f"{price.model} takes no tools"
    if row.get("response_format") == "json_schema" and not price.json_schema:
        return f"{price.model} takes no json_schema response_format"
    return None


def assign(
    store: Routing,
    run_id: str,
    candidates: list[str],
    prices: dict[str, ModelPrice],
    policy: str,
    endpoint: str,
    budget_left: Decimal | None,
) -> RouteStats:
    """Route the run's unanswered routed requests (see the module's description); returns what moved."""
    stats = RouteStats(policy, list(candidates))
    cheap = prices[candidates[0]]
    limits = (cheap.max_input_tokens or 2**31 - 1, cheap.max_output_tokens or 2**31 - 1, cheap.tools, cheap.json_schema)
    # without upgrades, only what the cheapest candidate cannot take moves: read just those
    rows = store.routable(run_id, None if policy == "budget" else limits)
    if not rows:
        return stats
    level: dict[str, int] = {}  # key -> index of the candidate it goes to
    reason: dict[str, str] = {}
    for row in rows:
        start = candidates.index(row["model"]) if row["model"] in candidates else 0
        first_misfit = ""
        for i in range(start, len(candidates)):
            why = misfit(prices[candidates[i]], row)
            if why is None:
                if i != start:
                    level[row["key"]], reason[row["key"]] = i, f"routed to {candidates[i]}: {first_misfit}"
                    stats.misfits += 1
                break
            if i == start:
                first_misfit = why
    if policy == "budget":
        assert budget_left is not None, "options.validate requires --budget with --route budget"
        stats.upgrades = _upgrade(store, run_id, rows, candidates, prices, budget_left, level, reason)
    _apply(store, run_id, rows, candidates, endpoint, level, reason, stats)
    return stats


def _upgrade(
    store: Routing,
    run_id: str,
    rows: list[dict[str, Any]],
    candidates: list[str],
    prices: dict[str, ModelPrice],
    budget_left: Decimal,
    level: dict[str, int],
    reason: dict[str, str],
) -> int:
    """Upgrade routed requests in order while the run's worst case stays within the budget left."""
    worst = Decimal(0)
    for model, max_tokens, n, _, bound, _ in store.pending_groups(run_id):
        worst += prices[model].worst_case(bound, n * max_tokens)  # every pending request as it stands
    for row in rows:  # ... with the cheapest-fit moves made above
        if row["key"] in level:
            worst += _worst(prices[candidates[level[row["key"]]]], row) - _worst(prices[row["model"]], row)
    upgrades = 0
    for row in rows:
        key = row["key"]
        now = level.get(key, candidates.index(row["model"]) if row["model"] in candidates else 0)
        chosen = None
        for i in range(len(candidates) - 1, now, -1):
            price = prices[candidates[i]]
            if misfit(price, row) is not None:
                continue
            extra = _worst(price, row) - _worst(prices[candidates[now]], row)
            if worst + extra <= budget_left:
                chosen, worst = i, worst + extra
                break
        if chosen is None:
            break  # strict priority: nothing below a request that could not be upgraded is upgraded
        level[key], reason[key] = chosen, f"upgraded to {candidates[chosen]} within the budget"
        upgrades += 1
    return upgrades


def _worst(price: ModelPrice, row: dict[str, Any]) -> Decimal:
    return price.worst_case(int(row["input_bound"]), int(row["max_tokens"]))


def _apply(
    store: Routing,
    run_id: str,
    rows: list[dict[str, Any]],
    candidates: list[str],
    endpoint: str,
    level: dict[str, int],
    reason: dict[str, str],
    stats: RouteStats,
) -> None:
    moved = [r for r in rows if r["key"] in level and candidates[level[r["key"]]] != r["model"]]
    for row in moved:
        model = candidates[level[row["key"]]]
        stats.moved[model] = stats.moved.get(model, 0) + 1
    send_to(store, run_id, [(r["key"], candidates[level[r["key"]]], reason[r["key"]]) for r in moved], endpoint)


def send_to(store: Routing | LearnedRoutes, run_id: str, moves: list[tuple[str, str, str]], endpoint: str) -> None:
    """(key, model, why): send each request as ``model``'s own request from now on (tier 'routed')."""
    if not moves:
        return
    bodies = store.request_bodies([key for key, _, _ in moves])
    keys = KeyMaker(endpoint)
    changes = []
    for key, model, why in moves:
        body = {**bodies[key], "model": model}
        new_key, norm_key, group_key = keys.keys(body)
        changes.append(
            {
                "key": key,
                "new_key": new_key,
                "model": model,
                "body": orjson.dumps(body).decode(),
                "norm_key": norm_key,
                "group_key": group_key,
                "tier": "routed",
                "route": why,
            }
        )
    store.reroute(run_id, changes)
