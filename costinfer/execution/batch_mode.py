"""Running pending requests through a provider's batch API, at batch prices, surviving any crash.

1. Re-attach first: batches this run recorded as 'preparing' (the process died between recording and learning the
   server's id) are looked up on the server by their metadata (run id, part); found ones are adopted, the others were
   never created and their requests are simply pending again. 'submitted' ones are collected.
2. Submit what is still pending, in parts within the provider's limits (requests and bytes per input file), each
   recorded in the store before it is uploaded, each item's worst case reserved against the budget (what does not fit
   is not submitted: partial submission).
3. Wait (polling with backoff) and collect: answers and failures enter the ledger at batch prices, reservations are
   settled per item. Failed or expired items are pending again and go in the next round's batch; nothing answered is
   ever sent twice. With ``wait`` off (``--no-wait``), the run stops as 'submitted' once its batches are in, and the
   same command later collects them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import orjson

from costinfer.backends.base import Backend
from costinfer.errors import AuthError, BackendError, WriteError
from costinfer.execution.state import Outcomes
from costinfer.planning.budget import BudgetGuard
from costinfer.pricing.catalog import ModelPrice
from costinfer.progress import NullProgress, ProgressSink
from costinfer.store import Outcome, Pending
from costinfer.store.faces import Batches

MAX_REQUESTS = 50_000
BATCH_HOLD_S = 26 * 3600.0  # a batch's claims outlive its process: the provider's 24 h window, and a margin
MAX_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BatchConfig:
    wait: bool = True
    poll_s: float = 1.0  # the first wait between status checks; it doubles up to max_poll_s
    max_poll_s: float = 30.0
    rounds: int = 3  # batches per run: the first, then resubmissions of failed or expired items
    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES
    deadline_h: float | None = None  # a batch older than this is cancelled: its requests go online instead


class BatchExecutor(Outcomes):
    def __init__(
        self,
        store: Batches,
        run_id: str,
        backend: Backend,
        prices: dict[str, ModelPrice],
        guard: BudgetGuard,
        cfg: BatchConfig,
        progress: ProgressSink | None = None,
    ) -> None:
        client = backend.batches()
        if client is None:
            from costinfer.errors import ConfigError

            raise ConfigError(f"provider '{backend.name}' has no batch API; use --mode online")
        self.client = client
        self.store = store
        self.run_id = run_id
        self.backend = backend
        self.prices = prices
        self.guard = guard
        self.cfg = cfg
        self.progress = progress or NullProgress()
        super().__init__()
        self.deadline_passed = False  # a batch outlived --deadline and was cancelled: send the rest online
        # a shared store: a batch's requests are claimed before it is submitted, and held while it is open; those
        # another run holds wait for its answers (or for its claims to lapse) between rounds
        self.claims = store.claims(run_id)
        self._held: set[str] = set()

    async def run(self, pages: Iterator[list[Pending]]) -> None:
        del pages  # what is pending is read again each round: a batch changes it
        try:
            await self._reattach()
            for _ in range(self.cfg.rounds):
                if self.stop_reason is None:
                    await self._submit(self._pending())  # a budget stop still collects what fitted
                if not self.cfg.wait:
                    if self.store.batches(self.run_id, open_only=True):
                        self.stop_reason = self.stop_reason or "submitted"
                    return
                await self._collect_all()
                await self._wait_for_held()
                if not self._pending() or self.stop_reason is not None or self.deadline_passed:
                    return  # past the deadline, the rest goes online (the runner sends it)
        except AuthError as exc:
            self.auth_error = exc
            self.stop_reason = "auth"
        except BackendError as exc:
            if exc.error_class == "cannot_connect":
                self.unreachable = str(exc)
                self.stop_reason = "unreachable"
            elif exc.fatal:
                self.fatal_error = exc
                self.stop_reason = exc.error_class
            else:
                raise
        except WriteError as exc:
            self.store_error = exc.__cause__ or exc
            self.stop_reason = "store_error"

    def _too_late(self, batch: dict[str, Any]) -> bool:
        if self.cfg.deadline_h is None:
            return False
        created: datetime = batch["created_at"]
        age = (datetime.now(created.tzinfo) - created).total_seconds()
        return bool(age > self.cfg.deadline_h * 3600)

    async def collect(self) -> None:
        """Only re-attach to this run's batches and collect them (``costinfer batches wait``): nothing new is sent."""
        await self._reattach()
        await self._collect_all()

    async def cancel(self) -> int:
        """Cancel this run's open batches on the server; their requests are pending again. Returns how many."""
        await self._reattach()
        n = 0
        for batch in self.store.batches(self.run_id, open_only=True):
            await self.client.cancel(batch["server_id"])
            self.store.set_batch(batch["local_id"], state="cancelled")
            n += 1
        return n

    def request_stop(self, reason: str) -> None:
        """Stop waiting (Ctrl-C, SIGTERM): submitted batches stay with the provider; the same command collects them."""
        self.stop_reason = self.stop_reason or reason

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None and self.stop_reason != "budget"

    # --- the steps ----------------------------------------------------------------------------------------------

    def _pending(self) -> list[Pending]:
        in_batches = {
            k for b in self.store.batches(self.run_id, open_only=True) for k in self.store.batch_items(b["local_id"])
        }
        return [p for page in self.store.pending(self.run_id) for p in page if p.key not in in_batches]

    def _metadata(self, part: int) -> dict[str, str]:
        return {"costinfer_run": self.run_id, "costinfer_part": str(part)}

    async def _reattach(self) -> None:
        for batch in self.store.batches(self.run_id, open_only=True):
            items = self.store.batch_items(batch["local_id"])
            self.guard.reserved += sum((r for _, r in items.values()), Decimal(0))  # held again until settled
            if batch["state"] == "preparing":
                since = batch["created_at"] - timedelta(minutes=5)  # clocks differ: a margin
                found = await self.client.find(
                    self._metadata(int(batch["part"])), created_after=since, requests=int(batch["requests"])
                )
                if found:
                    self.store.set_batch(batch["local_id"], server_id=found[0].id, state="submitted")
                    self.progress.note(f"batch part {batch['part']}: found on the server ({found[0].id})")
                else:  # never created: its requests are pending again
                    self.guard.release(sum((r for _, r in items.values()), Decimal(0)))
                    self.store.set_batch(batch["local_id"], state="abandoned")
                    if self.claims is not None:
                        self.claims.release(list(items))
            else:
                self.progress.note(f"batch part {batch['part']}: re-attached ({batch['server_id']})")

    async def _submit(self, pending: list[Pending]) -> None:
        # the provider's documented limits per batch, and the configured ones where smaller
        max_requests = min(self.cfg.max_requests, self.client.max_requests)
        max_bytes = min(self.cfg.max_bytes, self.client.max_bytes)
        part: dict[str, Decimal] = {}
        items: list[tuple[str, dict[str, Any]]] = []
        size = 0
        one_model = getattr(self.client, "one_model", False)  # Gemini's: a batch names its model in the path
        if one_model:
            pending = sorted(pending, key=lambda p: p.model)
        model = None
        for item in pending:
            price = self.prices[item.model]
            worst = price.worst_case(item.input_bound, item.max_tokens, batch=True)
            line = len(orjson.dumps(item.body)) + 200
            if items and (len(items) >= max_requests or size + line > max_bytes or (one_model and item.model != model)):
                await self._send(part, items)
                part, items, size = {}, [], 0
            model = item.model
            if not self.guard.try_reserve(worst):
                self.stop_reason = "budget"
                break
            part[item.key] = worst
            items.append((item.key, self.backend.batch_body(item.body)))
            size += line
        if items:
            await self._send(part, items)

    async def _send(self, reserved: dict[str, Decimal], items: list[tuple[str, dict[str, Any]]]) -> None:
        if self.claims is not None:  # only what this run claimed goes in the batch
            claimed = await anyio.to_thread.run_sync(self.claims.claim, list(reserved))
            mine = set(claimed.mine)
            for key in [k for k in reserved if k not in mine]:
                self.guard.release(reserved.pop(key))
            self._held.update(claimed.waiting)
            items = [(k, body) for k, body in items if k in mine]
            if not items:
                return
        local_id = uuid.uuid4().hex
        part = self.store.add_batch(local_id, self.run_id, self.backend.name, self.backend.endpoint, reserved)
        state = await self.client.submit(items, self._metadata(part))
        self.store.set_batch(local_id, server_id=state.id, state="submitted")
        if self.claims is not None:  # held while the batch is open, whatever becomes of this process
            await anyio.to_thread.run_sync(self.claims.hold, list(reserved), BATCH_HOLD_S)
        self.progress.note(f"batch part {part}: {len(items)} requests submitted ({state.id})")

    async def _wait_for_held(self) -> None:
        """Requests another run holds: wait until it answers them (copied in: no call) or lets them go (they are
        pending again, for this run's next batch)."""
        if self.claims is None or not self._held:
            return
        self.progress.note(f"{len(self._held)} requests are being answered by another run: waiting for them")
        delay = self.cfg.poll_s
        while self._held and not self.stopping:
            claimed = await anyio.to_thread.run_sync(self.claims.claim, sorted(self._held))
            self._held = set(claimed.waiting)
            if claimed.mine:  # let go by the other run: this run sends them in its next batch
                await anyio.to_thread.run_sync(self.claims.release, claimed.mine)
            if self._held:
                await anyio.sleep(delay)
                delay = min(delay * 2, self.cfg.max_poll_s)

    async def _collect_all(self) -> None:
        for batch in self.store.batches(self.run_id, open_only=True):
            await self._collect(batch)

    async def _collect(self, batch: dict[str, Any]) -> None:
        delay = self.cfg.poll_s
        while True:
            state = await self.client.status(batch["server_id"])
            if state.final:
                break
            if self.stopping:
                return  # still open: collected by a later run
            if self._too_late(batch):
                await self.client.cancel(batch["server_id"])
                self.store.set_batch(batch["local_id"], state="cancelled")
                self.guard.release(sum((r for _, r in self.store.batch_items(batch["local_id"]).values()), Decimal(0)))
                self.deadline_passed = True
                self.progress.note(f"batch part {batch['part']}: past --deadline, cancelled; its requests go online")
                return
            await anyio.sleep(delay)
            delay = min(delay * 2, self.cfg.max_poll_s)
        items = self.store.batch_items(batch["local_id"])
        results = {r.custom_id: r for r in await self.client.results(state)}
        outcomes = []
        for key, (model, reserved) in items.items():
            result = results.get(key)
            price = self.prices[model]
            if result is not None and result.completion is not None:
                done = result.completion
                cost = price.cost(done.input_tokens, done.output_tokens, done.cached_tokens, batch=True)
                outcomes.append(
                    Outcome(
                        key,
                        self.backend.name,
                        model,
                        1,
                        response=done.text,
                        finish_reason=done.finish_reason,
                        input_tokens=done.input_tokens,
                        output_tokens=done.output_tokens,
                        cached_tokens=done.cached_tokens,
                        reasoning_tokens=done.reasoning_tokens,
                        cost_usd=cost,
                        mode="batch",
                    )
                )
                self.guard.settle(reserved, cost)
            else:
                error_class = result.error_class if result is not None else f"batch_{state.status}"
                message = result.message if result is not None else f"the batch ended {state.status}"
                message = self.backend.transport.redact(message) if message else message  # a server's text
                outcomes.append(
                    Outcome(
                        key,
                        self.backend.name,
                        model,
                        1,
                        error_class=error_class or "batch_error",
                        error_message=message,
                        mode="batch",
                    )
                )
                self.guard.settle(reserved, Decimal(0))
        self.store.record(self.run_id, outcomes)
        self.store.set_batch(batch["local_id"], state="collected")
        answered = [o for o in outcomes if o.ok]
        self.calls_done += len(answered)
        self.cost_done += sum((o.cost_usd for o in answered), Decimal(0))
        self.progress.advance(self.calls_done, self.cost_done)
        failed = len(outcomes) - len(answered)
        if failed:
            self.progress.problem("retry", f"batch_item_failed: {failed} items of batch part {batch['part']} failed")


