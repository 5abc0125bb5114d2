"""The calling phase of a run: the rounds of calls (batches, then online for what a deadline or a failed batch left,
then a cascade's escalations), each through an executor made from the run's spec, and the one error that says what
stopped them early. Whatever happens, the results so far are written before this phase ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from costinfer.accounting.output_files import io_reason, write_or_explain
from costinfer.backends.base import Backend
from costinfer.errors import AuthError, BudgetError, ConfigError, CostinferError, UnreachableError, WriteError
from costinfer.execution.batch_mode import BatchConfig, BatchExecutor
from costinfer.execution.event_loop import call_all
from costinfer.execution.online import Executor
from costinfer.execution.state import ExecConfig, Outcomes
from costinfer.pipeline.learning import learned_router
from costinfer.pipeline.prepare import Prepared, now_utc
from costinfer.planning.budget import BudgetGuard
from costinfer.pricing.gpu_cost import attribute_gpu_time
from costinfer.progress import ProgressSink
from costinfer.routing.cascade import escalate
from costinfer.routing.checks import Acceptance, CheckError
from costinfer.routing.learned import LearnedRouter
from costinfer.spec import RunSpec
from costinfer.store import Store
from costinfer.store.base import Pending
from costinfer.store.pools import Pool


@dataclass
class Calling:
    """A run at the moment it starts calling: its spec, its servers, its store, its plan, and what was resolved for
    this invocation (the calls in flight the open files allow, the mode ``--mode auto`` chose)."""

    spec: RunSpec
    backend: Backend
    store: Store
    prepared: Prepared
    progress: ProgressSink
    in_flight: int
    mode: str
    guard: BudgetGuard = field(init=False)
    pool: Pool | None = field(init=False)

    def __post_init__(self) -> None:
        self.guard = BudgetGuard(self.spec.money.budget_usd, self.prepared.plan.spent_usd)
        name = self.spec.money.budget_pool
        if name and self.mode == "batch":
            raise ConfigError(
                f"--budget-pool {name} draws on online calls; provider batch jobs do not draw on a pool yet. Pass "
                f"--mode online (or drop --budget-pool and give --budget). Nothing was sent"
            )
        self.pool = self.store.pool_for_run(name, self.run_id) if name else None

    @property
    def run_id(self) -> str:
        return self.prepared.run_id

    @property
    def online_fallback(self) -> bool:
        """Auto chose batch: requests that failed in every batch round go online."""
        return self.spec.batch.mode == "auto" and self.mode == "batch"

    def online(self) -> Executor:
        spec, backend = self.spec.execution, self.backend
        cfg = ExecConfig(
            concurrency=self.in_flight,
            follow_load=backend.reports_load and not spec.fixed_concurrency,
            known_batch=self.store.last_batch(backend.endpoint) if backend.reports_load else None,
            max_attempts=spec.max_attempts,
            rpm=spec.rpm,
            tpm=spec.tpm,
            fallback_model=self.spec.routing.fallback_model,
            tagged=self.spec.tagged,
        )
        return Executor(
            self.store, self.run_id, backend, self.prepared.prices, self.guard, cfg, self.progress, self.pool
        )

    def batches(self) -> BatchExecutor:
        batch = self.spec.batch
        cfg = BatchConfig(
            wait=batch.wait,
            poll_s=batch.poll_s,
            max_poll_s=max(batch.poll_s, 60.0),
            deadline_h=batch.hours if batch.deadline_given else None,
        )
        return BatchExecutor(
            self.store, self.run_id, self.backend, self.prepared.prices, self.guard, cfg, self.progress
        )


@dataclass
class Called:
    """What the calling phase did: its outcome, how long the calls took, the measured GPU time's note."""

    outcome: Outcomes
    calls_elapsed: float
    gpu_note: str | None


def call(c: Calling, acceptance: Acceptance | None) -> Called:
    """Every round of calls; raises the error that stopped them early, once the results so far are written."""
    store, run_id, clock = c.store, c.run_id, c.prepared.clock
    store.set_run(run_id, status="running")
    executor: Executor | BatchExecutor = c.batches() if c.mode == "batch" else c.online()
    c.progress.phase("rehearsing" if c.backend.rehearsal else "calling", c.prepared.plan.to_call)
    clock.mark("plan")
    since = now_utc()  # this invocation's calls are those committed from now on
    gpu_note: str | None = None
    failure: CostinferError | None = None
    router = learned_router(c.spec, store, run_id, c.prepared.prices, c.backend.endpoint, acceptance, c.progress)
    pending = _pending(store, router is not None)
    try:
        if c.prepared.plan.to_call:
            call_all(executor, pending(run_id))
        if isinstance(executor, BatchExecutor) and _goes_online(c, executor):
            _round(executor, c.online, pending, run_id)
        failure = _cascade(c, executor, acceptance, router, pending) if acceptance is not None else None
        failure = failure or _failure(executor, c.backend, store)
    except KeyboardInterrupt:  # a signal before the handler was in place: the run stopped, and says so
        executor.stop_reason = executor.stop_reason or "interrupted"
        raise
    finally:
        calls_elapsed = clock.mark("calls")
        if c.pool is not None:
            c.pool.close()
        if executor.store_error is None:
            gpu_note = _settle(c, executor, since, calls_elapsed)
            _write_results(c, executor.stop_reason)
        clock.mark("results")
    if failure is not None:
        raise failure
    return Called(executor, calls_elapsed, gpu_note)


