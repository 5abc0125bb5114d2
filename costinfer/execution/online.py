"""Drive a backend over the pending requests: concurrently, within the budget, with retries, durably.

Workers take requests in input order, reserve each call's worst-case cost, send it (retrying what may succeed later),
settle the billed cost and hand the outcome to a single writer. The writer commits outcomes to the store in small
groups and only then counts them as done: a result is durable before it counts. A commit costs DuckDB about ten
milliseconds however small it is, so the writer waits ``commit_interval_s`` between commits, or ``commit_duty``
times as long as the last commit took when that is longer: at a few calls per second every answer is saved within
20 ms; at thousands per second, commits stay under a fifth of one core instead of taking half of it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anyio
import anyio.to_thread

from costinfer.backends.base import Backend, Completion
from costinfer.errors import AuthError, BackendError, WriteError
from costinfer.execution.fallback import Router
from costinfer.execution.load import LoadControl
from costinfer.execution.rate_limits import RateLimiter
from costinfer.execution.sharing import Sharing
from costinfer.execution.state import ExecConfig, Outcomes
from costinfer.planning.budget import BudgetGuard
from costinfer.pricing.catalog import ModelPrice
from costinfer.progress import NullProgress, ProgressSink
from costinfer.reading.keys import request_key
from costinfer.store import Outcome, Pending, Writer
from costinfer.store.faces import Ledger
from costinfer.store.pools import Pool


class Executor(Sharing, Outcomes):
    def __init__(
        self,
        store: Ledger,
        run_id: str,
        backend: Backend,
        prices: dict[str, ModelPrice],
        budget: BudgetGuard,
        cfg: ExecConfig,
        progress: ProgressSink | None = None,
        pool: Pool | None = None,
    ) -> None:
        self.store = store
        self.pool = pool  # --budget-pool: each call's worst case is held there too, settled once durable
        self.run_id = run_id
        self.backend = backend
        self.prices = prices
        self.budget = budget
        self.cfg = cfg
        self.progress = progress or NullProgress()
        super().__init__()
        self._refused = 0  # connection failures in a row
        self._refused_since = 0.0
        self._reached = False  # some request got an HTTP answer in this invocation
        self.limiter = RateLimiter(cfg.rpm, cfg.tpm, probe_first=not backend.self_hosted)
        self.router = Router(cfg.fallback_model)
        start = LoadControl.start_for(cfg.known_batch)
        self.control = LoadControl(cfg.concurrency, start) if cfg.follow_load else None
        self._buffer: list[Outcome] = []
        self._queue: deque[Pending] = deque()
        self._ready = anyio.Event()
        self._refill = anyio.Event()
        self._exhausted = False
        self._stopping = anyio.Event()
        self._workers_left = 0
        self._answers: Any = None  # the cache, read for fallback answers (Store.answer_reader), opened when needed
        self._inflight: dict[str, anyio.Event] = {}  # request keys being sent now, set when their call ends
        self._fresh: set[str] = set()  # request keys this invocation has answered (saved or about to be)
        # a shared store: keys are claimed before they are sent; those another live run holds wait here for its
        # answer (or for its lease to lapse)
        self.claims = store.claims(run_id)
        self._parked: dict[str, Pending] = {}
        self.borrowed = 0  # requests another run answered while this one waited: cache hits, not calls

    def request_stop(self, reason: str) -> None:
        """Stop dispatching: calls in flight finish (and are saved); nothing new starts."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()
        self._ready.set()
        self._refill.set()
        self.budget.wake()

    async def run(self, pages: Iterator[list[Pending]]) -> None:
        writer = self.store.writer(self.cfg.tagged)  # commits from a worker thread, on a cursor of its own
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._produce, pages)
                self._workers_left = self.cfg.concurrency
                for _ in range(self.cfg.concurrency):
                    tg.start_soon(self._work)
                tg.start_soon(self._write, writer)
                if self.claims is not None:
                    tg.start_soon(self._watch_claims)
                if self.control is not None:
                    tg.start_soon(self._watch_load, self.control)
        finally:
            writer.close()
            if self._answers is not None:
                self._answers.close()
            if self.claims is not None:  # what this run claimed and did not answer, others may call now
                await anyio.to_thread.run_sync(self.claims.release)
        if self.store_error is not None:  # answered after the commit failed: paid, never saved
            self.lost += len(self._buffer)
            self._buffer = []

    async def _watch_load(self, control: LoadControl) -> None:
        """Read the server's queue a few times a second and set the calls in flight from it. A server without
        metrics gets a fixed 64 (or the ceiling, if lower), said once."""
        failures = 0
        while self._workers_left > 0 and not self.stopping:
            try:
                load = await self.backend.load()
            except BackendError as exc:
                failures += 1
                if failures >= 3:
                    control.set_limit(64)
                    self.progress.note(f"the server reports no load ({exc}): {control.limit} calls in flight")
                    return
            else:
                failures = 0
                control.observe(load.running, load.waiting, load.kv_cache)
            await anyio.sleep(self.cfg.tuning.settled_poll_s if control.settled else self.cfg.tuning.load_poll_s)

    async def _produce(self, pages: Iterator[list[Pending]]) -> None:
        """Keep the queue at least a page ahead of the workers; pages come from the store in a thread."""
        try:
            while not self.stopping:
                if len(self._queue) >= self.cfg.concurrency * 4:
                    self._refill = anyio.Event()
                    await self._refill.wait()
                    continue
                page = await anyio.to_thread.run_sync(next, pages, None)
                if page is None:
                    return
                if self.claims is not None:
                    page = await self._claim(page)
                self._queue.extend(page)
                self._ready.set()
        finally:
            self._exhausted = True
            self._ready.set()

    async def _next(self) -> Pending | None:
        while not self.stopping:
            if self._queue:
                item = self._queue.popleft()
                if len(self._queue) < self.cfg.concurrency * 2:
                    self._refill.set()
                return item
            if self._exhausted and not self._parked:
                return None
            if self._ready.is_set():
                self._ready = anyio.Event()
            await self._ready.wait()
        return None

    async def _work(self) -> None:
        try:
            while (item := await self._next()) is not None:
                price = self.prices[item.model]
                # the call may go to any of the router's candidates: hold the dearest worst case
                worst = max(
                    self.prices[m].worst_case(item.input_bound, item.max_tokens)
                    for m in self.router.candidates(item.model)
                )
                if not await self.budget.reserve(worst, lambda: self.stopping):
                    if self.stopping:
                        return
                    self._left_unsent()
                    continue
                if self.pool is not None and not await self._hold_in_pool(worst):
                    self.budget.release(worst)
                    if self.stopping:
                        return
                    self._left_unsent(self.pool)
                    continue
                try:
                    outcome = await self._call(item, price)
                except BaseException:
                    self.budget.release(worst)
                    if self.pool is not None:
                        with anyio.CancelScope(shield=True):
                            await anyio.to_thread.run_sync(self.pool.release, worst)
                    raise
                if outcome is None:
                    self.budget.release(worst)
                    if self.pool is not None:
                        await anyio.to_thread.run_sync(self.pool.release, worst)
                    continue
                self.budget.settle(worst, outcome.cost_usd)
                if self.pool is not None:
                    outcome.held_usd = worst  # the pool's hold ends when the outcome is durable (``_write``)
                self._buffer.append(outcome)
        finally:
            self._workers_left -= 1

    async def _call(self, item: Pending, price: ModelPrice) -> Outcome | None:
        """One request with its retries. None when a stop came before it could finish (it stays pending)."""
        provider = self.backend.name
        attempt = 0
        while True:
            attempt += 1
            choice = self.router.choose(item.model)
            await self.router.ready(choice)
            # pace by what the provider counts (prompt tokens plus max_tokens), not by the budget's upper bound
            metered = (item.input_tokens or item.input_bound) + item.max_tokens
            if self.control is not None:  # a place in the server's batch first, then the rate limit
                await self.control.acquire()
            await self.limiter.acquire(metered)
            if self.stopping:
                self.limiter.release(metered)
                if self.control is not None:
                    self.control.release()
                return None
            body = {**item.body, "model": choice.model} if choice.substitute else item.body
            sent = request_key(body, self.backend.endpoint) if choice.substitute else item.key
            # with a fallback model, a request can be on its way twice (a fallback request is another row's own) or
            # answered already (an earlier run paid the fallback): it is lent, not paid again. Without one, pending
            # requests are distinct: nothing to track
            tracked = self.cfg.fallback_model is not None
            if tracked and (known := await self._known_answer(item, choice.substitute, choice.model, sent, body)):
                self.limiter.release(metered)
                if self.control is not None:
                    self.control.release()
                return known
            if tracked:
                self._inflight[sent] = anyio.Event()
            started = time.perf_counter()
            try:
                try:
                    if item.shared_prefix and self.backend.prompt_cache:
                        done = await self.backend.complete(body, cache_prefix=True)
                    else:
                        done = await self.backend.complete(body)
                    if tracked:
                        self._fresh.add(sent)
                finally:
                    if tracked:
                        self._inflight.pop(sent).set()
                    self.limiter.release(metered)
                    if self.control is not None:
                        self.control.release()
            except AuthError as exc:
                self.auth_error = exc
                self.request_stop("auth")
                return None
            except BackendError as exc:
                self.limiter.observe(exc.headers)
                if exc.error_class == "cannot_connect" and self._refused_for_good(exc):
                    return None
                if exc.error_class == "timeout" and not self._reached:
                    # nothing has answered in this invocation and a call outlived --timeout: a server that accepts
                    # connections and never answers. Stop now (within one timeout), not after every retry of every row
                    self.unreachable = f"{exc}: the server accepts connections but does not answer"
                    self.request_stop("unreachable")
                    return None
                if exc.status is not None:
                    self._reached, self._refused = True, 0
                if exc.fatal:
                    self.fatal_error = exc
                    self.request_stop(exc.error_class)
                    return None
                if exc.status == 429:
                    self.limiter.rate_limited(exc.retry_after)
                self.router.failed(choice, server_fault=exc.retryable and exc.status != 429)
                if not exc.retryable or attempt >= self.cfg.max_attempts:
                    self.progress.problem("failed", f"{exc.error_class}: {exc}")
                    return Outcome(
                        key=item.key,
                        provider=provider,
                        model=item.model,
                        attempts=attempt,
                        http_status=exc.status,
                        error_class=exc.error_class,
                        error_message=str(exc),
                        latency_ms=(time.perf_counter() - started) * 1000,
                    )
                self.retries += 1
                self.progress.problem("retry", f"{exc.error_class}: {exc}")
                delay = random.uniform(
                    0, min(self.cfg.tuning.backoff_max_s, self.cfg.tuning.backoff_base_s * 2 ** (attempt - 1))
                )
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.cfg.tuning.backoff_max_s))
                with anyio.move_on_after(delay):
                    await self._stopping.wait()
                if self.stopping:
                    return None
                continue
            latency = (time.perf_counter() - started) * 1000
            self._reached, self._refused = True, 0
            self.limiter.observe(done.headers)
            self.router.answered(choice)
            if choice.substitute:
                # the answer is the substitute request's: cached under its own key, lent to the original one
                model = choice.model
                return self._answer(sent, model, self.prices[model], done, attempt, latency, item.key, body)
            return self._answer(item.key, item.model, price, done, attempt, latency)

    async def _known_answer(
        self, item: Pending, substitute: bool, model: str, sent: str, body: dict[str, Any]
    ) -> Outcome | None:
        """The answer to ``sent`` when it need not be paid for: another call of this invocation is bringing it (wait
        for it) or brought it, or (a fallback request) an earlier run paid for it. Lent without a call."""
        while (busy := self._inflight.get(sent)) is not None:
            await busy.wait()
        known = sent in self._fresh
        if not known and substitute:
            if self._answers is None:
                self._answers = self.store.answer_reader()
            known = await anyio.to_thread.run_sync(self._answers.has_answer, sent)
        if not known:
            return None
        replaces, lent_body = (item.key, body) if substitute else (None, None)
        return Outcome(sent, self.backend.name, model, 0, replaces=replaces, request_body=lent_body, cached=True)

    def _refused_for_good(self, exc: BackendError) -> bool:
        """Count a refused connection; True (and the run stops) once the server looks gone rather than busy."""
        now = time.monotonic()
        if self._refused == 0:
            self._refused_since = now
        self._refused += 1
        if self._refused < self.cfg.tuning.unreachable_after:
            return False
        if self._reached and now - self._refused_since < self.cfg.tuning.unreachable_s:
            return False
        self.unreachable = str(exc)
        self.request_stop("unreachable")
        return True

    def _answer(
        self,
        key: str,
        model: str,
        price: ModelPrice,
        done: Completion,
        attempts: int,
        latency_ms: float,
        replaces: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> Outcome:
        return Outcome(
            key=key,
            provider=self.backend.name,
            model=model,
            attempts=attempts,
            response=done.text,
            finish_reason=done.finish_reason,
            input_tokens=done.input_tokens,
            output_tokens=done.output_tokens,
            cached_tokens=done.cached_tokens,
            cache_write_tokens=done.cache_write_tokens,
            reasoning_tokens=done.reasoning_tokens,
            latency_ms=latency_ms,
            http_status=done.http_status,
            cost_usd=price.cost(done.input_tokens, done.output_tokens, done.cached_tokens, done.cache_write_tokens),
            replaces=replaces,
            request_body=body,
        )

    async def _write(self, writer: Writer) -> None:
        wait = self.cfg.tuning.commit_interval_s
        while True:
            finished = self._workers_left == 0
            batch, self._buffer = self._buffer, []
            if batch:
                started = time.perf_counter()
                try:
                    with anyio.CancelScope(shield=True):  # a commit under way is never cut in half
                        await anyio.to_thread.run_sync(writer.record, self.run_id, batch)
                except WriteError as exc:
                    self.store_error = exc.__cause__ or exc
                    self.lost = len(batch)
                    self.request_stop("store_error")
                    return
                took = time.perf_counter() - started
                wait = min(max(self.cfg.tuning.commit_interval_s, self.cfg.tuning.commit_duty * took), 1.0)
                if self.pool is not None:  # durable now: the pool's holds become what was billed
                    held = sum((o.held_usd for o in batch), Decimal(0))
                    cost = sum((o.cost_usd for o in batch if not o.cached), Decimal(0))
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(self.pool.settle, held, cost)
                self.calls_done += sum(not o.cached for o in batch)
                self.cost_done += sum((o.cost_usd for o in batch), Decimal(0))
                self.progress.advance(self.calls_done, self.cost_done)
            if finished and not self._buffer:
                return
            await anyio.sleep(wait)
