"""Before anything is sent: read the dataset into the store (or pick up the run planned or started earlier), settle
reuse and routing, and plan the run."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from costinfer.accounting.output_files import remove_stale, write_or_explain
from costinfer.backends.base import Backend
from costinfer.errors import BadRowError
from costinfer.pipeline.learning import learned_router
from costinfer.pipeline.setup import Setup, fingerprint
from costinfer.pipeline.timing import Stopwatch
from costinfer.planning.levers import RoutingInput, add_levers
from costinfer.planning.plan import Plan
from costinfer.planning.plan import compute as compute_plan
from costinfer.planning.server_counts import count_on_server
from costinfer.pricing.catalog import Catalog, ModelPrice
from costinfer.progress import ProgressSink
from costinfer.reading.formats import row_kind
from costinfer.reading.ingest import Ingest
from costinfer.reading.provider_files import SHAPES, detect_shape
from costinfer.reading.rows import RowSpec
from costinfer.reading.source import Source
from costinfer.reuse.embeddings import Embedder, missing_dependency
from costinfer.reuse.tiers import DedupeStats
from costinfer.reuse.tiers import resolve as dedupe_resolve
from costinfer.routing.assign import assign
from costinfer.routing.cascade import escalate
from costinfer.routing.provider import REHEARSAL
from costinfer.spec import InputSpec, RaySpec, ReuseSpec, RunSpec
from costinfer.store import Store


@dataclass
class Prepared:
    """A run ready to call: its rows are in the store and its plan is known."""

    run_id: str
    resumed: bool  # an earlier attempt of this same run had started calling
    counts: dict[str, int]
    prices: dict[str, ModelPrice]
    rejects_file: str | None
    notes: list[str]
    plan: Plan
    embeddings_computed: int = 0
    clock: Stopwatch = field(default_factory=Stopwatch)


def prepare(
    spec: RunSpec,
    setup: Setup,
    source: Source,
    provider: str,
    endpoint: str,
    store: Store,
    progress: ProgressSink,
    clock: Stopwatch,
    *,
    planning: bool,
    counter: Backend | None = None,
) -> Prepared:
    """``counter``: a self-hosted server that counts prompts itself (``exact_counts``): the plan uses its counts."""
    fp = fingerprint(spec, source, setup.fmt, endpoint)
    previous = store.find_unfinished_run(fp)
    resumed = previous is not None and previous["status"] in ("running", "stopped")
    if previous is not None:
        run_id = str(previous["run_id"])
        if resumed:
            progress.note(f"resuming run {run_id}: rows already answered are not paid again")
    else:
        run_id = uuid.uuid4().hex
        store.create_run(run_id, fp, _run_record(spec, setup, source, provider, endpoint))
    store.set_run(run_id, status="planned" if planning or not resumed else "running", stop_reason=None)
    rows = row_spec(spec, setup.fmt, source.path)
    ingest = Ingest(store, run_id, source.path, setup.fmt, rows, endpoint, provider, setup.catalog, source.label)
    fresh = previous is None or not previous["ingested"]
    reuse = DedupeStats()
    route_notes: list[str] = []
    if fresh:
        store.reset_ingest(run_id)
        clock.mark("setup")
        ingest.run(progress)
        clock.mark("read")
        counts = store.finish_ingest(run_id, spec.input.id_field)
        store.set_tags(run_id, list(spec.input.tag_by), dict(spec.input.tags))
        # a run that stops on its bad rows (below) stops before the semantic tier loads a model and routing prices
        prepared = not (counts["rejects"] and spec.input.on_bad_row == "fail" and not planning)
        if prepared:
            reuse = resolve_reuse(spec.reuse, spec.ray, store, run_id, progress, ingest.semantic_opt_out)
            if spec.routing.routed:
                route_notes = _route(spec, setup, store, run_id, provider, endpoint, ingest, progress)
        # ``ingested``: read, reused and routed. A run stopped before (Ctrl-C while a million texts embed) reads its
        # dataset again when resumed, to make its reuses and routes whole: the rows' opt-outs and own models they
        # need are known only while reading; embeddings already stored are not computed again.
        store.set_run(
            run_id, notes=[*ingest.notes(), *route_notes], semantic_note=reuse.semantic_note, ingested=prepared
        )
    else:
        row = store.run(run_id) or {}
        counts = {"rows": int(row["rows"]), "rejects": int(row["rejects"]), "distinct": int(row["distinct_keys"])}
    clock.mark("index")
    notes = _notes(setup, store, run_id)
    rejects_file = _rejects(spec, setup.fmt, store, run_id, source.label, counts["rejects"], planning, notes)
    # a fresh ingestion priced every model its rows name; a resumed run's models are read back from the store
    prices = dict(ingest.prices) if fresh else prices_for_run(store, run_id, setup.catalog, provider)
    for model in [*spec.routing.models, *([spec.routing.fallback_model] if spec.routing.fallback_model else [])]:
        prices[model] = setup.catalog.lookup(model, provider)
    if setup.acceptance is not None:  # answers from the cache or a reuse tier are checked like fresh ones
        escalated = escalate(store, run_id, list(spec.routing.models), setup.acceptance, endpoint)
        if escalated:
            notes.append(f"{escalated} answers already known failed the check and go to a stronger model")
    if counter is not None:
        counted, exact = count_on_server(store, run_id, counter, progress)
        if exact:  # the server's own counts replaced costinfer's estimates
            notes[:] = [n for n in notes if not n.startswith("estimate:")]
        notes.extend(counted)
    the_plan = _plan(spec, setup, store, run_id, prices, provider, dataset_name(source), notes)
    store.keep_plan(run_id, the_plan.as_dict())  # the report sets it beside the outcome
    computed = reuse.embeddings_computed if fresh else 0
    clock.mark("plan")
    return Prepared(run_id, resumed, counts, prices, rejects_file, notes, the_plan, computed, clock)


def _run_record(spec: RunSpec, setup: Setup, source: Source, provider: str, endpoint: str) -> dict[str, object]:
    """The run's row in the store: what it reads, calls and may spend (docs/store.md, ``runs``)."""
    return {
        "input_path": dataset_name(source),
        "input_format": setup.fmt,
        "provider": provider,
        "rehearsal": setup.backend_cls.rehearsal,
        "endpoint": endpoint,
        "model": spec.routing.model,
        "budget_usd": spec.money.budget_usd,
        "budget_pool": spec.money.budget_pool,
        "models": list(spec.routing.models),
        "fallback_model": spec.routing.fallback_model,
        "compare_with": spec.money.compare_with,
        "rate_limit_rpm": spec.execution.rpm or spec.rehearsal.rpm,
        "results_path": str(spec.output.results.resolve()),
        "route_check": setup.acceptance.fingerprint() if setup.acceptance is not None else None,
    }


