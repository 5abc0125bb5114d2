"""The plan on its own: made-up rows in an in-memory store, priced from the packaged catalog; no network."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from costinfer.planning.plan import compute
from costinfer.store import Store
from tests.stagekit import ScriptedBackend, call_online, price, read_rows


def test_the_plan_counts_distinct_requests_and_prices_their_expected_and_worst_cost(tmp_path: Path) -> None:
    store = Store.memory()
    rows = [{"prompt": "a"}, {"prompt": "a"}, {"prompt": "b", "max_tokens": 100}, {"prompt": "c"}]
    run_id, _ = read_rows(store, tmp_path, rows, max_tokens=50)
    prices = {"gpt-4o-mini": price("gpt-4o-mini")}
    plan = compute(store, run_id, prices, Decimal("1"), None)
    assert (plan.rows, plan.distinct, plan.duplicates, plan.to_call) == (4, 3, 1, 3)
    [line] = plan.models
    assert line.requests == 3 and line.worst_output_tokens == 50 + 100 + 50
    assert plan.worst_cost_usd == prices["gpt-4o-mini"].worst_case(line.input_bound, 200)
    assert 0 < plan.expected_cost_usd <= plan.worst_cost_usd
    assert plan.fits and plan.fits_worst_case
    tight = compute(store, run_id, prices, plan.expected_cost_usd / 2, None)
    assert not tight.fits  # the same plan against half its expected cost


def test_the_plan_learns_output_lengths_from_the_ledger(tmp_path: Path) -> None:
    store = Store.memory()
    first, _ = read_rows(store, tmp_path, [{"prompt": f"q{i}"} for i in range(40)], max_tokens=500)
    call_online(store, first, ScriptedBackend(usage=lambda body: (10, 7)))  # every answer 7 tokens long
    second, _ = read_rows(store, tmp_path, [{"prompt": f"new {i}"} for i in range(10)], max_tokens=500)
    plan = compute(store, second, {"gpt-4o-mini": price("gpt-4o-mini")}, None, None)
    [line] = plan.models
    assert line.expected_output_tokens < 10 * 20  # learned: about 7 each, not the 500 cap
    assert line.output_basis != "assumed"
