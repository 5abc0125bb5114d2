"""The main job: read a dataset, pay once per distinct request, run the rest, write every row's result, resume.

``run(options)`` is what ``costinfer run`` calls; it is usable as a library. A run is identified by a fingerprint of
its input file and the options that shape its requests: running the same command again after a crash or a stop
resumes that run (nothing already answered is paid again); running it again after it completed starts a new run whose
rows are answered from the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import anyio
import duckdb
import orjson

from costinfer.backends.base import Backend, BackendConfig, backend_class
from costinfer.core.budget import BudgetGuard
from costinfer.core.config import Config
from costinfer.core.dedupe import DEFAULT_THRESHOLD, DedupeStats
from costinfer.core.dedupe import resolve as dedupe_resolve
from costinfer.core.embed import Embedder, missing_dependency
from costinfer.core.errors import (
    AuthError,
    BudgetError,
    ConfigError,
    CostinferError,
    ExitCode,
    InputError,
    UnreachableError,
    WriteError,
)
from costinfer.core.executor import ExecConfig, Executor
from costinfer.core.ingest import FAST_COUNT_BYTES, Ingest, ingest_workers
from costinfer.core.plan import Plan
from costinfer.core.plan import compute as compute_plan
from costinfer.core.prices import Catalog, ModelPrice
from costinfer.core.progress import NullProgress, ProgressSink
from costinfer.core.reader import detect_format, row_kind
from costinfer.core.rows import RowSpec
from costinfer.core.source import Source, check_file, is_stdin, open_source
from costinfer.core.timing import Stopwatch
from costinfer.core.tokens import warm_up
from costinfer.store import Store, default_store_path

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_MAX_TOKENS = 512
# The largest budget accepted: the store keeps dollars as DECIMAL(38,12)
MAX_BUDGET = Decimal(10) ** 12


@dataclass
class RunOptions:
    input_path: Path
    provider: str = "simulate"
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    budget_usd: Decimal | None = None
    output: Path | None = None
    rejects: Path | None = None
    store: Path | None = None
    store_wait_s: float = 0.0
    concurrency: int = 16
    input_format: str | None = None
    prompt_field: str = "prompt"
    id_field: str = "id"
    template: str | None = None
    system: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    on_bad_row: Literal["fail", "skip"] = "fail"
    timeout_s: float = 60.0
    max_attempts: int = 4
    prices: Path | None = None
    config: Path | None = None
    on_over_budget: Literal["fail", "partial"] = "fail"
    simulator_latency_ms: float = 0.0
    simulator_faults: str | None = None  # e.g. "429=0.05,5xx=0.1": a rehearsal against faults
    simulator_rpm: int | None = None
    simulator_tpm: int | None = None
    simulator_seed: int | None = None
    simulator_limit_mode: str = "window"  # how the simulator enforces its limits: window, bucket or second
    rpm: float | None = None  # the provider's limits, to pace calls within
    tpm: float | None = None
    fallback_model: str | None = None  # sent instead while the provider keeps failing (circuit breaker open)
    semantic: bool = field(default_factory=lambda: os.environ.get("COSTINFER_SEMANTIC", "1") != "0")
    semantic_threshold: float = DEFAULT_THRESHOLD
    embedding_model: str | None = None
    strict_fields: bool = False  # a row with a field costinfer does not know is a bad row, not a warning

    def output_path(self) -> Path:
        if self.output is not None:
            return self.output
        stem = "stdin" if is_stdin(self.input_path) else Source(self.input_path, "", {}).stem
        return Path.cwd() / f"{stem}.results.jsonl"

    def rejects_path(self) -> Path:
        if self.rejects is not None:
            return self.rejects
        out = self.output_path()
        return out.with_name(f"{out.stem}.rejects.jsonl")


@dataclass
class RunSummary:
    run_id: str
    resumed: bool
    rows: int
    rejects: int
    distinct: int
    calls: int  # calls this invocation made and saved
    fresh: int
    duplicates: int
    cache_hits: int
    normalized: int  # rows answered by the normalized-text tier
    semantic: int  # rows answered by the semantic tier
    fallback: int  # rows answered by the fallback model while the provider kept failing
    embeddings_computed: int
    failed: int
    not_run: int
    saved_usd: dict[str, Decimal]  # per source: what the reused rows would have cost as calls of their own
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int  # the part of output_tokens a reasoning model spent thinking
    cost_usd: Decimal  # billed by this invocation
    run_cost_usd: Decimal  # billed by the whole run, with earlier attempts before a resume
    budget_usd: Decimal | None
    stop_reason: str | None
    output: str
    rejects_file: str | None
    elapsed_s: float
    calls_elapsed_s: float  # the part of elapsed_s spent sending calls
    notes: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    # seconds per phase: setup, read (parse, key, count), index (distinct requests, reuse tiers), plan, calls,
    # results (the results file), report (the summary)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> ExitCode:
        if self.stop_reason == "interrupted":
            return ExitCode.INTERRUPTED
        if self.stop_reason == "budget" and self.not_run:
            return ExitCode.BUDGET
        if self.failed:
            return ExitCode.ROWS_FAILED
        return ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                value = money_text(value)
            elif isinstance(value, dict):
                value = {k: money_text(v) if isinstance(v, Decimal) else v for k, v in value.items()}
            out[name] = value
        out["exit_code"] = int(self.exit_code)
        return out


def money_text(value: Decimal) -> str:
    """Exact dollars as plain decimal text: no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def fingerprint(opts: RunOptions, source: Source, fmt: str, endpoint: str) -> str:
    parts = {
        **source.identity,
        "format": fmt,
        "endpoint": endpoint,
        "model": opts.model,
        "max_tokens": opts.max_tokens,
        "prompt_field": opts.prompt_field,
        "id_field": opts.id_field,
        "template": opts.template,
        "system": opts.system,
        "on_bad_row": opts.on_bad_row,
        "semantic": [opts.semantic, opts.semantic_threshold, opts.embedding_model],
    }
    if opts.strict_fields:  # only when set: runs planned before the option existed keep their fingerprint
        parts["strict_fields"] = True
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def validate(opts: RunOptions) -> None:
    """Every option checked before anything is read or sent: one line naming the option and the fix."""
    if opts.concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {opts.concurrency}")
    if opts.budget_usd is not None and not (0 <= opts.budget_usd <= MAX_BUDGET):
        raise ConfigError(f"--budget must be between 0 and {MAX_BUDGET:,} dollars, got {opts.budget_usd}")
    if opts.max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1, got {opts.max_tokens}")
    for name, value in (("--rpm", opts.rpm), ("--tpm", opts.tpm)):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be more than 0, got {value}")
    if opts.on_over_budget not in ("fail", "partial"):
        raise ConfigError(f"--on-over-budget must be fail or partial, got {opts.on_over_budget}")
    if opts.on_bad_row not in ("fail", "skip"):
        raise ConfigError(f"--on-bad-row must be fail or skip, got {opts.on_bad_row}")
    if not 0 < opts.semantic_threshold <= 1:
        raise ConfigError(f"--semantic-threshold must be in (0, 1], got {opts.semantic_threshold}")
    if opts.timeout_s <= 0:
        raise ConfigError(f"--timeout must be more than 0 seconds, got {opts.timeout_s}")
    if opts.max_attempts < 1:
        raise ConfigError(f"--max-attempts must be at least 1, got {opts.max_attempts}")
    if opts.base_url is not None:
        check_url(opts.base_url)
    if opts.template is not None:
        check_template(opts.template)
    check_file(opts.input_path)
    out = opts.output_path()
    if out.suffix.lower() not in (".jsonl", ".parquet"):
        raise ConfigError(f"--output {out}: the results file must end in .jsonl or .parquet")
    for flag, path in (("--output", out), ("--rejects", opts.rejects_path())):
        folder = path.parent
        if not folder.is_dir():
            raise ConfigError(f"{flag} {path}: the folder {folder} does not exist; nothing was sent")
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"{flag} {path}: the folder {folder} is not writable; nothing was sent")
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a folder; name a file")
    _check_distinct(opts)


