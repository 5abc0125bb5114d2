"""Routing across candidates on its own: made-up rows, an in-memory store, the packaged catalog's prices."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from costinfer.routing.assign import assign
from costinfer.store import Store
from tests.stagekit import price, read_rows

MODELS = ["gpt-4o-mini", "gpt-4o"]


def _routed(store: Store, tmp_path: Path, rows: list[dict[str, object]]) -> str:
    run_id, ingest = read_rows(store, tmp_path, rows, route_models=tuple(MODELS))
    store.mark_routed(run_id, ingest.own_model)
    return run_id


def _models(store: Store, run_id: str) -> dict[str, int]:
    return {model: n for model, _max, n, *_ in store.pending_groups(run_id)}


def test_cheapest_sends_routed_rows_to_the_cheapest_candidate_and_leaves_a_rows_own_model(tmp_path: Path) -> None:
    store = Store.memory()
    run_id = _routed(store, tmp_path, [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c", "model": "gpt-4.1-mini"}])
    stats = assign(store, run_id, MODELS, {m: price(m) for m in [*MODELS, "gpt-4.1-mini"]}, "cheapest", "openai", None)
    assert stats.policy == "cheapest"
    assert _models(store, run_id) == {"gpt-4o-mini": 2, "gpt-4.1-mini": 1}


def test_budget_upgrades_rows_to_the_stronger_model_while_the_worst_case_fits(tmp_path: Path) -> None:
    store = Store.memory()
    run_id = _routed(store, tmp_path, [{"prompt": f"q{i}"} for i in range(10)])
    prices = {m: price(m) for m in MODELS}
    strong_worst = prices["gpt-4o"].worst_case(20, 64)
    cheap_worst = prices["gpt-4o-mini"].worst_case(20, 64)
    room = 4 * strong_worst + 6 * cheap_worst + Decimal("0.000001")  # room for four upgrades, not five
    assign(store, run_id, MODELS, prices, "budget", "openai", room)
    by_model = _models(store, run_id)
    assert 1 <= by_model.get("gpt-4o", 0) <= 4 and sum(by_model.values()) == 10
    generous = _routed(store, tmp_path, [{"prompt": f"r{i}"} for i in range(10)])
    assign(store, generous, MODELS, prices, "budget", "openai", Decimal(100))
    assert _models(store, generous) == {"gpt-4o": 10}  # every row upgraded when the budget allows it


def test_a_row_routed_to_the_request_another_row_asks_for_is_counted_once(tmp_path: Path) -> None:
    """Routed to gpt-4o, the first row's request is the second row's own: one request to send, not two."""
    store = Store.memory()
    rows: list[dict[str, object]] = [{"prompt": "same"}, {"prompt": "same", "model": "gpt-4o"}, {"prompt": "other"}]
    run_id = _routed(store, tmp_path, rows)
    assert _models(store, run_id) == {"gpt-4o-mini": 2, "gpt-4o": 1}
    assign(store, run_id, MODELS, {m: price(m) for m in MODELS}, "budget", "openai", Decimal(100))
    assert _models(store, run_id) == {"gpt-4o": 2}  # "same" on gpt-4o once, "other" on gpt-4o
