"""The batch executor on its own, against ``InMemoryBatches``, a fake batch API named for what it is: it holds each
submitted batch, completes it on the second status check, and answers its items through ``ScriptedBackend``."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from costinfer.backends.batch_api import BatchClient, BatchState, ItemResult
from costinfer.backends.completion import Completion
from costinfer.execution.batch_mode import BatchConfig, BatchExecutor
from costinfer.planning.budget import BudgetGuard
from costinfer.store import Store
from tests.stagekit import ScriptedBackend, price, read_rows


class InMemoryBatches:
    max_requests = 3  # small parts, so a run spans several batches
    max_bytes = 1 << 20

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.items: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.checks: dict[str, int] = {}
        self._ids = itertools.count()

    async def submit(self, items: list[tuple[str, dict[str, Any]]], metadata: dict[str, str]) -> BatchState:
        batch_id = f"batch_{next(self._ids)}"
        self.items[batch_id] = items
        self.checks[batch_id] = 0
        return BatchState(batch_id, "in_progress", None, None, metadata)

    async def status(self, batch_id: str) -> BatchState:
        self.checks[batch_id] += 1
        done = self.checks[batch_id] >= 2
        return BatchState(batch_id, "completed" if done else "in_progress", "out" if done else None, None, {})

    async def find(
        self, metadata: dict[str, str], created_after: datetime | None = None, requests: int | None = None
    ) -> list[BatchState]:
        return []

    async def cancel(self, batch_id: str) -> BatchState:
        return BatchState(batch_id, "cancelled", None, None, {})

    async def results(self, state: BatchState) -> list[ItemResult]:
        out = []
        for custom_id, params in self.items[state.id]:
            text = params["messages"][-1]["content"]
            if text in self.fail:
                out.append(ItemResult(custom_id, None, "bad_request", "refused"))
            else:
                out.append(ItemResult(custom_id, Completion(f"batch answer to {text}", 10, 5, finish_reason="stop")))
        return out


class BatchingBackend(ScriptedBackend):
    def __init__(self, client: InMemoryBatches) -> None:
        super().__init__()
        self.client = client

    def batches(self) -> BatchClient:
        return self.client


def _run(store: Store, run_id: str, client: InMemoryBatches) -> BatchExecutor:
    prices = {m: price(m) for m in store.run_models(run_id)}
    executor = BatchExecutor(
        store, run_id, BatchingBackend(client), prices, BudgetGuard(None), BatchConfig(poll_s=0.001, max_poll_s=0.001)
    )
    anyio.run(executor.run, iter([]))
    return executor


def test_pending_requests_go_in_batches_and_are_billed_at_batch_prices(tmp_path: Path) -> None:
    store = Store.memory()
    run_id, _ = read_rows(store, tmp_path, [{"prompt": f"q{i}"} for i in range(7)] + [{"prompt": "q0"}])
    client = InMemoryBatches(fail=set())
    executor = _run(store, run_id, client)
    assert len(client.items) == 3  # 7 distinct requests in parts of at most 3
    assert executor.calls_done == 7 and executor.stop_reason is None
    summary = store.summary(run_id)
    assert (summary["fresh"], summary["duplicates"], summary["not_run"]) == (7, 1, 0)
    p = price("gpt-4o-mini")
    assert Decimal(summary["run_cost_usd"]) == 7 * (10 * p.batch_input + 5 * p.batch_output)
    assert [b["state"] for b in store.batches(run_id)] == ["collected"] * 3


def test_items_that_failed_are_resubmitted_and_end_failed_when_they_keep_failing(tmp_path: Path) -> None:
    store = Store.memory()
    run_id, _ = read_rows(store, tmp_path, [{"prompt": "ok"}, {"prompt": "refused"}])
    client = InMemoryBatches(fail={"refused"})
    executor = _run(store, run_id, client)
    submitted = [custom_id for items in client.items.values() for custom_id, _ in items]
    assert len(submitted) == 4  # both, then the failed one in each of the two later rounds
    assert executor.calls_done == 1
    summary = store.summary(run_id)
    assert summary["fresh"] == 1 and summary["failed"] + summary["not_run"] == 1
