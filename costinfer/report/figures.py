"""A run's report as figures: where the money went, from the naive cost down to what was paid.

Everything comes from the store (the result rows, the ledger, the plan kept with the run) and the price catalog, so
``costinfer report RUN_ID`` rebuilds the same report later. Money is exact (``Decimal``): the waterfall's steps add up
to the naive cost minus the actual cost, to the last digit.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costinfer.core.prices import ModelPrice
from costinfer.store import Store

ZERO = Decimal(0)
# The levers, in the order the waterfall shows them, with what each means to a reader
LEVERS = {
    "duplicate": "duplicates in this run (one call served them all)",
    "cache": "the exact cache (answers paid by earlier runs)",
    "normalized": "the normalized tier (the same text up to case and spaces)",
    "semantic": "the semantic tier (near-duplicate questions)",
    "fallback": "the fallback model (answered while the provider failed)",
    "batch": "batch pricing (the provider's batch API, results within 24 hours)",
    "other": "the provider's prompt cache and billing differences",
}
REUSED = ("duplicate", "cache", "normalized", "semantic")


def price_sources(groups: list[dict[str, Any]], prices: dict[str, ModelPrice]) -> list[dict[str, Any]]:
    """Per (source, requested model): rows, tokens, what the rows would have cost as calls of their own at list price
    (``naive_usd``) and what they cost (``cost_usd``). Rows with no answer (failed, not run) have no naive cost: what
    they would have written is unknown."""
    out: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for g in groups:
        source, model, tag = str(g["source"]), str(g["requested"]), g.get("tag")
        price = prices.get(model)
        if source in REUSED:
            tokens_in = int(g["counted_input"])
            naive = price.cost(tokens_in, int(g["output_tokens"])) if price else ZERO
        elif source in ("fresh", "fallback", "batch"):
            tokens_in = int(g["billed_input"])
            naive = price.cost(tokens_in, int(g["output_tokens"])) if price else ZERO
        else:
            tokens_in, naive = int(g["counted_input"]), ZERO
        row = out.setdefault(
            (source, model, tag),
            {"source": source, "model": model, "tag": tag, "rows": 0, "input_tokens": 0, "output_tokens": 0,
             "naive_usd": ZERO, "cost_usd": ZERO},
        )  # fmt: skip
        row["rows"] += int(g["rows"])
        row["input_tokens"] += tokens_in
        row["output_tokens"] += int(g["output_tokens"])
        row["naive_usd"] += naive
        row["cost_usd"] += Decimal(g["cost_usd"] or 0)
    return list(out.values())


def waterfall(sources: list[dict[str, Any]], actual_usd: Decimal) -> dict[str, Any]:
    """From the naive cost (every answered row sent online to its requested model at list price) down to the actual
    cost (the ledger's): one step per lever that saved something. ``other`` is what the levers do not explain (a
    provider's prompt cache, billed tokens against counted ones); it is zero on a run without them."""
    naive = sum((Decimal(s["naive_usd"]) for s in sources), ZERO)
    steps = []
    for lever in ("duplicate", "cache", "normalized", "semantic"):
        saved = sum((Decimal(s["naive_usd"]) for s in sources if s["source"] == lever), ZERO)
        if saved:
            steps.append({"lever": lever, "label": LEVERS[lever], "saved_usd": saved})
    for lever in ("fallback", "batch"):  # answered by a call, at a price other than the requested model's online one
        answered = [s for s in sources if s["source"] == lever]
        if answered:
            saved = sum((Decimal(s["naive_usd"]) - Decimal(s["cost_usd"]) for s in answered), ZERO)
            steps.append({"lever": lever, "label": LEVERS[lever], "saved_usd": saved})
    other = naive - sum((Decimal(s["saved_usd"]) for s in steps), ZERO) - actual_usd
    if other:
        steps.append({"lever": "other", "label": LEVERS["other"], "saved_usd": other})
    return {"naive_usd": naive, "steps": steps, "actual_usd": actual_usd}


def build(store: Store, run_id: str, prices: dict[str, ModelPrice]) -> dict[str, Any]:
    """Every figure of a run's report. Saves the run's priced sources in the store (``run_sources``) on the way, so
    that ``costinfer analyze`` sees them."""
    run = store.run(run_id) or {}
    sources = price_sources(store.result_groups(run_id), prices)
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
        "status": run.get("status"),
        "stop_reason": run.get("stop_reason"),
        "started_at": str(run.get("started_at")),
        "finished_at": str(run.get("finished_at")) if run.get("finished_at") else None,
        "budget_usd": run.get("budget_usd"),
        "rows": sum(rows_by_source.values()),
        "rejects": int(run.get("rejects") or 0),
        "rows_by_source": rows_by_source,
        "cost_usd": actual,
        "waterfall": waterfall(sources, actual),
        "sources": sources,
        "models": calls["models"],
        "tags": calls["tags"],
        "errors": calls["errors"],
        "latency_ms": calls["latency_ms"],
        "calls_per_minute": calls["calls_per_minute"],
        "rate_limit_rpm": _rate_limit(run),
        "plan_vs_outcome": {
            "expected_cost_usd": plan.get("expected_cost_usd"),
            "actual_cost_usd": actual,
            "expected_output_tokens": plan.get("expected_output_tokens"),
            "actual_output_tokens": output_tokens,
            "worst_cost_usd": plan.get("worst_cost_usd"),
        },
    }


def _stored_plan(run: dict[str, Any]) -> dict[str, Any]:
    import orjson

    return dict(orjson.loads(run.get("options") or "{}").get("plan") or {})


def _rate_limit(run: dict[str, Any]) -> float | None:
    import orjson

    options = orjson.loads(run.get("options") or "{}")
    value = options.get("rpm") or options.get("simulator_rpm")
    return float(value) if value else None
