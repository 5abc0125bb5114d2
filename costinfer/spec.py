"""What a run is asked to do: one frozen ``RunSpec`` made of one small frozen spec per stage.

The CLI builds it once (``costinfer.pipeline.build.run_spec``, which library code calls too) and nothing changes it
afterwards: each stage receives its own spec, and what can be derived (the routing policy in force, whether a deadline
was given, the semantic audit's file) is a property, not a stored field. A spec checks its own values when it is made,
so an invalid one cannot exist; what depends on the machine (files, folders, Ray) is checked by
``costinfer.pipeline.preflight`` before anything is read or sent.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from costinfer.errors import ConfigError

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_MAX_TOKENS = 512
DEFAULT_CONCURRENCY = 16
LOAD_CEILING = 256  # vLLM's default running batch (max_num_seqs): the most a followed server gets by default
DEFAULT_THRESHOLD = 0.95  # calibrated on STS-B train+dev (docs/semantic.md); --semantic-threshold overrides it
DEFAULT_DEADLINE_H = 24.0  # a provider's batch window
MAX_BUDGET = Decimal(10) ** 12  # the store keeps dollars as DECIMAL(38,12)
POLICIES = ("cheapest", "cascade", "budget", "learned")
CHECKED = ("cascade", "learned")  # the policies that check answers and escalate what fails
MODES = ("online", "batch", "auto")
RESULT_FORMATS = ("openai-batch", "anthropic-batch")


def _finite(flag: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")


def _one_of(flag: str, value: str | None, allowed: tuple[str, ...], quote: bool = True) -> None:
    if value not in allowed:
        names = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
        shown = f"'{value}'" if quote else str(value)
        raise ConfigError(f"{flag} must be {names}, got {shown}")


@dataclass(frozen=True)
class InputSpec:
    """Reading and keying: the dataset, how its columns become requests, and the row defaults that shape a key."""

    path: Path
    format: str | None = None  # jsonl, csv, parquet, or a provider batch file (openai-batch, anthropic-batch)
    prompt_field: str = "prompt"
    id_field: str = "id"
    template: str | None = None
    system: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    on_bad_row: Literal["fail", "skip"] = "fail"
    strict_fields: bool = False  # a row field costinfer does not know is a bad row, not a warning
    tag_by: tuple[str, ...] = ()  # metadata keys whose values attribute a row's cost
    tags: tuple[tuple[str, str], ...] = ()  # the run's own tags, on every row

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        _one_of("--on-bad-row", self.on_bad_row, ("fail", "skip"), quote=False)
        if self.template is not None:
            check_template(self.template)

    @property
    def from_stdin(self) -> bool:
        return str(self.path) == "-"

    @property
    def label(self) -> str:
        """The dataset's name in metrics and reports: its file name (or stdin)."""
        return "stdin" if self.from_stdin else self.path.name


@dataclass(frozen=True)
class ReuseSpec:
    """The reuse tiers after the exact cache: normalized text always, semantic similarity when on."""

    semantic: bool = True
    threshold: float = DEFAULT_THRESHOLD
    embedding_model: str | None = None  # default: all-MiniLM-L6-v2, offline
    audit: int = 0  # sample this many semantic reuses into <results>.semantic-audit.jsonl for a person

    def __post_init__(self) -> None:
        _finite("--semantic-threshold", self.threshold)
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"--semantic-threshold must be in (0, 1], got {self.threshold}")
        if self.audit < 0:
            raise ConfigError(f"--semantic-audit must be zero or more reuses, got {self.audit}")


@dataclass(frozen=True)
class AcceptSpec:
    """A cascade's checks: an answer that fails one goes to the next candidate."""

    regex: str | None = None
    json_schema: Path | None = None
    nonempty: bool = False
    cmd: str | None = None  # reads {row, answer} as JSON on stdin; exit 0 accepts

    @property
    def any(self) -> bool:
        return self.nonempty or any(c is not None for c in (self.regex, self.json_schema, self.cmd))


