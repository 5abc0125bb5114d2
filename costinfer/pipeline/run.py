"""The main job: read a dataset, pay once per distinct request, run the rest, write every row's result, resume.

``run(options)`` is what ``costinfer run`` calls; it is usable as a library. A run is identified by a fingerprint of
its input file and the options that shape its requests: running the same command again after a crash or a stop
resumes that run (nothing already answered is paid again); running it again after it completed starts a new run whose
rows are answered from the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from functools import partial
from typing import Any

from costinfer.accounting.output_files import (
    io_reason,
    remove_stale,
    write_jsonl_atomically,
    write_or_explain,
    write_or_explain_report,
)
from costinfer.accounting.summary import RunSummary, savings
from costinfer.backends.base import Backend, BackendConfig
from costinfer.backends.replicas import connect
from costinfer.engines.ray_serve import identity as ray_identity
from costinfer.engines.ray_serve import servers_for_run
from costinfer.errors import (
    AuthError,
    BudgetError,
    CostinferError,
    UnreachableError,
    WriteError,
)
from costinfer.execution.batch_mode import BatchConfig, BatchExecutor, choose_mode
from costinfer.execution.event_loop import call_all, open_files_allow
from costinfer.execution.online import Executor
from costinfer.execution.state import ExecConfig, Outcomes
from costinfer.pipeline.options import RunOptions, dataset_label, simulator_settings
from costinfer.pipeline.prepare import Prepared, load_setup, now_utc, prepare
from costinfer.pipeline.timing import Stopwatch
from costinfer.planning.budget import BudgetGuard
from costinfer.planning.plan import Plan
from costinfer.pricing.gpu_cost import attribute_gpu_time
from costinfer.progress import NullProgress, ProgressSink
from costinfer.reading.source import open_source
from costinfer.report import write_report
from costinfer.routing.cascade import escalate
from costinfer.routing.checks import Acceptance, CheckError
from costinfer.store import Store


def plan(opts: RunOptions, progress: ProgressSink | None = None) -> Prepared:
    """Read, key, count and price a dataset, and plan its run: no network, nothing spent.

    The run is kept in the store as 'planned': ``run`` with the same options picks it up without reading again.
    """
    progress = progress or NullProgress()
    clock = Stopwatch()
    setup = load_setup(opts)
    identity = ray_identity(opts.ray_serve)  # --ray-serve's servers start with the run, not with its plan
    backend = setup.backend_cls(BackendConfig(base_url=opts.base_url or "http://plan.invalid", identity=identity))
    with (
        open_source(opts.input_path, setup.fmt) as source,
        Store.open(opts.store, wait_seconds=opts.store_wait_s, on_wait=progress.note) as store,
    ):
        counter = backend if opts.base_url and backend.exact_counts else None
        prepared = prepare(
            opts, setup, source, backend.name, backend.endpoint, store, progress, clock, planning=True, counter=counter
        )
        _note_mode(opts, backend, prepared)
        return prepared


def run(
    opts: RunOptions, progress: ProgressSink | None = None, on_plan: Callable[[Plan], None] | None = None
) -> RunSummary:
    """Run a dataset end to end. Raises ``CostinferError`` subclasses for user errors.

    ``on_plan`` sees the plan before anything is sent; when its expected cost does not fit the budget, the run stops
    there (``--on-over-budget fail``) or runs rows in priority, then input, order until the budget stops it.
    """
    progress = progress or NullProgress()
    clock = Stopwatch()
    setup = load_setup(opts)
    in_process = opts.base_url is None and setup.backend_cls.local_server(simulator_settings(opts)) is not None
    allowed, why = open_files_allow(opts.calls_in_flight(setup.backend_cls.reports_load), 2 if in_process else 1)
    if why is not None:
        progress.note(why)
        opts = replace(opts, concurrency=allowed)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(opts.input_path, setup.fmt))
        urls: list[str | None] = [opts.base_url, *opts.replicas]
        if opts.ray_serve:  # servers started on Ray for this run
            urls = list(stack.enter_context(servers_for_run(opts, setup.catalog)).urls)
            progress.note(f"--ray-serve: {len(urls)} server(s) up: {', '.join(map(str, urls))}")
        elif opts.base_url is None and (server := setup.backend_cls.local_server(simulator_settings(opts))):
            urls[0] = stack.enter_context(server)  # the provider serves itself (the simulator): its URL for this run
        backend = _backend(setup.backend_cls, urls, opts, ray_identity(opts.ray_serve))
        backend.api_key()  # a missing key fails now, naming its variable
        store = stack.enter_context(Store.open(opts.store, wait_seconds=opts.store_wait_s, on_wait=progress.note))
        counter = backend if backend.exact_counts else None
        prepared = prepare(
            opts, setup, source, backend.name, backend.endpoint, store, progress, clock, planning=False, counter=counter
        )
        mode = _note_mode(opts, backend, prepared)
        if on_plan is not None:
            on_plan(prepared.plan)
        _check_budget(opts, prepared, store, mode)
        backend.use_models(prepared.prices)
        resolved = replace(opts, mode=mode, online_fallback=opts.mode == "auto" and mode == "batch")
        return _execute_run(resolved, backend, store, prepared, progress, setup.acceptance)


def _backend(cls: type[Backend], urls: list[str | None], opts: RunOptions, identity: str | None = None) -> Backend:
    """The provider, or with several --base-url the replicas of one model behind one backend."""
    concurrency = opts.calls_in_flight(cls.reports_load)
    config = partial(BackendConfig, timeout_s=opts.timeout_s, concurrency=concurrency, identity=identity)
    return connect(cls, [config(base_url=u) for u in urls])


def _online_executor(
    opts: RunOptions,
    store: Store,
    run_id: str,
    backend: Backend,
    prepared: Prepared,
    guard: BudgetGuard,
    progress: ProgressSink,
) -> Executor:
    cfg = ExecConfig(
        concurrency=opts.calls_in_flight(backend.reports_load),
        follow_load=backend.reports_load and not opts.fixed_concurrency,
        known_batch=store.last_batch(backend.endpoint) if backend.reports_load else None,
        max_attempts=opts.max_attempts,
        rpm=opts.rpm,
        tpm=opts.tpm,
        fallback_model=opts.fallback_model,
        tagged=bool(opts.tag_by or opts.tags),
    )
    return Executor(store, run_id, backend, prepared.prices, guard, cfg, progress)


def _goes_online(opts: RunOptions, executor: BatchExecutor, store: Store, run_id: str) -> bool:
    """After the batches: what a deadline no longer allows in a batch (or, in auto mode, what failed in every batch
    round) is sent online, unless the run stopped for another reason."""
    if executor.stop_reason is not None or not store.plan_counts(run_id)["pending_keys"]:
        return False
    return executor.deadline_passed or opts.online_fallback


def _note_mode(opts: RunOptions, backend: Backend, prepared: Prepared) -> str:
    """Resolve --mode auto, and say why with the plan."""
    mode, why = choose_mode(opts.mode, backend, opts.deadline_h)
    if why:
        prepared.notes.append(why)
        prepared.plan.notes.append(why)
    return mode


def _check_budget(opts: RunOptions, prepared: Prepared, store: Store, mode: str = "online") -> None:
    the_plan = prepared.plan
    if the_plan.fits or opts.on_over_budget == "partial":
        return
    if mode == "batch" and the_plan.left_usd is not None and the_plan.expected_batch_cost_usd <= the_plan.left_usd:
        return  # at batch prices it fits
    store.set_run(prepared.run_id, status="planned")
    remove_stale(opts.output_path())  # nothing ran: an earlier run's results must not pass for this one's
    raise BudgetError(
        f"the expected cost ${the_plan.expected_cost_usd:.4f} (worst case ${the_plan.worst_cost_usd:.4f}) is more "
        f"than the budget left (${the_plan.left_usd:.4f}); nothing was sent. Raise --budget, or pass "
        f"--on-over-budget partial to run rows in priority, then input, order until the budget stops them"
    )


def _merge(into: Outcomes, later: Outcomes) -> None:
    """What a later round of calls (online after batches, a cascade's escalations) adds to the run's outcome."""
    into.calls_done += later.calls_done
    into.retries += later.retries
    into.cost_done += later.cost_done
    into.lost += later.lost
    into.stop_reason = later.stop_reason or into.stop_reason
    for name in ("auth_error", "fatal_error", "store_error", "unreachable"):
        if getattr(later, name) is not None:
            setattr(into, name, getattr(later, name))


def _still_going(executor: Outcomes) -> bool:
    failed = (executor.auth_error, executor.fatal_error, executor.store_error, executor.unreachable)
    return executor.stop_reason is None and all(f is None for f in failed)


def _execute_run(
    opts: RunOptions,
    backend: Backend,
    store: Store,
    prepared: Prepared,
    progress: ProgressSink,
    acceptance: Acceptance | None = None,
) -> RunSummary:
    clock = prepared.clock
    run_id = prepared.run_id
    store.set_run(run_id, status="running")
    guard = BudgetGuard(opts.budget_usd, prepared.plan.spent_usd)
    executor: Executor | BatchExecutor
    if opts.mode == "batch":
        batch_cfg = BatchConfig(
            wait=opts.wait,
            poll_s=opts.batch_poll_s,
            max_poll_s=max(opts.batch_poll_s, 60.0),
            deadline_h=opts.deadline_h if opts.deadline_given else None,
        )
        executor = BatchExecutor(store, run_id, backend, prepared.prices, guard, batch_cfg, progress)
    else:
        executor = _online_executor(opts, store, run_id, backend, prepared, guard, progress)
    progress.phase("rehearsing" if backend.rehearsal else "calling", prepared.plan.to_call)
    clock.mark("plan")
    since = now_utc()  # this invocation's calls are those committed from now on
    gpu_note: str | None = None
    failure: CostinferError | None = None
    check_failure: CheckError | None = None
    try:
        if prepared.plan.to_call:
            call_all(executor, store.pending(run_id))
        if isinstance(executor, BatchExecutor) and _goes_online(opts, executor, store, run_id):
            online = _online_executor(opts, store, run_id, backend, prepared, guard, progress)
            call_all(online, store.pending(run_id))
            _merge(executor, online)
        while acceptance is not None and _still_going(executor):  # a cascade: escalate what failed the check
            try:
                escalated = escalate(store, run_id, opts.models, acceptance, backend.endpoint)
            except CheckError as exc:  # the check cannot decide: stop before it escalates on its word
                executor.stop_reason, check_failure = "check_failed", exc
                break
            if not escalated:
                break
            progress.phase("escalating", escalated)
            stronger = _online_executor(opts, store, run_id, backend, prepared, guard, progress)
            call_all(stronger, store.pending(run_id))
            _merge(executor, stronger)
        failure = check_failure or _failure(executor, backend, store)
    except KeyboardInterrupt:  # a signal before the handler was in place: the run stopped, and says so
        executor.stop_reason = executor.stop_reason or "interrupted"
        raise
    finally:
        stop_reason = executor.stop_reason
        calls_elapsed = clock.mark("calls")
        control = getattr(executor, "control", None)
        if executor.store_error is None and control is not None and control.batch:
            store.remember_batch(run_id, control.batch)  # the next run against this server starts from it
        if executor.store_error is None and backend.self_hosted and executor.calls_done:
            gpu_note = attribute_gpu_time(store, run_id, since, prepared.prices, calls_elapsed, backend.servers())
            if gpu_note is not None:  # the measured GPU time replaced the per-token estimate
                executor.cost_done = store.spend_since(run_id, since)
        if executor.store_error is None:  # a store that failed a commit is not read again: rerun to get the file
            not_run_reason = f"not_run: {stop_reason}" if stop_reason else "not_run"
            out = opts.output_path()
            fmt = opts.output_format or ("parquet" if out.suffix.lower() == ".parquet" else "jsonl")
            write_or_explain(out, lambda: store.write_results(run_id, out, fmt, not_run_reason), True, store)
            status = "completed" if stop_reason is None else "stopped"
            store.set_run(run_id, status=status, finished_at=now_utc(), stop_reason=stop_reason)
        clock.mark("results")
    if failure is not None:
        raise failure
    summary = store.summary(run_id)
    notes = list(prepared.notes)
    notes.extend(backend.server_report())
    if gpu_note is not None:
        notes.append(gpu_note)
    if guard.overruns:
        notes.append(f"{guard.overruns} calls were billed more than their reserved worst case")
    if stop_reason == "interrupted":
        notes.append("stopped: rerun the same command to resume; answered rows will not be paid again")
    saved = savings(store, run_id, prepared.prices)
    if opts.semantic_audit:
        notes.append(_semantic_audit(opts, store, run_id))
    reports: list[str] = []
    if opts.report:
        out = opts.output_path()
        written = write_or_explain_report(lambda: write_report(store, run_id, prepared.prices, out), out)
        reports = [str(p) for p in written]
    clock.mark("report")
    summary_value = RunSummary(
        run_id=run_id,
        resumed=prepared.resumed,
        rows=int(summary["rows"]),
        rejects=int(summary["rejects"]),
        distinct=prepared.counts["distinct"],
        calls=executor.calls_done,
        fresh=int(summary["fresh"]),
        duplicates=int(summary["duplicates"]),
        cache_hits=int(summary["cache_hits"]),
        normalized=int(summary["normalized"]),
        semantic=int(summary["semantic"]),
        fallback=int(summary["fallback"]),
        routed=int(summary["routed"]),
        escalated=int(summary["escalated"]),
        embeddings_computed=prepared.embeddings_computed,
        failed=int(summary["failed"]),
        saved_usd=saved,
        not_run=int(summary["not_run"]),
        input_tokens=int(summary["input_tokens"]),
        output_tokens=int(summary["output_tokens"]),
        reasoning_tokens=int(summary["reasoning_tokens"]),
        cost_usd=executor.cost_done,
        run_cost_usd=Decimal(summary["run_cost_usd"]),
        budget_usd=opts.budget_usd,
        stop_reason=stop_reason,
        output=str(opts.output_path()),
        rejects_file=prepared.rejects_file,
        elapsed_s=round(clock.elapsed(), 3),
        calls_elapsed_s=round(calls_elapsed, 3),
        retries=executor.retries,
        notes=notes,
        plan=prepared.plan.as_dict(),
        timings=clock.rounded(),
        reports=reports,
        compare_with=_compare(opts, prepared, int(summary["input_tokens"]), int(summary["output_tokens"])),
        rehearsal=backend.rehearsal,
    )
    if opts.metrics_file is not None:
        from costinfer.report.metrics import write_metrics

        write_or_explain(
            opts.metrics_file,
            lambda: write_metrics(opts.metrics_file, summary_value.as_dict(), dataset_label(opts)),  # type: ignore[arg-type]
            True,
            store,
        )
    return summary_value


def _semantic_audit(opts: RunOptions, store: Store, run_id: str) -> str:
    """--semantic-audit N: N of the run's semantic reuses, drawn at random, in a file for a person to label."""
    path = opts.audit_path()
    rows = store.semantic_reuses(run_id, opts.semantic_audit, seed=int(run_id[:8], 16))
    if not rows:
        remove_stale(path)
        return "--semantic-audit: the semantic tier answered no row of this run; nothing to check"
    lines = [{**r, "label": None} for r in rows]
    write_or_explain(path, lambda: write_jsonl_atomically(path, lines), True, store)
    return (
        f"{len(rows)} semantic reuses sampled into {path}: set each label to 1 (the same question) or 0, then run "
        f"`costinfer cache calibrate {path}` for the precision at each threshold"
    )


def _compare(opts: RunOptions, prepared: Prepared, tokens_in: int, tokens_out: int) -> dict[str, Any] | None:
    """--compare-with: what the run's billed tokens would have cost at that model's list prices."""
    if not opts.compare_with:
        return None
    other = prepared.prices[opts.compare_with]
    return {"model": opts.compare_with, "cost_usd": other.cost(tokens_in, tokens_out)}


def _failure(executor: Executor | BatchExecutor, backend: Backend, store: Store) -> CostinferError | None:
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
