"""Before anything is sent: set up the catalog and the provider, read the dataset into the store (or pick up the
run planned or started earlier), settle reuse, and plan the run."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from costinfer.accounting.output_files import remove_stale, write_or_explain
from costinfer.backends.base import Backend, backend_class, registry
from costinfer.errors import BadRowError, ConfigError
from costinfer.pipeline.options import RunOptions, fingerprint, options_record, validate
from costinfer.pipeline.timing import Stopwatch
from costinfer.planning.levers import RoutingInput, add_levers
from costinfer.planning.plan import Plan
from costinfer.planning.plan import compute as compute_plan
from costinfer.planning.server_counts import count_on_server
from costinfer.pricing.catalog import Catalog, ModelPrice
from costinfer.pricing.config_file import Config
from costinfer.progress import ProgressSink
from costinfer.reading.formats import detect_format, row_kind
from costinfer.reading.ingest import FAST_COUNT_BYTES, Ingest, ingest_workers
from costinfer.reading.provider_files import SHAPES as BATCH_SHAPES
from costinfer.reading.rows import RowSpec
from costinfer.reading.source import Source, is_stdin
from costinfer.reading.tokens import warm_up
from costinfer.reuse.embeddings import Embedder, missing_dependency
from costinfer.reuse.tiers import DedupeStats
from costinfer.reuse.tiers import resolve as dedupe_resolve
from costinfer.routing.assign import assign
from costinfer.routing.cascade import escalate
from costinfer.routing.checks import Acceptance
from costinfer.routing.provider import REHEARSAL, choose_provider
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


@dataclass
class Setup:
    fmt: str
    config: Config
    catalog: Catalog
    backend_cls: type[Backend]
    acceptance: Acceptance | None = None  # --route cascade: the check an answer must pass


def default_model(opts: RunOptions) -> str:
    """The model of rows that name none: with --models, the cheapest candidate (routing moves them on)."""
    return opts.models[0] if opts.models else opts.model


def load_setup(opts: RunOptions) -> Setup:
    config = Config.load(opts.config)
    with_config_defaults(opts, config)
    named = [default_model(opts), *opts.models, *([opts.fallback_model] if opts.fallback_model else [])]
    catalog: Catalog | None = None
    if opts.provider is None:  # from the model: a run never rehearses unless asked to
        catalog = Catalog.load(opts.prices, config)
        opts.provider = choose_provider(None, list(dict.fromkeys(named)), catalog, set(registry()))
    validate(opts)
    file_format = None if opts.input_format in BATCH_SHAPES else opts.input_format  # batch files are JSONL
    fmt = detect_format(opts.input_path, file_format) if not is_stdin(opts.input_path) else (file_format or "jsonl")
    if is_stdin(opts.input_path) and fmt == "parquet":
        raise ConfigError("a Parquet dataset cannot come from standard input: name the file")
    catalog = catalog or Catalog.load(opts.prices, config)
    cls = backend_class(str(opts.provider))
    for model in [*named, *([opts.compare_with] if opts.compare_with else [])]:
        catalog.lookup(model, cls.name)  # an unknown model fails before anything is read or sent
    acceptance = None
    if opts.models and opts.route_policy == "cascade":
        acceptance = Acceptance(opts.accept_regex, opts.accept_json_schema, opts.accept_nonempty, opts.accept_cmd)
    size = 0 if is_stdin(opts.input_path) else opts.input_path.stat().st_size
    if fmt != "jsonl" or not ingest_workers(size):  # this process counts: load its encoder while reading starts
        warm_up(default_model(opts), fast=size >= FAST_COUNT_BYTES)
    return Setup(fmt, config, catalog, cls, acceptance)


def with_config_defaults(opts: RunOptions, config: Config) -> None:
    """costinfer.toml's [routing] fills the routing options the command line left unset."""
    for name, value in config.routing.items():
        if name.startswith("accept_") and opts.route not in (None, "cascade"):
            continue  # --route cheapest or budget on the command line: the file's cascade checks do not apply
        if getattr(opts, name) in (None, False, []):
            setattr(opts, name, list(value) if name == "models" else value)