@dataclass(frozen=True)
class RoutingSpec:
    """Which model answers: the model of rows that name none, or candidates to route among, and a fallback."""

    model: str = DEFAULT_MODEL
    models: tuple[str, ...] = ()  # routing candidates, cheapest first (rows without a model of their own)
    route: str | None = None  # cheapest, cascade, budget or learned; default: cascade with a check, else cheapest
    accept: AcceptSpec = field(default_factory=AcceptSpec)
    fallback_model: str | None = None  # sent instead while the provider keeps failing (circuit breaker open)

    def __post_init__(self) -> None:
        if self.route is not None and self.route not in POLICIES:
            raise ConfigError(f"--route must be one of {', '.join(POLICIES)}, got '{self.route}'")
        if not self.models:
            if self.route is not None or self.accept.any:
                raise ConfigError("--route and --accept-* need --models: the candidates, cheapest first")
            return
        if len(self.models) < 2:
            raise ConfigError(
                f"--models needs two models or more, cheapest first (e.g. gpt-4o-mini,gpt-4o), got "
                f"'{','.join(self.models)}'"
            )
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"--models names a model twice: {','.join(self.models)}")
        if not self.checks and self.accept.any:
            raise ConfigError(f"--accept-* checks answers in a cascade; --route {self.policy} sends no row twice")
        if self.fallback_model:
            raise ConfigError("--fallback-model and --models do not go together yet: list the fallback in --models")

    @property
    def routed(self) -> bool:
        return bool(self.models)

    @property
    def policy(self) -> str:
        """The routing policy in force: --route, else cascade when an --accept-* check is given, else cheapest."""
        if self.route:
            return self.route
        return "cascade" if self.accept.any else "cheapest"

    @property
    def checks(self) -> bool:  # answers of the cheaper candidates are checked, escalated when they fail
        return self.routed and self.policy in CHECKED

    @property
    def default_model(self) -> str:
        """The model of rows that name none: with --models, the cheapest candidate (routing moves them on)."""
        return self.models[0] if self.models else self.model

    @property
    def named_models(self) -> list[str]:
        """Every model the run may send to, each once."""
        fallback = [self.fallback_model] if self.fallback_model else []
        return list(dict.fromkeys([self.default_model, *self.models, *fallback]))


@dataclass(frozen=True)
class MoneySpec:
    """What a run may spend and how it is priced."""

    budget_usd: Decimal | None = None
    budget_pool: str | None = None  # a team's pool (costinfer budget), drawn on besides budget_usd
    on_over_budget: Literal["fail", "partial"] = "fail"
    compare_with: str | None = None  # a catalog model to price the same tokens at, beside a self-hosted run
    prices: Path | None = None  # a price catalog in LiteLLM's format
    config: Path | None = None  # costinfer.toml

    def __post_init__(self) -> None:
        if self.budget_usd is not None and self.budget_usd < 0:
            raise ConfigError(f"--budget must be zero or more dollars, got {self.budget_usd}")
        if self.budget_usd is not None and self.budget_usd > MAX_BUDGET:
            raise ConfigError(f"--budget must be at most {MAX_BUDGET:,} dollars, got {self.budget_usd}")
        _one_of("--on-over-budget", self.on_over_budget, ("fail", "partial"), quote=False)
        if self.budget_pool is not None:
            from costinfer.store.budget_pools import check_pool

            check_pool(self.budget_pool)