def _round(into: Outcomes, make: Callable[[], Executor], pending: Callable[[str], object], run_id: str) -> None:
    """A later round of online calls (after batches, a cascade's escalations), added to the run's outcome."""
    later = make()
    call_all(later, pending(run_id))  # type: ignore[arg-type]
    into.calls_done += later.calls_done
    into.retries += later.retries
    into.cost_done += later.cost_done
    into.lost += later.lost
    into.stop_reason = later.stop_reason or into.stop_reason
    into.auth_error = later.auth_error or into.auth_error
    into.fatal_error = later.fatal_error or into.fatal_error
    into.store_error = later.store_error or into.store_error
    into.unreachable = later.unreachable or into.unreachable


def _still_going(executor: Outcomes) -> bool:
    failed = (executor.auth_error, executor.fatal_error, executor.store_error, executor.unreachable)
    return executor.stop_reason is None and all(f is None for f in failed)


def _pending(store: Store, learned: bool) -> Callable[[str], Iterator[list[Pending]]]:
    """What a round of calls sends: every pending request, but a learned route's requests whose round is not decided
    yet (they wait for the checks of the rounds before them)."""
    if not learned:
        return store.pending

    def pages(run_id: str) -> Iterator[list[Pending]]:
        held = store.held_keys(run_id)
        for page in store.pending(run_id):
            kept = [p for p in page if p.key not in held]
            if kept:
                yield kept

    return pages


def _cascade(
    c: Calling,
    executor: Outcomes,
    acceptance: Acceptance,
    router: LearnedRouter | None,
    pending: Callable[[str], Iterator[list[Pending]]],
) -> CostinferError | None:
    """Escalate what failed the check, round after round, until every answer passes or nothing stronger is left;
    with a learned route, then decide its next round of rows from the checks so far, and call it."""
    while _still_going(executor):
        try:
            escalated = escalate(c.store, c.run_id, list(c.spec.routing.models), acceptance, c.backend.endpoint)
        except CheckError as exc:  # the check cannot decide: stop before it escalates on its word
            executor.stop_reason = "check_failed"
            return exc
        if escalated:
            c.progress.phase("escalating", escalated)
        else:
            decided = router.decide_next() if router is not None else None
            if decided is None:
                break
            c.progress.phase("calling", sum(decided.decisions.values()))
        _round(executor, c.online, pending, c.run_id)
    return None


def _goes_online(c: Calling, executor: BatchExecutor) -> bool:
    """After the batches: what a deadline no longer allows in a batch (or, in auto mode, what failed in every batch
    round) is sent online, unless the run stopped for another reason."""
    if executor.stop_reason is not None or not c.store.plan_counts(c.run_id)["pending_keys"]:
        return False
    return executor.deadline_passed or c.online_fallback


def _settle(c: Calling, executor: Outcomes, since: object, calls_elapsed: float) -> str | None:
    """What the server taught this run: its running batch (the next run starts from it), its GPU time."""
    control = getattr(executor, "control", None)  # only an online executor that followed a server's load has one
    if control is not None and control.batch:
        c.store.remember_batch(c.run_id, control.batch)
    if not (c.backend.self_hosted and executor.calls_done):
        return None
    prices = c.prepared.prices
    note = attribute_gpu_time(c.store, c.run_id, since, prices, calls_elapsed, c.backend.servers())  # type: ignore[arg-type]
    if note is not None:  # the measured GPU time replaced the per-token estimate
        executor.cost_done = c.store.spend_since(c.run_id, since)  # type: ignore[arg-type]
    return note


def _write_results(c: Calling, stop_reason: str | None) -> None:
    """The results file, every row in input order (a store that failed a commit is not read again: rerun)."""
    out = c.spec.output
    not_run_reason = f"not_run: {stop_reason}" if stop_reason else "not_run"
    write_or_explain(
        out.results,
        lambda: c.store.write_results(c.run_id, out.results, out.file_format, not_run_reason),
        True,
        c.store.path,
    )
    status = "completed" if stop_reason is None else "stopped"
    c.store.set_run(c.run_id, status=status, finished_at=now_utc(), stop_reason=stop_reason)


def _failure(executor: Outcomes, backend: Backend, store: Store) -> CostinferError | None:
    """What stopped the run early, as the one line the user sees (after the results so far are written)."""
    if executor.store_error is not None:
        return WriteError(
            f"cannot write to the store {store.path}: {io_reason(executor.store_error)}; the "
            f"{executor.calls_done} answers saved before are kept ({executor.lost} paid answers could not be saved "
            f"and will be asked again). Free space and rerun the same command: saved answers are not paid again, and "
            f"the results file is written"
        )
    if executor.auth_error is not None:
        hint = f"; check {backend.api_key_env}" if backend.api_key_env else ""
        return AuthError(f"the server refused the credentials ({executor.auth_error}){hint}; the run stopped early")
    if executor.fatal_error is not None:
        return BudgetError(
            f"the provider says the account's quota is used up ({executor.fatal_error}); the run stopped early. "
            f"Rerun the same command once the account has credit: answered rows will not be paid again"
        )
    if executor.unreachable is not None:
        url = backend.config.base_url or backend.default_base_url or backend.endpoint
        return UnreachableError(
            f"cannot connect to {url}: {executor.unreachable}; the run stopped (answers saved before stay saved). "
            f"Start the server or fix --base-url, then rerun the same command"
        )
    return None
