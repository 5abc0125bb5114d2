"""The budget guarantee under random datasets, billed lengths, concurrency and failures (hypothesis).

The executor, the budget guard and the DuckDB store are the real ones. The model server is ``ScriptedBackend``, an
in-memory fake named for what it is: hundreds of random runs must each take milliseconds, and it can bill any usage up
to a request's limits, which the simulator (used by every other end-to-end test) does not vary.
"""

from __future__ import annotations

import random
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costinfer.backends.base import Backend, BackendConfig, Completion
from costinfer.errors import BackendError
from costinfer.execution.online import Executor
from costinfer.execution.state import ExecConfig, Tuning
from costinfer.planning.budget import BudgetGuard
from costinfer.pricing.catalog import Catalog
from costinfer.store import Pending, Store

PRICE = Catalog.load().lookup("gpt-4o", "openai")


class ScriptedBackend(Backend):
    """A fake server: random latency, random billed usage within each request's limits, random failures."""

    name: ClassVar[str] = "scripted"

    def __init__(self, seed: int, fail_rate: float, bounds: dict[str, int]) -> None:
        super().__init__(BackendConfig())
        self.rng = random.Random(seed)
        self.fail_rate = fail_rate
        self.bounds = bounds
        self.calls = 0

    async def complete(self, body: dict[str, Any]) -> Completion:
        self.calls += 1
        await anyio.sleep(self.rng.random() * 0.002)
        roll = self.rng.random()
        if roll < self.fail_rate / 2:
            raise BackendError("HTTP 503: overloaded", error_class="server_error", status=503, retryable=True)
        if roll < self.fail_rate:
            raise BackendError("HTTP 400: bad request", error_class="bad_request", status=400)
        key = body["messages"][0]["content"]
        return Completion(
            text="ok",
            input_tokens=self.rng.randint(0, self.bounds[key]),
            output_tokens=self.rng.randint(0, body["max_tokens"]),
        )


requests = st.lists(st.tuples(st.integers(1, 4000), st.integers(1, 1000)), min_size=1, max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=requests,
    budget=st.decimals(min_value=0, max_value=Decimal("0.5"), places=6),
    concurrency=st.integers(1, 64),
    fail_rate=st.floats(0, 0.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_spend_never_passes_the_budget(
    rows: list[tuple[int, int]], budget: Decimal, concurrency: int, fail_rate: float, seed: int
) -> None:
    pending = [
        Pending(
            f"k{i}",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": f"k{i}"}], "max_tokens": out},
            bound,
            out,
            "gpt-4o",
        )
        for i, (bound, out) in enumerate(rows)
    ]
    backend = ScriptedBackend(seed, fail_rate, {p.key: p.input_bound for p in pending})
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "s.duckdb") as store:
        guard = BudgetGuard(budget)
        executor = Executor(
            store,
            "run",
            backend,
            {"gpt-4o": PRICE},
            guard,
            ExecConfig(
                concurrency=concurrency, max_attempts=3, tuning=Tuning(backoff_base_s=0.001, commit_interval_s=0.001)
            ),
        )
        anyio.run(executor.run, iter([pending]))
        ledger = store._con.execute("SELECT coalesce(sum(cost_usd), 0), count(*) FROM calls").fetchone()
    assert ledger is not None
    assert guard.spent <= budget  # the guarantee
    assert guard.reserved == 0  # every reserved cent was settled or released
    assert Decimal(ledger[0]) == guard.spent  # what the guard settled is what the ledger holds
    assert guard.overruns == 0  # no call was billed more than its reservation
    assert ledger[1] == executor.calls_done
    if executor.stop_reason is None:
        assert ledger[1] == len(rows)  # without a budget stop, every request ends answered or failed
    else:
        assert executor.stop_reason == "budget"
        # it stopped because the next call's worst case did not fit in what was left
        assert ledger[1] < len(rows)