@dataclass(frozen=True)
class ExecutionSpec:
    """Calling a provider online: which servers, how many calls at once, how patiently."""

    provider: str | None = None  # None: the provider of the model; "simulate" rehearses
    base_url: str | None = None
    replicas: tuple[str, ...] = ()  # more servers of the same model (--base-url again)
    concurrency: int | None = None  # calls in flight (default 16); for a server that reports its load, the ceiling
    fixed_concurrency: bool = False  # keep --concurrency calls in flight even when the server reports its load
    timeout_s: float = 60.0
    max_attempts: int = 4
    rpm: float | None = None  # the provider's limits, to pace calls within
    tpm: float | None = None

    def __post_init__(self) -> None:
        for flag, number in (("--timeout", self.timeout_s), ("--rpm", self.rpm), ("--tpm", self.tpm)):
            _finite(flag, number)
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {self.concurrency}")
        for flag, value in (("--rpm", self.rpm), ("--tpm", self.tpm)):
            if value is not None and value <= 0:
                raise ConfigError(f"{flag} must be more than 0, got {value}")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout must be more than 0 seconds, got {self.timeout_s}")
        if self.max_attempts < 1:
            raise ConfigError(f"--max-attempts must be at least 1, got {self.max_attempts}")
        from costinfer.backends.urls import check_url

        for url in (self.base_url, *self.replicas):
            if url is not None:
                check_url(url)
        if len(set([self.base_url, *self.replicas])) != 1 + len(self.replicas):
            raise ConfigError("--base-url names the same server twice")

    def calls_in_flight(self, follows_load: bool) -> int:
        """The calls in flight (``--concurrency``), or, for a server whose load the executor follows, their ceiling."""
        if self.concurrency is not None:
            return self.concurrency
        return LOAD_CEILING if follows_load else DEFAULT_CONCURRENCY

    @property
    def urls(self) -> list[str | None]:
        return [self.base_url, *self.replicas]


@dataclass(frozen=True)
class BatchSpec:
    """The provider's batch API: whether to use it, how long the results may take, whether to wait for them."""

    mode: str = "online"  # online: one call per request; batch: the provider's batch API; auto: batch when possible
    deadline_h: float | None = None  # None: the 24 h batch window, and no batch is cancelled for its age
    wait: bool = True  # False: submit, stop as 'submitted', collect on a later run
    poll_s: float = 5.0  # the first wait between status checks (it doubles, up to 60 s)

    def __post_init__(self) -> None:
        for flag, number in (("--deadline", self.deadline_h), ("--batch-poll", self.poll_s)):
            _finite(flag, number)
        _one_of("--mode", self.mode, MODES)
        if self.deadline_h is not None and self.deadline_h <= 0:
            raise ConfigError(f"--deadline must be more than 0 hours, got {self.deadline_h:g}")

    @property
    def hours(self) -> float:
        return DEFAULT_DEADLINE_H if self.deadline_h is None else self.deadline_h

    @property
    def deadline_given(self) -> bool:
        """--deadline was given: a batch outliving it is cancelled and its requests go online."""
        return self.deadline_h is not None


@dataclass(frozen=True)
class OutputSpec:
    """What a run writes: its results, its bad rows, its report and metrics (paths resolved by the builder)."""

    results: Path
    rejects: Path
    format: str | None = None  # openai-batch or anthropic-batch: the results as that provider's batch output
    report: bool = True  # <results>.report.json and .report.html
    metrics_file: Path | None = None  # the run's figures in Prometheus's text format

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in RESULT_FORMATS:
            raise ConfigError(f"--output-format must be openai-batch or anthropic-batch, got '{self.format}'")
        if self.results.suffix.lower() not in (".jsonl", ".parquet"):
            raise ConfigError(f"--output {self.results}: the results file must end in .jsonl or .parquet")
        if self.format is not None and self.results.suffix.lower() != ".jsonl":
            raise ConfigError(
                f"--output-format {self.format} writes JSONL: name the results file .jsonl, not {self.results}"
            )

    @property
    def file_format(self) -> str:
        return self.format or ("parquet" if self.results.suffix.lower() == ".parquet" else "jsonl")

    def beside(self, suffix: str) -> Path:
        """A file named after the results: ``beside('report.json')`` is <results>.report.json."""
        return self.results.with_name(f"{self.results.stem}.{suffix}")

    @property
    def audit(self) -> Path:
        return self.beside("semantic-audit.jsonl")


