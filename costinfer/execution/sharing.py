"""What the online executor does on a shared store and with a budget pool: claim keys before sending them (waiting
for those another live run holds), and hold each call's worst case in the pool."""

from __future__ import annotations

from collections import deque
from decimal import Decimal

import anyio
import anyio.to_thread

from costinfer.execution.state import ExecConfig
from costinfer.planning.budget import BudgetGuard
from costinfer.progress import ProgressSink
from costinfer.store import Pending
from costinfer.store.claims import SharedClaims
from costinfer.store.pools import Pool


class Sharing:
    claims: SharedClaims | None
    pool: Pool | None
    cfg: ExecConfig
    borrowed: int
    _parked: dict[str, Pending]
    _queue: deque[Pending]
    _ready: anyio.Event
    _stopping: anyio.Event
    _workers_left: int
    stop_reason: str | None
    budget: BudgetGuard
    progress: ProgressSink

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _claim(self, page: list[Pending]) -> list[Pending]:
        """What of a page this run may send: keys it claimed. Those another live run holds wait (``_parked``) for its
        answer; those answered already need no call (their answers are copied into this run's store)."""
        assert self.claims is not None
        claimed = await anyio.to_thread.run_sync(self.claims.claim, [p.key for p in page])
        self.borrowed += len(claimed.answered)
        waiting = set(claimed.waiting)
        for p in page:
            if p.key in waiting:
                self._parked[p.key] = p
            else:
                self._parked.pop(p.key, None)
        mine = set(claimed.mine)
        return [p for p in page if p.key in mine]

    async def _watch_claims(self) -> None:
        """Ask again, a few times a second, about the keys other runs hold: answered (lent, no call) or let go
        (their run stopped or died: this run claims and sends them)."""
        while not self.stopping and (self._workers_left > 0 or self._parked):
            await anyio.sleep(self.cfg.tuning.claim_poll_s)
            if self._parked and not self.stopping:
                self._queue.extend(await self._claim(list(self._parked.values())))
                self._ready.set()

    async def _hold_in_pool(self, worst: Decimal) -> bool:
        """Hold a call's worst case in the budget pool. While other calls hold what it needs (here or in other runs),
        wait for them to settle; False once nothing is held and it still does not fit, or the run is stopping."""
        assert self.pool is not None
        while True:
            answer = await anyio.to_thread.run_sync(self.pool.reserve, worst)
            if answer == "ok":
                return True
            if answer == "no" or self.stopping:
                return False
            with anyio.move_on_after(self.cfg.tuning.claim_poll_s):
                await self._stopping.wait()

    def _left_unsent(self, pool: Pool | None = None) -> None:
        """A request whose worst case does not fit what is left with nothing in flight: it stays unsent (not run,
        the budget), and the next ones are still tried (a smaller one may fit)."""
        if self.stop_reason is None:
            self.stop_reason = "budget"
            left = pool.left() if pool is not None else self.budget.left
            which = f"budget pool {pool.name}" if pool is not None else "budget"
            self.progress.note(
                f"{which}: ${left if left is not None else 0:.6f} left does not cover the worst case of some "
                f"requests; they are left unsent, and smaller ones still run"
            )