def _check_distinct(opts: RunOptions) -> None:
    """The input, the results, the rejects and the store are four different files: writing one must never destroy
    another (``-o data.jsonl`` once overwrote the dataset with its results)."""
    named = [("--output", opts.output_path()), ("--rejects", opts.rejects_path())]
    named.append(("--store", opts.store or default_store_path()))
    if not is_stdin(opts.input_path):
        named.insert(0, ("the input", opts.input_path))
    for i, (flag_a, a) in enumerate(named):
        for flag_b, b in named[i + 1 :]:
            if _same_file(a, b):
                raise ConfigError(
                    f"{flag_b} {b} is the same file as {flag_a}{'' if flag_a == 'the input' else ' ' + str(a)}: "
                    f"writing it would destroy the other; choose another path. Nothing was read or sent"
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.expanduser().resolve() == b.expanduser().resolve()
    except OSError:
        return False


def check_url(url: str) -> None:
    """A base URL must be http(s)://host[:port][/path]: anything else fails here, not as an error on every call."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"--base-url '{url}' is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--base-url '{url}' is not a URL: give http(s)://HOST[:PORT]/PATH, e.g. http://127.0.0.1:8000/v1"
        )


def check_template(template: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(
            f"--template '{template}': {exc}; write a column as {{name}} and a brace as {{{{ or }}}}"
        ) from None
    if not any(names):
        raise ConfigError(
            f"--template '{template}' names no column: write columns as {{name}}, e.g. 'Classify: {{text}}'"
        )


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
class _Setup:
    fmt: str
    config: Config
    catalog: Catalog
    backend_cls: type[Backend]


def _setup(opts: RunOptions) -> _Setup:
    validate(opts)
    fmt = (
        detect_format(opts.input_path, opts.input_format)
        if not is_stdin(opts.input_path)
        else (opts.input_format or "jsonl")
    )
    if is_stdin(opts.input_path) and fmt == "parquet":
        raise ConfigError("a Parquet dataset cannot come from standard input: name the file")
    config = Config.load(opts.config)
    catalog = Catalog.load(opts.prices, config)
    cls = backend_class(opts.provider)
    catalog.lookup(opts.model, cls.name)  # an unknown default model fails before anything is read or sent
    if opts.fallback_model:
        catalog.lookup(opts.fallback_model, cls.name)
    size = 0 if is_stdin(opts.input_path) else opts.input_path.stat().st_size
    if fmt != "jsonl" or not ingest_workers(size):  # this process counts: load its encoder while reading starts
        warm_up(opts.model, fast=size >= FAST_COUNT_BYTES)
    return _Setup(fmt, config, catalog, cls)


def plan(opts: RunOptions, progress: ProgressSink | None = None) -> Prepared:
    """Read, key, count and price a dataset, and plan its run: no network, nothing spent.

    The run is kept in the store as 'planned': ``run`` with the same options picks it up without reading again.
    """
    progress = progress or NullProgress()
    clock = Stopwatch()
    setup = _setup(opts)
    backend = setup.backend_cls(BackendConfig(base_url=opts.base_url or "http://plan.invalid"))
    with (
        open_source(opts.input_path, setup.fmt) as source,
        Store.open(opts.store, wait_seconds=opts.store_wait_s) as store,
    ):
        return _prepare(opts, setup, source, backend.name, backend.endpoint, store, progress, clock, planning=True)


def run(
    opts: RunOptions, progress: ProgressSink | None = None, on_plan: Callable[[Plan], None] | None = None
) -> RunSummary:
    """Run a dataset end to end. Raises ``CostinferError`` subclasses for user errors.

    ``on_plan`` sees the plan before anything is sent; when its expected cost does not fit the budget, the run stops
    there (``--on-over-budget fail``) or runs rows in priority, then input, order until the budget stops it.
    """
    progress = progress or NullProgress()
    clock = Stopwatch()
    setup = _setup(opts)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(opts.input_path, setup.fmt))
        base_url = opts.base_url
        server = setup.backend_cls.local_server(_simulator_settings(opts)) if base_url is None else None
        if server is not None:  # the provider serves itself (the simulator): its URL for this run
            base_url = stack.enter_context(server)
        backend = setup.backend_cls(
            BackendConfig(base_url=base_url, timeout_s=opts.timeout_s, concurrency=opts.concurrency)
        )
        backend.api_key()  # a missing key fails now, naming its variable
        store = stack.enter_context(Store.open(opts.store, wait_seconds=opts.store_wait_s))
        prepared = _prepare(opts, setup, source, backend.name, backend.endpoint, store, progress, clock, planning=False)
        if on_plan is not None:
            on_plan(prepared.plan)
        _check_budget(opts, prepared, store)
        backend.use_models(prepared.prices)
        return _execute_run(opts, backend, store, prepared, progress)


def _prepare(
    opts: RunOptions,
    setup: _Setup,
    source: Source,
    provider: str,
    endpoint: str,
    store: Store,
    progress: ProgressSink,
    clock: Stopwatch,
    *,
    planning: bool,
) -> Prepared:
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
                "input_path": _dataset_name(source),
                "input_format": setup.fmt,
                "provider": provider,
                "endpoint": endpoint,
                "model": opts.model,
                "budget_usd": opts.budget_usd,
                "options": orjson.dumps(_options_record(opts)).decode(),
            },
        )
    store.set_run(run_id, status="planned" if planning or not resumed else "running", stop_reason=None)
    spec = RowSpec(
        model=opts.model,
        max_tokens=opts.max_tokens,
        prompt_field=opts.prompt_field,
        id_field=opts.id_field,
        template=opts.template,
        system=opts.system,
        text_cells=(setup.fmt == "csv"),
        strict_fields=opts.strict_fields,
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
        reuse = _resolve_reuse(opts, store, run_id, progress, ingest.semantic_opt_out)
        record = {**_options_record(opts), "reuse": asdict(reuse), "notes": ingest.notes()}
        store.set_run(run_id, options=orjson.dumps(record).decode())
    else:
        row = store.run(run_id) or {}
        counts = {"rows": int(row["rows"]), "rejects": int(row["rejects"]), "distinct": int(row["distinct_keys"])}
    clock.mark("index")
    input_path = source.label
    notes = ingest.notes() if fresh else _stored_notes(store, run_id)
    reuse_note = _reuse_note(store, run_id)
    if reuse_note:
        notes.append(reuse_note)
    warning = setup.catalog.age_warning(setup.config.max_age_days)
    if warning:
        notes.append(warning)
    rejects_file: str | None = None
    rejects_path = opts.rejects_path()
    if not counts["rejects"]:
        _remove_stale(rejects_path)  # a rejects file beside these results would speak of another run
    else:
        _write_or_explain(rejects_path, lambda: store.write_rejects(run_id, rejects_path, input_path), False)
        rejects_file = str(rejects_path)
        if opts.on_bad_row == "fail" and not planning:
            first = store.first_rejects(run_id, 1)[0]
            store.set_run(run_id, status="rejected", finished_at=_now(), stop_reason="bad_input")
            _remove_stale(opts.output_path())  # no results for this run: an earlier run's must not pass for them
            more = counts["rejects"] - 1
            tail = f" (and {more} more bad row{'s' if more != 1 else ''})" if more else ""
            raise InputError(
                f"{input_path}:{row_kind(setup.fmt)} {first['line']}: field '{first['field']}': {first['reason']}"
                f"{tail}; nothing was sent. All bad rows are in {rejects_path}; fix them or pass --on-bad-row skip"
            )
        notes.append(f"{counts['rejects']} bad rows {'found' if planning else 'skipped'}; see {rejects_file}")
    # a fresh ingestion priced every model its rows name; a resumed run's models are read back from the store
    prices = dict(ingest.prices) if fresh else _prices_for_run(store, run_id, setup.catalog, provider)
    if opts.fallback_model:
        prices[opts.fallback_model] = setup.catalog.lookup(opts.fallback_model, provider)
    the_plan = compute_plan(store, run_id, prices, opts.budget_usd, _dataset_name(source), notes)
    computed = reuse.embeddings_computed if fresh else 0
    clock.mark("plan")
    return Prepared(run_id, resumed, counts, prices, rejects_file, notes, the_plan, computed, clock)


def _resolve_reuse(
    opts: RunOptions, store: Store, run_id: str, progress: ProgressSink, opt_out: set[str]
) -> DedupeStats:
    embedder = None
    note = None
    if not opts.semantic:
        note = "semantic tier off (--no-semantic or COSTINFER_SEMANTIC=0)"
    elif (why := missing_dependency()) is not None:
        note = f"semantic tier off: {why}"
    else:
        embedder = Embedder(store, opts.embedding_model)
        progress.note(f"semantic tier: embedding with {embedder.model_name}")
    stats = dedupe_resolve(store, run_id, embedder, opts.semantic_threshold, opt_out)
    stats.semantic_note = note
    return stats


def _stored_notes(store: Store, run_id: str) -> list[str]:
    """The notes ingestion made (unknown fields, estimated counts) when the rows were read by an earlier command."""
    row = store.run(run_id) or {}
    return list(orjson.loads(row.get("options") or "{}").get("notes") or [])


def _dataset_name(source: Source) -> str:
    return str(source.identity.get("path") or source.label)


def _remove_stale(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_file():
            path.unlink()


def _write_or_explain(path: Path, write: Callable[[], object], paid: bool, store: Store | None = None) -> None:
    """Write an output file; a failure (a full disk) is one line that says what is kept and how to get the file."""
    try:
        write()
    except (OSError, duckdb.Error) as exc:
        reason = _io_reason(exc)
        saved = (
            f"; every answer is saved in the store {store.path}: free space and rerun the same command to write the "
            f"results without paying again"
            if paid and store is not None
            else "; nothing was sent"
        )
        raise WriteError(f"cannot write {path}: {reason}{saved}") from exc


def _io_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    for known in ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied"):
        if known.lower() in text.lower():
            return known
    return text.splitlines()[0] if text else exc.__class__.__name__


def _reuse_note(store: Store, run_id: str) -> str | None:
    row = store.run(run_id) or {}
    reuse = orjson.loads(row.get("options") or "{}").get("reuse") or {}
    return reuse.get("semantic_note")


def _check_budget(opts: RunOptions, prepared: Prepared, store: Store) -> None:
    the_plan = prepared.plan
    if the_plan.fits or opts.on_over_budget == "partial":
        return
    store.set_run(prepared.run_id, status="planned")
    _remove_stale(opts.output_path())  # nothing ran: an earlier run's results must not pass for this one's
    raise BudgetError(
        f"the expected cost ${the_plan.expected_cost_usd:.4f} (worst case ${the_plan.worst_cost_usd:.4f}) is more "
        f"than the budget left (${the_plan.left_usd:.4f}); nothing was sent. Raise --budget, or pass "
        f"--on-over-budget partial to run rows in priority, then input, order until the budget stops them"
    )


def _execute_run(
    opts: RunOptions, backend: Backend, store: Store, prepared: Prepared, progress: ProgressSink
) -> RunSummary:
    clock = prepared.clock
    run_id = prepared.run_id
    store.set_run(run_id, status="running")
    guard = BudgetGuard(opts.budget_usd, prepared.plan.spent_usd)
    executor = Executor(
        store,
        run_id,
        backend,
        prepared.prices,
        guard,
        ExecConfig(
            concurrency=opts.concurrency,
            max_attempts=opts.max_attempts,
            rpm=opts.rpm,
            tpm=opts.tpm,
            fallback_model=opts.fallback_model,
        ),
        progress,
    )
    progress.phase("calling", prepared.plan.to_call)
    clock.mark("plan")
    failure: CostinferError | None = None
    try:
        if prepared.plan.to_call:
            anyio.run(_execute, executor, store.pending(run_id), backend_options=_loop_options())
        failure = _failure(executor, backend, store)
    finally:
        stop_reason = executor.stop_reason
        calls_elapsed = clock.mark("calls")
        if executor.store_error is None:  # a store that failed a commit is not read again: rerun to get the file
            not_run_reason = f"not_run: {stop_reason}" if stop_reason else "not_run"
            out = opts.output_path()
            fmt = "parquet" if out.suffix.lower() == ".parquet" else "jsonl"
            _write_or_explain(out, lambda: store.write_results(run_id, out, fmt, not_run_reason), True, store)
            status = "completed" if stop_reason is None else "stopped"
            store.set_run(run_id, status=status, finished_at=_now(), stop_reason=stop_reason)
        clock.mark("results")
    if failure is not None:
        raise failure
    summary = store.summary(run_id)
    notes = list(prepared.notes)
    if guard.overruns:
        notes.append(f"{guard.overruns} calls were billed more than their reserved worst case")
    if stop_reason == "interrupted":
        notes.append("stopped: rerun the same command to resume; answered rows will not be paid again")
    saved = _savings(store, run_id, prepared.prices)
    clock.mark("report")
    return RunSummary(
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
        notes=notes,
        plan=prepared.plan.as_dict(),
        timings=clock.rounded(),
    )


def _failure(executor: Executor, backend: Backend, store: Store) -> CostinferError | None:
    """What stopped the run early, as the one line the user sees (after the results so far are written)."""
    if executor.store_error is not None:
        return WriteError(
            f"cannot write to the store {store.path}: {_io_reason(executor.store_error)}; the "
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


def _savings(store: Store, run_id: str, prices: dict[str, ModelPrice]) -> dict[str, Decimal]:
    saved: dict[str, Decimal] = {}
    for source, model, _, input_tokens, output_tokens in store.reuse_by_source(run_id):
        price = prices.get(model)
        if price is not None:
            saved[source] = saved.get(source, Decimal(0)) + price.cost(input_tokens, output_tokens)
    return saved


def _loop_options() -> dict[str, Any]:
    """uvloop when it is installed: it cuts the event loop's share of each call (benchmarks/throughput.py)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _execute(executor: Executor, pages: Iterator[Any]) -> None:
    async with executor.backend, anyio.create_task_group() as tg:
        if _can_handle_signals():
            tg.start_soon(_watch_signals, executor, tg.cancel_scope)
        await executor.run(pages)
        tg.cancel_scope.cancel()


def _can_handle_signals() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


async def _watch_signals(executor: Executor, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if executor.stopping:
                scope.cancel()  # a second signal: stop waiting for calls in flight
                return
            executor.request_stop("interrupted")


def _prices_for_run(store: Store, run_id: str, catalog: Catalog, provider: str) -> dict[str, ModelPrice]:
    return {model: catalog.lookup(model, provider) for model in store.run_models(run_id)}


def _simulator_settings(opts: RunOptions) -> dict[str, Any]:
    """What a provider that serves itself (the simulator) is configured with, from the run's options."""
    return {
        "latency_ms": opts.simulator_latency_ms,
        "faults": opts.simulator_faults,
        "rpm": opts.simulator_rpm,
        "tpm": opts.simulator_tpm,
        "seed": opts.simulator_seed,
        "limit_mode": opts.simulator_limit_mode,
        "timeout_s": opts.timeout_s,
    }


def _options_record(opts: RunOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in vars(opts).items():
        out[name] = str(value) if isinstance(value, (Path, Decimal)) else value
    return out


def _now() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC)
