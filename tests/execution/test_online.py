"""The online executor on its own: a fake server (``ScriptedBackend``), an in-memory store, made-up rows."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from costinfer.store import Store
from tests.stagekit import ScriptedBackend, call_online, price, read_rows


def test_each_distinct_request_is_sent_once_and_its_duplicates_share_the_answer(tmp_path: Path) -> None:
    store = Store.memory()
    rows = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}, {"prompt": "A "}]  # a duplicate, a normalized twin
    run_id, _ = read_rows(store, tmp_path, rows)
    backend = ScriptedBackend()
    executor = call_online(store, run_id, backend)
    assert sorted(b["messages"][-1]["content"] for b in backend.sent) == ["a", "b"]
    assert executor.calls_done == 2 and executor.stop_reason is None
    summary = store.summary(run_id)
    assert (summary["fresh"], summary["duplicates"], summary["normalized"], summary["failed"]) == (2, 1, 1, 0)
    expected = 2 * price("gpt-4o-mini").cost(10, 5)
    assert executor.cost_done == expected == Decimal(summary["run_cost_usd"])  # the ledger is what was billed


def test_a_503_is_retried_and_a_400_fails_for_good(tmp_path: Path) -> None:
    store = Store.memory()
    run_id, _ = read_rows(store, tmp_path, [{"prompt": "flaky"}, {"prompt": "bad"}, {"prompt": "fine"}])
    backend = ScriptedBackend(fail={"bad"}, flaky={"flaky"})
    executor = call_online(store, run_id, backend)
    assert executor.retries == 1  # the 503, once
    assert len(backend.sent) == 4  # flaky twice, bad once (a 400 is not retried), fine once
    summary = store.summary(run_id)
    assert (summary["fresh"], summary["failed"]) == (2, 1)


def test_the_budget_stops_calls_before_their_worst_case_passes_it(tmp_path: Path) -> None:
    store = Store.memory()
    run_id, _ = read_rows(store, tmp_path, [{"prompt": f"q{i}"} for i in range(20)], max_tokens=1000)
    one_call_worst = price("gpt-4o-mini").cost(20, 1000)
    budget = one_call_worst * 3  # room for three calls' worst case at a time
    executor = call_online(store, run_id, ScriptedBackend(), budget=budget, concurrency=1)
    summary = store.summary(run_id)
    assert Decimal(summary["run_cost_usd"]) <= budget
    assert executor.calls_done > 3  # settled calls cost far less than their worst case: the budget keeps going
    assert summary["fresh"] + summary["not_run"] == 20
    assert executor.stop_reason == ("budget" if summary["not_run"] else None)


def test_a_second_run_of_the_same_rows_is_answered_from_the_cache(tmp_path: Path) -> None:
    store = Store.memory()
    rows = [{"prompt": "a"}, {"prompt": "b"}]
    first, _ = read_rows(store, tmp_path, rows)
    call_online(store, first, ScriptedBackend())
    second, _ = read_rows(store, tmp_path, rows)
    backend = ScriptedBackend()
    executor = call_online(store, second, backend)
    assert backend.sent == [] and executor.calls_done == 0
    assert store.summary(second)["cache_hits"] == 2
