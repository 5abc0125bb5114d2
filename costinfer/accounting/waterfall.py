"""Where a run's money went, lever by lever, from the naive cost down to what was paid: the run summary's savings,
the report's waterfall and ``costinfer analyze`` all read it from here. Money is exact (``Decimal``): the steps add
up to the naive cost minus the actual cost, to the last digit.

The naive cost is every answered row sent online as a call of its own, at list price, to its requested model; a
routed row's requested model is the strongest candidate (what it would have cost without routing).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costinfer.pricing.catalog import ModelPrice
from costinfer.store.faces import History

ZERO = Decimal(0)
# The levers, in the order the waterfall shows them, with what each means to a reader
LEVERS = {
    "duplicate": "duplicates in this run (one call served them all)",
    "cache": "the exact cache (answers paid by earlier runs)",
    "normalized": "the normalized tier (the same text up to case and spaces)",
    "semantic": "the semantic tier (near-duplicate questions)",
    "routing": "routing (cheaper candidate models, escalations included)",
    "learned_routing": "learned routing (the cheap calls a cascade would have made and it skipped, at their expected "
    "cost; routing's step is what is left)",
    "fallback": "the fallback model (answered while the provider failed)",
    "batch": "batch pricing (the provider's batch API, results within 24 hours)",
    "prompt_cache": "the provider's prompt cache (shared prefixes billed at the cached rate)",
    "other": "billing differences (billed tokens against counted ones)",
}
REUSED = ("duplicate", "cache", "normalized", "semantic")
CALLED = ("fresh", "fallback", "batch", "routed", "escalated")


def reference_model(run: dict[str, Any]) -> str | None:
    """The strongest routing candidate of a run (``--models``), or None for a run without routing."""
    models = run.get("models") or []
    return str(models[-1]) if models else None


def price_sources(
    groups: list[dict[str, Any]], prices: dict[str, ModelPrice], reference: str | None = None
) -> list[dict[str, Any]]:
    """Per (source, requested model, tag): rows, tokens, what the rows would have cost as calls of their own at list
    price (``naive_usd``), what they cost (``cost_usd``) and what the provider's prompt cache took off that
    (``cache_saved_usd``). Rows with no answer (failed, not run) have no naive cost: what they would have written is
    unknown."""
    out: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for g in groups:
        source, tag = str(g["source"]), g.get("tag")
        routed = bool(g.get("routed")) and reference is not None
        model = reference if routed and reference else str(g["requested"])
        price = prices.get(model)
        cache_saved = ZERO
        if source in REUSED:
            tokens_in = int(g["counted_input"])
            naive = price.cost(tokens_in, int(g["output_tokens"])) if price else ZERO
        elif source in CALLED:
            tokens_in = int(g["billed_input"])
            naive = price.cost(tokens_in, int(g["output_tokens"])) if price else ZERO
            answered = prices.get(str(g.get("answered") or model))
            if answered is not None:
                cached, written = int(g.get("cached_tokens") or 0), int(g.get("cache_write_tokens") or 0)
                out_tokens = int(g["output_tokens"])
                cache_saved = answered.cost(tokens_in, out_tokens) - answered.cost(
                    tokens_in, out_tokens, cached, written
                )
        else:
            tokens_in, naive = int(g["counted_input"]), ZERO
        lever = "routing" if routed and source in CALLED else source
        row = out.setdefault(
            (lever, model, tag),
            {"source": lever, "model": model, "tag": tag, "rows": 0, "input_tokens": 0, "output_tokens": 0,
             "naive_usd": ZERO, "cost_usd": ZERO, "cache_saved_usd": ZERO},
        )  # fmt: skip
        row["rows"] += int(g["rows"])
        row["input_tokens"] += tokens_in
        row["output_tokens"] += int(g["output_tokens"])
        row["naive_usd"] += naive
        row["cost_usd"] += Decimal(g["cost_usd"] or 0)
        row["cache_saved_usd"] += cache_saved
    return list(out.values())


def learned_skipped_usd(store: History, run_id: str, prices: dict[str, ModelPrice]) -> Decimal:
    """What the cheap calls a learned route skipped would have cost: their counted input and the cheap model's mean
    answer length in the run, at its list price. Zero for any other run."""
    models = (store.run(run_id) or {}).get("models") or []
    if not models or models[0] not in prices:
        return ZERO
    outcomes = store.learned_outcomes(run_id, str(models[0]))
    n, tokens, _, _ = outcomes["by_decision"].get("strong", (0, 0, 0, 0))
    if not n:
        return ZERO
    return prices[models[0]].cost(tokens, round(float(outcomes["cheap_output_mean"] or 0) * n))


def waterfall(sources: list[dict[str, Any]], actual_usd: Decimal, learned_usd: Decimal = ZERO) -> dict[str, Any]:
    """From the naive cost down to the actual cost (the ledger's): one step per lever that saved something (a
    negative step is a lever that cost more, such as escalations). ``other`` is what the levers do not explain
    (billed tokens against counted ones); it is zero on a simulated run. ``learned_usd``: the cheap calls a learned
    route skipped, shown as a step of its own and taken from routing's."""
    naive = sum((Decimal(s["naive_usd"]) for s in sources), ZERO)
    steps: list[dict[str, Any]] = []
    for lever in REUSED:
        saved = sum((Decimal(s["naive_usd"]) for s in sources if s["source"] == lever), ZERO)
        if saved:
            steps.append({"lever": lever, "label": LEVERS[lever], "saved_usd": saved})
    for lever in ("routing", "fallback", "batch"):  # answered by a call at a price other than the naive one
        answered = [s for s in sources if s["source"] == lever]
        if answered:
            saved = sum(
                (Decimal(s["naive_usd"]) - Decimal(s["cost_usd"]) - Decimal(s["cache_saved_usd"]) for s in answered),
                ZERO,
            )
            if lever == "routing" and learned_usd:
                steps.append({"lever": "learned_routing", "label": LEVERS["learned_routing"], "saved_usd": learned_usd})
                saved -= learned_usd
            steps.append({"lever": lever, "label": LEVERS[lever], "saved_usd": saved})
    cached = sum((Decimal(s.get("cache_saved_usd") or 0) for s in sources), ZERO)
    if cached:
        steps.append({"lever": "prompt_cache", "label": LEVERS["prompt_cache"], "saved_usd": cached})
    other = naive - sum((Decimal(s["saved_usd"]) for s in steps), ZERO) - actual_usd
    if other:
        steps.append({"lever": "other", "label": LEVERS["other"], "saved_usd": other})
    return {"naive_usd": naive, "steps": steps, "actual_usd": actual_usd}


def savings_by_lever(
    sources: list[dict[str, Any]], actual_usd: Decimal, learned_usd: Decimal = ZERO
) -> dict[str, Decimal]:
    """The waterfall's steps as {lever: dollars saved}."""
    steps: list[dict[str, Any]] = waterfall(sources, actual_usd, learned_usd)["steps"]
    return {str(s["lever"]): Decimal(s["saved_usd"]) for s in steps}