def _route(
    spec: RunSpec,
    setup: Setup,
    store: Store,
    run_id: str,
    provider: str,
    endpoint: str,
    ingest: Ingest,
    progress: ProgressSink,
) -> list[str]:
    """Route the run's requests before any call; a learned route decides its first round here (the plan shows
    it). Returns what the plan should say about it."""
    routing = spec.routing
    store.mark_routed(run_id, ingest.own_model)
    all_prices = {**ingest.prices, **{m: setup.catalog.lookup(m, provider) for m in routing.models}}
    budget = spec.money.budget_usd
    left = None if budget is None else budget - store.run_spend(run_id)
    assign(store, run_id, list(routing.models), all_prices, routing.policy, endpoint, left)
    router = learned_router(spec, store, run_id, all_prices, endpoint, setup.acceptance, progress)
    if router is None:
        return []
    rounds = router.start()
    first = router.decide_next()
    if first is None:
        return []
    more = f" (the other {rounds - 1} rounds are decided as checks arrive)" if rounds > 1 else ""
    return [first.note + more]


def _notes(setup: Setup, store: Store, run_id: str) -> list[str]:
    """What the plan and the summary say besides figures: ingestion's notes, the semantic tier's state, a rehearsal,
    an old catalog."""
    row = store.run(run_id) or {}
    notes = [str(n) for n in row.get("notes") or []]
    if row.get("semantic_note"):
        notes.append(str(row["semantic_note"]))
    if setup.backend_cls.rehearsal:  # first, so that nobody reads a rehearsal's figures as money
        notes.insert(0, REHEARSAL)
    warning = setup.catalog.age_warning(setup.config.max_age_days)
    if warning:
        notes.append(warning)
    return notes


