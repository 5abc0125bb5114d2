"""What the plan expects each lever to save, on made-up rows in an in-memory store."""

from __future__ import annotations

from pathlib import Path

from costinfer.backends.prompt_cache import AUTOMATIC_PREFIX
from costinfer.planning.levers import RoutingInput, add_levers
from costinfer.planning.plan import compute
from costinfer.store import Store
from tests.stagekit import price, read_rows


def test_levers_credit_duplicates_and_a_shared_long_prefix(tmp_path: Path) -> None:
    store = Store.memory()
    system = "You label support tickets. " * 300  # about 1,800 tokens shared by every request
    rows = [{"prompt": f"ticket {i}", "system": system} for i in range(20)] + [{"prompt": "ticket 0", "system": system}]
    run_id, _ = read_rows(store, tmp_path, rows)
    prices = {"gpt-4o-mini": price("gpt-4o-mini")}
    plan = compute(store, run_id, prices, None, None)
    add_levers(plan, store, run_id, prices, None, None, AUTOMATIC_PREFIX)
    assert plan.levers["duplicate"] > 0
    assert plan.levers["prompt_cache"] > 0  # 19 of 20 requests read the shared prefix at the cached rate
    without = compute(store, run_id, prices, None, None)
    add_levers(without, store, run_id, prices, None, None, None)  # a provider without a prompt cache
    assert "prompt_cache" not in without.levers


def test_routing_levers_expect_the_cheaper_candidate_to_save(tmp_path: Path) -> None:
    from costinfer.routing.assign import assign

    store = Store.memory()
    models = ("gpt-4o-mini", "gpt-4o")
    run_id, ingest = read_rows(store, tmp_path, [{"prompt": f"q{i}"} for i in range(10)], route_models=models)
    prices = {m: price(m) for m in models}
    store.mark_routed(run_id, ingest.own_model)
    assign(store, run_id, list(models), prices, "cheapest", "openai", None)
    plan = compute(store, run_id, prices, None, None)
    add_levers(plan, store, run_id, prices, None, RoutingInput(list(models), "cheapest"), None)
    assert plan.levers["routing"] > 0  # against sending every row to the strongest candidate
