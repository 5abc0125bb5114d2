"""The main job: read a dataset, pay once per distinct request, run the rest, write every row's result, resume.

``run(spec)`` is what ``costinfer run`` calls (``spec`` from ``costinfer.pipeline.build.run_spec``); it is usable as a
library. A run is identified by a fingerprint of its input file and the options that shape its requests: running the
same command again after a crash or a stop resumes that run (nothing already answered is paid again); running it
again after it completed starts a new run whose rows are answered from the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from typing import Any

from costinfer.accounting.output_files import remove_stale
from costinfer.accounting.summary import RunSummary
from costinfer.backends.base import Backend, BackendConfig
from costinfer.backends.replicas import connect
from costinfer.engines.ray_serve import identity as ray_identity
from costinfer.engines.ray_serve import servers_for_run
from costinfer.errors import BudgetError
from costinfer.execution.batch_mode import choose_mode
from costinfer.execution.event_loop import open_files_allow
from costinfer.pipeline.account import account
from costinfer.pipeline.call import Calling, call
from costinfer.pipeline.prepare import Prepared, prepare
from costinfer.pipeline.setup import load_setup
from costinfer.pipeline.timing import Stopwatch
from costinfer.planning.plan import Plan
from costinfer.progress import NullProgress, ProgressSink
from costinfer.reading.source import open_source
from costinfer.spec import RunSpec
from costinfer.store import Store


def plan(spec: RunSpec, progress: ProgressSink | None = None) -> Prepared:
    """Read, key, count and price a dataset, and plan its run: no network, nothing spent.

    The run is kept in the store as 'planned': ``run`` with the same options picks it up without reading again.
    """
    progress = progress or NullProgress()
    clock = Stopwatch()
    setup = load_setup(spec, planning=True)
    identity = ray_identity(spec.ray.serve)  # --ray-serve's servers start with the run, not with its plan
    base_url = spec.execution.base_url
    settings = setup.config.providers.get(setup.backend_cls.name, {})
    backend = setup.backend_cls(
        BackendConfig(base_url=base_url or "http://plan.invalid", identity=identity, settings=settings)
    )
    with (
        open_source(spec.input.path, setup.fmt) as source,
        _open_store(spec, progress) as store,
    ):
        counter = backend if base_url and backend.exact_counts else None
        prepared = prepare(
            spec, setup, source, backend.name, backend.endpoint, store, progress, clock, planning=True, counter=counter
        )
        _note_mode(spec, backend, prepared)
        return prepared


def _open_store(spec: RunSpec, progress: ProgressSink) -> contextlib.AbstractContextManager[Store]:
    return Store.open(spec.store.path, wait_seconds=spec.store.wait_s, on_wait=progress.note)


def run(
    spec: RunSpec, progress: ProgressSink | None = None, on_plan: Callable[[Plan], None] | None = None
) -> RunSummary:
    """Run a dataset end to end. Raises ``CostinferError`` subclasses for user errors.

    ``on_plan`` sees the plan before anything is sent; when its expected cost does not fit the budget, the run stops
    there (``--on-over-budget fail``) or runs rows in priority, then input, order until the budget stops it.
    """
    progress = progress or NullProgress()
    clock = Stopwatch()
    setup = load_setup(spec)
    execution = spec.execution
    sim = spec.rehearsal.settings(execution.timeout_s)
    in_process = execution.base_url is None and setup.backend_cls.local_server(sim) is not None
    in_flight, why = open_files_allow(execution.calls_in_flight(setup.backend_cls.reports_load), 2 if in_process else 1)
    if why is not None:
        progress.note(why)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(spec.input.path, setup.fmt))
        urls = execution.urls
        if spec.ray.serve:  # servers started on Ray for this run
            model = spec.routing.model
            urls = list(stack.enter_context(servers_for_run(spec.ray, model, setup.catalog)).urls)
            progress.note(f"--ray-serve: {len(urls)} server(s) up: {', '.join(map(str, urls))}")
        elif execution.base_url is None and (server := setup.backend_cls.local_server(sim)):
            urls[0] = stack.enter_context(server)  # the provider serves itself (the simulator): its URL for this run
        settings = setup.config.providers.get(setup.backend_cls.name, {})
        backend = _backend(
            setup.backend_cls, urls, execution.timeout_s, in_flight, ray_identity(spec.ray.serve), settings
        )
        backend.api_key()  # a missing key fails now, naming its variable
        store = stack.enter_context(_open_store(spec, progress))
        counter = backend if backend.exact_counts else None
        prepared = prepare(
            spec, setup, source, backend.name, backend.endpoint, store, progress, clock, planning=False, counter=counter
        )
        mode = _note_mode(spec, backend, prepared)
        if on_plan is not None:
            on_plan(prepared.plan)
        _check_budget(spec, prepared, store, mode)
        backend.use_models(prepared.prices)
        calling = Calling(spec, backend, store, prepared, progress, in_flight, mode)
        return account(calling, call(calling, setup.acceptance))


def _backend(
    cls: type[Backend],
    urls: list[str | None],
    timeout_s: float,
    in_flight: int,
    identity: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Backend:
    """The provider, or with several --base-url the replicas of one model behind one backend; ``settings``: its
    table in costinfer.toml (``[providers.NAME]``)."""
    config = partial(
        BackendConfig, timeout_s=timeout_s, concurrency=in_flight, identity=identity, settings=settings or {}
    )
    return connect(cls, [config(base_url=u) for u in urls])


def _note_mode(spec: RunSpec, backend: Backend, prepared: Prepared) -> str:
    """Resolve --mode auto, and say why with the plan."""
    mode, why = choose_mode(spec.batch.mode, backend, spec.batch.hours)
    if why:
        prepared.notes.append(why)
        prepared.plan.notes.append(why)
    return mode


def _check_budget(spec: RunSpec, prepared: Prepared, store: Store, mode: str = "online") -> None:
    the_plan = prepared.plan
    pool = spec.money.budget_pool
    if pool and spec.money.on_over_budget != "partial":  # the team's pool must hold the expected cost too
        left = next((p["left_usd"] for p in store.pools() if p["name"] == pool), None)
        if left is not None and the_plan.expected_cost_usd > left:
            store.set_run(prepared.run_id, status="planned")
            remove_stale(spec.output.results)
            raise BudgetError(
                f"the expected cost ${the_plan.expected_cost_usd:.4f} is more than the budget pool {pool} has left "
                f"(${left:.4f}); nothing was sent. `costinfer budget show` lists what it spent; pass "
                f"--on-over-budget partial to run rows in priority, then input, order until the pool stops them"
            )
    if the_plan.fits or spec.money.on_over_budget == "partial":
        return
    if mode == "batch" and the_plan.left_usd is not None and the_plan.expected_batch_cost_usd <= the_plan.left_usd:
        return  # at batch prices it fits
    store.set_run(prepared.run_id, status="planned")
    remove_stale(spec.output.results)  # nothing ran: an earlier run's results must not pass for this one's
    raise BudgetError(
        f"the expected cost ${the_plan.expected_cost_usd:.4f} (worst case ${the_plan.worst_cost_usd:.4f}) is more "
        f"than the budget left (${the_plan.left_usd:.4f}); nothing was sent. Raise --budget, or pass "
        f"--on-over-budget partial to run rows in priority, then input, order until the budget stops them"
    )