@dataclass(frozen=True)
class RehearsalSpec:
    """The simulator's behaviour when the run rehearses (``--provider simulate``): latency, faults, limits."""

    latency_ms: float = 0.0
    faults: str | None = None  # e.g. "429=0.05,5xx=0.1"
    rpm: int | None = None
    tpm: int | None = None
    seed: int | None = None
    limit_mode: str = "window"  # how the limits are enforced: window, bucket or second
    bad_answers: str | None = None  # e.g. "gpt-4o-mini=0.3": the share of a model's answers that are bad

    def __post_init__(self) -> None:
        _finite("--sim-latency-ms", self.latency_ms)

    def settings(self, timeout_s: float) -> dict[str, Any]:
        """What a provider that serves itself (the simulator) is configured with."""
        return {
            "latency_ms": self.latency_ms,
            "faults": self.faults,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "seed": self.seed,
            "limit_mode": self.limit_mode,
            "bad_answers": self.bad_answers,
            "timeout_s": timeout_s,
        }


@dataclass(frozen=True)
class RaySpec:
    """Work on a Ray cluster: the semantic tier's embeddings, and self-hosted servers started for the run."""

    engine: str = "local"  # where texts are embedded: here, or on Ray ("ray"); the vectors are the same
    address: str | None = None  # the cluster to join ("auto", "ray://host:10001"); None: a local Ray
    serve: str | None = None  # a command starting a self-hosted server on {port}: one per actor
    servers: int | None = None  # how many --ray-serve servers (default: one per GPU of the cluster, or one)

    def __post_init__(self) -> None:
        _one_of("--engine", self.engine, ("local", "ray"))
        if self.serve is not None:
            if self.engine != "ray":
                raise ConfigError("--ray-serve starts servers on Ray: it needs --engine ray")
            if "{port}" not in self.serve:
                raise ConfigError("--ray-serve: the command must say where to listen with {port}")
            if self.servers is not None and self.servers < 1:
                raise ConfigError(f"--ray-servers must be at least 1, got {self.servers}")


@dataclass(frozen=True)
class StoreSpec:
    path: Path | str | None = None  # None: $COSTINFER_STORE, else the default store; a str: a postgresql:// URL
    wait_s: float = 0.0  # seconds to wait for another process to release it

    def __post_init__(self) -> None:
        _finite("--store-wait", self.wait_s)


@dataclass(frozen=True)
class RunSpec:
    """One run, stage by stage."""

    input: InputSpec
    output: OutputSpec
    reuse: ReuseSpec = field(default_factory=ReuseSpec)
    routing: RoutingSpec = field(default_factory=RoutingSpec)
    money: MoneySpec = field(default_factory=MoneySpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    batch: BatchSpec = field(default_factory=BatchSpec)
    rehearsal: RehearsalSpec = field(default_factory=RehearsalSpec)
    ray: RaySpec = field(default_factory=RaySpec)
    store: StoreSpec = field(default_factory=StoreSpec)

    def __post_init__(self) -> None:
        """What only two stages together can tell."""
        if self.routing.policy == "budget" and self.money.budget_usd is None:
            raise ConfigError("--route budget needs --budget: it upgrades rows while the worst case fits the budget")
        if self.routing.checks and self.batch.mode == "batch":
            raise ConfigError(f"--route {self.routing.policy} needs answers before it can escalate: use --mode online")
        if self.ray.serve is not None and self.execution.base_url is not None:
            raise ConfigError("--ray-serve starts the servers itself: leave --base-url out")

    @property
    def tagged(self) -> bool:
        return bool(self.input.tag_by or self.input.tags)


_COLUMN = re.compile(r"[^\W\d]\w*(?:[ -]\w+)*")  # a column's name: a word, maybe with spaces or dashes


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
    for name in names:  # a column's value, nothing else: {prompt.upper} would send a method's address, paid
        if name and not _COLUMN.fullmatch(name):
            raise ConfigError(
                f"--template '{template}': {{{name}}} is not a column name; a template names columns only "
                f"(no attribute, index or positional field), e.g. {{text}}"
            )