def prepare(
    opts: RunOptions,
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
    fp = fingerprint(opts, source, setup.fmt, endpoint)
    previous = store.find_unfinished_run(fp)
    resumed = previous is not None and previous["status"] in ("running", "stopped")
    if previous is not None:
        run_id = str(previous["run_id"])
        if resumed:
            progress.note(f"resuming run {run_id}: rows already answered are not paid again")
    else:
        run_id = uuid.uuid4().hex
        store.create_run(
            run_id,
            fp,
            {
                "input_path": dataset_name(source),
                "input_format": setup.fmt,
                "provider": provider,
                "rehearsal": setup.backend_cls.rehearsal,
                "endpoint": endpoint,
                "model": opts.model,
                "budget_usd": opts.budget_usd,
                "options": orjson.dumps(options_record(opts)).decode(),
            },
        )
    store.set_run(run_id, status="planned" if planning or not resumed else "running", stop_reason=None)
    spec = RowSpec(
        model=default_model(opts),
        max_tokens=opts.max_tokens,
        prompt_field=opts.prompt_field,
        id_field=opts.id_field,
        template=opts.template,
        system=opts.system,
        text_cells=(setup.fmt == "csv"),
        strict_fields=opts.strict_fields,
        shape=row_shape(opts, setup.fmt, source.path),
        route_models=tuple(opts.models),
    )
    ingest = Ingest(store, run_id, source.path, setup.fmt, spec, endpoint, provider, setup.catalog, source.label)
    fresh = previous is None or not previous["ingested"]
    reuse = DedupeStats()
    if fresh:
        store.reset_ingest(run_id)
        clock.mark("setup")
        ingest.run(progress)
        clock.mark("read")
        counts = store.finish_ingest(run_id, opts.id_field)
        store.set_tags(run_id, opts.tag_by, opts.tags)
        reuse = resolve_reuse(opts, store, run_id, progress, ingest.semantic_opt_out)
        routed = None
        if opts.models:
            store.mark_routed(run_id, ingest.own_model)
            all_prices = {**ingest.prices, **{m: setup.catalog.lookup(m, provider) for m in opts.models}}
            left = None if opts.budget_usd is None else opts.budget_usd - store.run_spend(run_id)
            routed = assign(store, run_id, opts.models, all_prices, opts.route_policy, endpoint, left)
        record = {
            **options_record(opts),
            "reuse": asdict(reuse),
            "notes": ingest.notes(),
            "routing": asdict(routed) if routed else None,
        }
        store.set_run(run_id, options=orjson.dumps(record).decode())
    else:
        row = store.run(run_id) or {}
        counts = {"rows": int(row["rows"]), "rejects": int(row["rejects"]), "distinct": int(row["distinct_keys"])}
    clock.mark("index")
    input_path = source.label
    notes = ingest.notes() if fresh else stored_notes(store, run_id)
    semantic_state = reuse_note(store, run_id)
    if semantic_state:
        notes.append(semantic_state)
    if setup.backend_cls.rehearsal:  # first, so that nobody reads a rehearsal's figures as money
        notes.insert(0, REHEARSAL)
    warning = setup.catalog.age_warning(setup.config.max_age_days)
    if warning:
        notes.append(warning)
    rejects_file: str | None = None
    rejects_path = opts.rejects_path()
    if not counts["rejects"]:
        remove_stale(rejects_path)  # a rejects file beside these results would speak of another run
    else:
        write_or_explain(rejects_path, lambda: store.write_rejects(run_id, rejects_path, input_path), False)
        rejects_file = str(rejects_path)
        if opts.on_bad_row == "fail" and not planning:
            first = store.first_rejects(run_id, 1)[0]
            store.set_run(run_id, status="rejected", finished_at=now_utc(), stop_reason="bad_input")
            remove_stale(opts.output_path())  # no results for this run: an earlier run's must not pass for them
            more = counts["rejects"] - 1
            tail = f" (and {more} more bad row{'s' if more != 1 else ''})" if more else ""
            raise BadRowError(
                input_path,
                int(first["line"]),
                str(first["field"]),
                f"{first['reason']}{tail}; nothing was sent. All bad rows are in {rejects_path}; fix them or pass "
                f"--on-bad-row skip",
                row_kind=row_kind(setup.fmt),
            )
        notes.append(f"{counts['rejects']} bad rows {'found' if planning else 'skipped'}; see {rejects_file}")
    # a fresh ingestion priced every model its rows name; a resumed run's models are read back from the store
    prices = dict(ingest.prices) if fresh else prices_for_run(store, run_id, setup.catalog, provider)
    for model in [*opts.models, *([opts.fallback_model] if opts.fallback_model else [])]:
        prices[model] = setup.catalog.lookup(model, provider)
    if setup.acceptance is not None:  # answers from the cache or a reuse tier are checked like fresh ones
        escalated = escalate(store, run_id, opts.models, setup.acceptance, endpoint)
        if escalated:
            notes.append(f"{escalated} answers already known failed the check and go to a stronger model")
    if counter is not None:
        counted, exact = count_on_server(store, run_id, counter, progress)
        if exact:  # the server's own counts replaced costinfer's estimates
            notes[:] = [n for n in notes if not n.startswith("estimate:")]
        notes.extend(counted)
    the_plan = compute_plan(store, run_id, prices, opts.budget_usd, dataset_name(source), notes)
    routing = RoutingInput(opts.models, opts.route_policy) if opts.models else None
    add_levers(the_plan, store, run_id, prices, dataset_name(source), routing, setup.backend_cls.prompt_cache)
    if opts.compare_with:
        other = prices[opts.compare_with] = setup.catalog.lookup(opts.compare_with, provider)
        cost = sum((other.cost(m.input_tokens, m.expected_output_tokens) for m in the_plan.models), Decimal(0))
        the_plan.compare = {"model": opts.compare_with, "expected_cost_usd": cost}
    # the plan is kept with the run: its report sets it beside the outcome
    record = orjson.loads((store.run(run_id) or {}).get("options") or "{}")
    record.update(plan=the_plan.as_dict(), results=str(opts.output_path().resolve()))
    store.set_run(run_id, options=orjson.dumps(record).decode())
    computed = reuse.embeddings_computed if fresh else 0
    clock.mark("plan")
    return Prepared(run_id, resumed, counts, prices, rejects_file, notes, the_plan, computed, clock)


def resolve_reuse(
    opts: RunOptions, store: Store, run_id: str, progress: ProgressSink, opt_out: set[str]
) -> DedupeStats:
    embedder = None
    note = None
    if not opts.semantic:
        note = "semantic tier off (--no-semantic or COSTINFER_SEMANTIC=0)"
    elif (why := missing_dependency()) is not None:
        note = f"semantic tier off: {why}"
    else:
        embedder = Embedder(store, opts.embedding_model, opts.engine, opts.ray_address)
        where = f" on Ray ({opts.ray_address or 'local'})" if opts.engine == "ray" else ""
        progress.note(f"semantic tier: embedding with {embedder.model_name}{where}")
    stats = dedupe_resolve(store, run_id, embedder, opts.semantic_threshold, opt_out)
    stats.semantic_note = note
    return stats


def row_shape(opts: RunOptions, fmt: str, path: Path) -> str:
    """A provider batch file (named with --format, or detected from its first line), or plain rows."""
    from costinfer.reading.provider_files import SHAPES, detect_shape

    if opts.input_format in SHAPES:
        return str(opts.input_format)
    return detect_shape(path) if fmt == "jsonl" and opts.input_format is None else "plain"


def stored_notes(store: Store, run_id: str) -> list[str]:
    """The notes ingestion made (unknown fields, estimated counts) when the rows were read by an earlier command."""
    row = store.run(run_id) or {}
    return list(orjson.loads(row.get("options") or "{}").get("notes") or [])


def dataset_name(source: Source) -> str:
    return str(source.identity.get("path") or source.label)


def reuse_note(store: Store, run_id: str) -> str | None:
    row = store.run(run_id) or {}
    reuse = orjson.loads(row.get("options") or "{}").get("reuse") or {}
    return reuse.get("semantic_note")


def prices_for_run(store: Store, run_id: str, catalog: Catalog, provider: str) -> dict[str, ModelPrice]:
    """Every model a run's account needs: those its requests name or were sent to, its routing candidates (the
    strongest is the waterfall's reference), its fallback model and the model it was compared with."""
    record = orjson.loads((store.run(run_id) or {}).get("options") or "{}")
    named = [*(record.get("models") or []), record.get("fallback_model"), record.get("compare_with")]
    models = set(store.run_models(run_id)) | {str(m) for m in named if m}
    return {model: catalog.lookup(model, provider) for model in sorted(models)}


def now_utc() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC)