def for_run(
    store: Batches, run_id: str, backend_cls: type[Backend], catalog: Any, poll_s: float = 5.0
) -> BatchExecutor:
    """A batch executor for a run recorded in the store (``costinfer batches wait|cancel``): its provider and server
    from the run, its models priced from the catalog, its budget from the run."""
    from costinfer.backends.base import BackendConfig

    run = store.run(run_id) or {}
    endpoint = str(run.get("endpoint") or "")
    base_url = endpoint.split(":", 1)[1] if ":" in endpoint else None
    backend = backend_cls(BackendConfig(base_url=base_url))
    prices = {m: catalog.lookup(m, backend.name) for m in store.run_models(run_id)}
    budget = run.get("budget_usd")
    guard = BudgetGuard(Decimal(budget) if budget is not None else None, store.run_spend(run_id))
    return BatchExecutor(store, run_id, backend, prices, guard, BatchConfig(poll_s=poll_s))


# A provider's batch window: results come back within it (OpenAI's completion_window, Anthropic's documented 24 h)
BATCH_WINDOW_H = 24.0


def choose_mode(requested: str, backend: Backend, deadline_h: float) -> tuple[str, str | None]:
    """The mode a run uses, and why when ``auto`` chose it: batch when the provider has a batch API and the deadline
    allows its window, online otherwise."""
    if requested != "auto":
        return requested, None
    if backend.batches() is None:
        return "online", f"mode auto: online (provider '{backend.name}' has no batch API)"
    if deadline_h < BATCH_WINDOW_H:
        return "online", f"mode auto: online (--deadline {deadline_h:g}h is shorter than the batch window of 24h)"
    return "batch", f"mode auto: batch (--deadline {deadline_h:g}h allows the provider's 24h batch window: half price)"
