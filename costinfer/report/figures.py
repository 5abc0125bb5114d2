"""A run's report as figures: where the money went, from the naive cost down to what was paid.

Everything comes from the store (the result rows, the ledger, the plan kept with the run) and the price catalog, so
``costinfer report RUN_ID`` rebuilds the same report later. Money is exact (``Decimal``): the waterfall's steps add up
to the naive cost minus the actual cost, to the last digit.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costinfer.accounting.waterfall import ZERO, learned_skipped_usd, price_sources, reference_model, waterfall
from costinfer.pricing.catalog import ModelPrice
from costinfer.store.faces import History


def build(store: History, run_id: str, prices: dict[str, ModelPrice]) -> dict[str, Any]:
    """Every figure of a run's report. Saves the run's priced sources in the store (``run_sources``) on the way, so
    that ``costinfer analyze`` sees them."""
    run = store.run(run_id) or {}
    sources = price_sources(store.result_groups(run_id), prices, reference_model(run))
    store.save_run_sources(run_id, sources)
    calls = store.call_stats(run_id)
    actual = sum((Decimal(m["cost_usd"] or 0) for m in calls["models"]), ZERO)
    rows_by_source: dict[str, int] = {}
    for s in sources:
        rows_by_source[s["source"]] = rows_by_source.get(s["source"], 0) + int(s["rows"])
    plan = _stored_plan(run)
    output_tokens = sum(int(m["output_tokens"] or 0) for m in calls["models"])
    return {
        "run_id": run_id,
        "dataset": run.get("input_path"),
        "model": run.get("model"),
        "provider": run.get("provider"),
        "rehearsal": bool(run.get("rehearsal")),
        "status": run.get("status"),
        "stop_reason": run.get("stop_reason"),
        "started_at": str(run.get("started_at")),
        "finished_at": str(run.get("finished_at")) if run.get("finished_at") else None,
        "budget_usd": run.get("budget_usd"),
        "rows": sum(rows_by_source.values()),
        "rejects": int(run.get("rejects") or 0),
        "rows_by_source": rows_by_source,
        "unanswered": rows_by_source.get("failed", 0) + rows_by_source.get("not_run", 0),
        "cost_usd": actual,
        "waterfall": waterfall(sources, actual, learned_skipped_usd(store, run_id, prices)),
        "sources": sources,
        "models": calls["models"],
        "tags": calls["tags"],
        "errors": calls["errors"],
        "latency_ms": calls["latency_ms"],
        "calls_per_minute": calls["calls_per_minute"],
        "rate_limit_rpm": _rate_limit(run),
        "compare_with": _compare(run, prices, calls["models"]),
        "plan_vs_outcome": {
            "expected_cost_usd": plan.get("expected_cost_usd"),
            "actual_cost_usd": actual,
            "expected_output_tokens": plan.get("expected_output_tokens"),
            "actual_output_tokens": output_tokens,
            "worst_cost_usd": plan.get("worst_cost_usd"),
        },
    }


def _compare(run: dict[str, Any], prices: dict[str, ModelPrice], models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """--compare-with: the run's billed tokens at that model's list prices."""
    name = run.get("compare_with")
    if not name or name not in prices:
        return None
    tokens_in = sum(int(m["input_tokens"] or 0) for m in models)
    tokens_out = sum(int(m["output_tokens"] or 0) for m in models)
    return {"model": name, "cost_usd": prices[name].cost(tokens_in, tokens_out)}


def _stored_plan(run: dict[str, Any]) -> dict[str, Any]:
    return dict(run.get("plan") or {})


def _rate_limit(run: dict[str, Any]) -> float | None:
    value = run.get("rate_limit_rpm")
    return float(value) if value else None