def _rejects(
    spec: RunSpec, fmt: str, store: Store, run_id: str, label: str, rejects: int, planning: bool, notes: list[str]
) -> str | None:
    """Write the bad rows beside the results, and stop the run on them unless ``--on-bad-row skip``."""
    path = spec.output.rejects
    if not rejects:
        remove_stale(path)  # a rejects file beside these results would speak of another run
        return None
    write_or_explain(path, lambda: store.write_rejects(run_id, path, label), False)
    if spec.input.on_bad_row == "fail" and not planning:
        first = store.first_rejects(run_id, 1)[0]
        store.set_run(run_id, status="rejected", finished_at=now_utc(), stop_reason="bad_input")
        remove_stale(spec.output.results)  # no results for this run: an earlier run's must not pass for them
        more = rejects - 1
        tail = f" (and {more} more bad row{'s' if more != 1 else ''})" if more else ""
        raise BadRowError(
            label,
            int(first["line"]),
            str(first["field"]),
            f"{first['reason']}{tail}; nothing was sent. All bad rows are in {path}; fix them or pass "
            f"--on-bad-row skip",
            row_kind=row_kind(fmt),
        )
    notes.append(f"{rejects} bad rows {'found' if planning else 'skipped'}; see {path}")
    return str(path)


def _plan(
    spec: RunSpec,
    setup: Setup,
    store: Store,
    run_id: str,
    prices: dict[str, ModelPrice],
    provider: str,
    dataset: str,
    notes: list[str],
) -> Plan:
    the_plan = compute_plan(store, run_id, prices, spec.money.budget_usd, dataset, notes)
    routing = RoutingInput(list(spec.routing.models), spec.routing.policy) if spec.routing.routed else None
    add_levers(the_plan, store, run_id, prices, dataset, routing, setup.backend_cls.prompt_cache)
    if spec.money.compare_with:
        other = prices[spec.money.compare_with] = setup.catalog.lookup(spec.money.compare_with, provider)
        cost = sum((other.cost(m.input_tokens, m.expected_output_tokens) for m in the_plan.models), Decimal(0))
        the_plan.compare = {"model": spec.money.compare_with, "expected_cost_usd": cost}
    return the_plan


def resolve_reuse(
    reuse: ReuseSpec, ray: RaySpec, store: Store, run_id: str, progress: ProgressSink, opt_out: set[str]
) -> DedupeStats:
    embedder = None
    note = None
    if not reuse.semantic:
        note = "semantic tier off (--no-semantic or COSTINFER_SEMANTIC=0)"
    elif (why := missing_dependency()) is not None:
        note = f"semantic tier off: {why}"
    else:
        embedder = Embedder(store, reuse.embedding_model, ray.engine, ray.address, progress)
        where = f" on Ray ({ray.address or 'local'})" if ray.engine == "ray" else ""
        progress.note(f"semantic tier: embedding with {embedder.model_name}{where}")
    stats = dedupe_resolve(store, run_id, embedder, reuse.threshold, opt_out)
    stats.semantic_note = note
    return stats


def row_spec(spec: RunSpec, fmt: str, path: Path) -> RowSpec:
    """How the reading stage turns this run's rows into requests."""
    inp = spec.input
    return RowSpec(
        model=spec.routing.default_model,
        max_tokens=inp.max_tokens,
        prompt_field=inp.prompt_field,
        id_field=inp.id_field,
        template=inp.template,
        system=inp.system,
        text_cells=(fmt == "csv"),
        strict_fields=inp.strict_fields,
        shape=row_shape(inp, fmt, path),
        route_models=spec.routing.models,
    )


def row_shape(inp: InputSpec, fmt: str, path: Path) -> str:
    """A provider batch file (named with --format, or detected from its first line), or plain rows."""
    if inp.format in SHAPES:
        return str(inp.format)
    return detect_shape(path) if fmt == "jsonl" and inp.format is None else "plain"


def dataset_name(source: Source) -> str:
    return str(source.identity.get("path") or source.label)


def prices_for_run(store: Store, run_id: str, catalog: Catalog, provider: str) -> dict[str, ModelPrice]:
    """Every model a run's account needs: those its requests name or were sent to, its routing candidates (the
    strongest is the waterfall's reference), its fallback model and the model it was compared with."""
    row = store.run(run_id) or {}
    named = [*(row.get("models") or []), row.get("fallback_model"), row.get("compare_with")]
    models = set(store.run_models(run_id)) | {str(m) for m in named if m}
    return {model: catalog.lookup(model, provider) for model in sorted(models)}


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
