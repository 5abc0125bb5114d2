"""A run's options, defined once: the dataclass, its validation (every option checked before anything is read or
sent), and the fingerprint that makes the same command the same run."""

from __future__ import annotations

import hashlib
import math
import os
import re
import string
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import orjson

from costinfer.backends.urls import check_url
from costinfer.errors import (
    ConfigError,
)
from costinfer.reading.source import Source, check_file, is_stdin
from costinfer.reuse.tiers import DEFAULT_THRESHOLD
from costinfer.store import default_store_path

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_MAX_TOKENS = 512
DEFAULT_CONCURRENCY = 16
LOAD_CEILING = 256  # vLLM's default running batch (max_num_seqs): the most a followed server gets by default
# The largest budget accepted: the store keeps dollars as DECIMAL(38,12)
MAX_BUDGET = Decimal(10) ** 12


@dataclass
class RunOptions:
    input_path: Path
    provider: str | None = None  # None: the provider of the model (``provider_choice``); "simulate" rehearses
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    replicas: list[str] = field(default_factory=list)  # more servers of the same model (--base-url again)
    budget_usd: Decimal | None = None
    output: Path | None = None
    rejects: Path | None = None
    store: Path | None = None
    store_wait_s: float = 0.0
    concurrency: int | None = None  # calls in flight (default 16); for a server that reports its load, the ceiling
    fixed_concurrency: bool = False  # keep --concurrency calls in flight even when the server reports its load
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
    simulator_bad_answers: str | None = None  # e.g. "gpt-4o-mini=0.3": the share of a model's answers that are bad
    rpm: float | None = None  # the provider's limits, to pace calls within
    tpm: float | None = None
    fallback_model: str | None = None  # sent instead while the provider keeps failing (circuit breaker open)
    semantic: bool = field(default_factory=lambda: os.environ.get("COSTINFER_SEMANTIC", "1") != "0")
    semantic_threshold: float = DEFAULT_THRESHOLD
    embedding_model: str | None = None
    engine: str = "local"  # where texts are embedded: here, or on a Ray cluster ("ray"); results are the same
    ray_address: str | None = None  # the Ray cluster to join ("auto", "ray://host:10001"); None: a local Ray
    ray_serve: str | None = None  # a command starting a self-hosted server on {port}: run on Ray, one per actor
    ray_servers: int | None = None  # how many --ray-serve servers (default: one per GPU of the cluster, or one)
    semantic_audit: int = 0  # sample this many semantic reuses into <results>.semantic-audit.jsonl for a person
    strict_fields: bool = False  # a row with a field costinfer does not know is a bad row, not a warning
    report: bool = True  # write <results>.report.json and .report.html
    mode: str = "online"  # online: one call per request; batch: the provider's batch API; auto: batch when possible
    deadline_h: float = 24.0  # auto: hours the results may take (a provider's batch window is 24 h)
    deadline_given: bool = False  # --deadline was given: a batch outliving it is cancelled and its requests go online
    online_fallback: bool = False  # auto chose batch: requests that failed in every batch round go online
    output_format: str | None = None  # openai-batch or anthropic-batch: the results as that provider's batch output
    wait: bool = True  # batch: wait for the batches (False: submit, stop as 'submitted', collect on a later run)
    batch_poll_s: float = 5.0  # batch: the first wait between status checks (it doubles, up to 60 s)
    tag_by: list[str] = field(default_factory=list)  # metadata keys whose values attribute a row's cost
    tags: dict[str, str] = field(default_factory=dict)  # the run's own tags, on every row
    metrics_file: Path | None = None  # the run's figures in Prometheus's text format, for the textfile collector
    compare_with: str | None = None  # a provider model to price the same tokens at, beside a self-hosted run
    models: list[str] = field(default_factory=list)  # routing candidates, cheapest first (rows without a model)
    route: str | None = None  # cheapest, cascade or budget (default with --models: cascade when a check is given)
    accept_regex: str | None = None  # cascade: an answer must contain a match
    accept_json_schema: Path | None = None  # cascade: an answer must be JSON valid against this schema
    accept_nonempty: bool = False  # cascade: an answer must not be empty
    accept_cmd: str | None = None  # cascade: a command reads {row, answer} as JSON on stdin; exit 0 accepts

    def calls_in_flight(self, follows_load: bool) -> int:
        """The calls in flight (``--concurrency``), or, for a server whose load the executor follows, their ceiling."""
        if self.concurrency is not None:
            return self.concurrency
        return LOAD_CEILING if follows_load else DEFAULT_CONCURRENCY

    @property
    def routing(self) -> bool:
        return bool(self.models)

    @property
    def route_policy(self) -> str:
        """The routing policy in force: --route, else cascade when an --accept-* check is given, else cheapest."""
        if self.route:
            return self.route
        checks = (self.accept_regex, self.accept_json_schema, self.accept_cmd)
        return "cascade" if any(c is not None for c in checks) or self.accept_nonempty else "cheapest"

    def output_path(self) -> Path:
        if self.output is not None:
            return self.output
        stem = "stdin" if is_stdin(self.input_path) else Source(self.input_path, "", {}).stem
        return Path.cwd() / f"{stem}.results.jsonl"

    def audit_path(self) -> Path:
        out = self.output_path()
        return out.with_name(f"{out.stem}.semantic-audit.jsonl")

    def rejects_path(self) -> Path:
        if self.rejects is not None:
            return self.rejects
        out = self.output_path()
        return out.with_name(f"{out.stem}.rejects.jsonl")


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
    if opts.tag_by or opts.tags:
        parts["tags"] = [opts.tag_by, opts.tags]
    if opts.models:  # routing changes what is sent: its options are part of the run
        parts["routing"] = [opts.models, opts.route_policy, opts.accept_regex, str(opts.accept_json_schema or ""),
                            opts.accept_nonempty, opts.accept_cmd]  # fmt: skip
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def validate(opts: RunOptions) -> None:
    """Every option checked before anything is read or sent: one line naming the option and the fix."""
    for flag, number in (
        ("--timeout", opts.timeout_s), ("--rpm", opts.rpm), ("--tpm", opts.tpm), ("--deadline", opts.deadline_h),
        ("--semantic-threshold", opts.semantic_threshold), ("--store-wait", opts.store_wait_s),
        ("--batch-poll", opts.batch_poll_s), ("--sim-latency-ms", opts.simulator_latency_ms),
    ):  # fmt: skip
        if number is not None and not math.isfinite(number):
            raise ConfigError(f"{flag} must be a finite number, got {number}")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {opts.concurrency}")
    if opts.budget_usd is not None and opts.budget_usd < 0:
        raise ConfigError(f"--budget must be zero or more dollars, got {opts.budget_usd}")
    if opts.budget_usd is not None and opts.budget_usd > MAX_BUDGET:
        raise ConfigError(f"--budget must be at most {MAX_BUDGET:,} dollars, got {opts.budget_usd}")
    if opts.max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1, got {opts.max_tokens}")
    for name, value in (("--rpm", opts.rpm), ("--tpm", opts.tpm)):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be more than 0, got {value}")
    if opts.on_over_budget not in ("fail", "partial"):
        raise ConfigError(f"--on-over-budget must be fail or partial, got {opts.on_over_budget}")
    if opts.output_format not in (None, "openai-batch", "anthropic-batch"):
        raise ConfigError(f"--output-format must be openai-batch or anthropic-batch, got '{opts.output_format}'")
    if opts.mode not in ("online", "batch", "auto"):
        raise ConfigError(f"--mode must be online, batch or auto, got '{opts.mode}'")
    if opts.deadline_h <= 0:
        raise ConfigError(f"--deadline must be more than 0 hours, got {opts.deadline_h:g}")
    if opts.on_bad_row not in ("fail", "skip"):
        raise ConfigError(f"--on-bad-row must be fail or skip, got {opts.on_bad_row}")
    if not 0 < opts.semantic_threshold <= 1:
        raise ConfigError(f"--semantic-threshold must be in (0, 1], got {opts.semantic_threshold}")
    if opts.timeout_s <= 0:
        raise ConfigError(f"--timeout must be more than 0 seconds, got {opts.timeout_s}")
    if opts.engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray, got '{opts.engine}'")
    if opts.engine == "ray" and opts.semantic:
        from costinfer.engines.ray_embed import missing_ray

        if (why := missing_ray(opts.ray_address)) is not None:
            raise ConfigError(why)
    if opts.ray_serve is not None:
        if opts.engine != "ray":
            raise ConfigError("--ray-serve starts servers on Ray: it needs --engine ray")
        if opts.base_url is not None:
            raise ConfigError("--ray-serve starts the servers itself: leave --base-url out")
        if opts.provider not in ("vllm", "openai"):
            raise ConfigError("--ray-serve starts OpenAI-compatible servers: pass --provider vllm (or openai)")
        if "{port}" not in opts.ray_serve:
            raise ConfigError("--ray-serve: the command must say where to listen with {port}")
        if opts.ray_servers is not None and opts.ray_servers < 1:
            raise ConfigError(f"--ray-servers must be at least 1, got {opts.ray_servers}")
        from costinfer.engines.ray_embed import missing_ray

        if (why := missing_ray(opts.ray_address)) is not None:
            raise ConfigError(why)
    if opts.semantic_audit < 0:
        raise ConfigError(f"--semantic-audit must be zero or more reuses, got {opts.semantic_audit}")
    if opts.max_attempts < 1:
        raise ConfigError(f"--max-attempts must be at least 1, got {opts.max_attempts}")
    if opts.base_url is not None:
        check_url(opts.base_url)
    for url in opts.replicas:
        check_url(url)
    if len(set([opts.base_url, *opts.replicas])) != 1 + len(opts.replicas):
        raise ConfigError("--base-url names the same server twice")
    _check_routing(opts)
    if opts.template is not None:
        check_template(opts.template)
    check_file(opts.input_path)
    out = opts.output_path()
    if out.suffix.lower() not in (".jsonl", ".parquet"):
        raise ConfigError(f"--output {out}: the results file must end in .jsonl or .parquet")
    if opts.output_format is not None and out.suffix.lower() != ".jsonl":
        raise ConfigError(f"--output-format {opts.output_format} writes JSONL: name the results file .jsonl, not {out}")
    for flag, path in (("--output", out), ("--rejects", opts.rejects_path()), *_metrics(opts)):
        folder = path.parent
        if not folder.is_dir():
            raise ConfigError(f"{flag} {path}: the folder {folder} does not exist; nothing was sent")
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"{flag} {path}: the folder {folder} is not writable; nothing was sent")
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a folder; name a file")
    _check_distinct(opts)


def _check_routing(opts: RunOptions) -> None:
    from costinfer.routing.assign import POLICIES

    if opts.route is not None and opts.route not in POLICIES:
        raise ConfigError(f"--route must be one of {', '.join(POLICIES)}, got '{opts.route}'")
    checks = opts.accept_regex, opts.accept_json_schema, opts.accept_cmd
    if not opts.models:
        if opts.route is not None or any(c is not None for c in checks) or opts.accept_nonempty:
            raise ConfigError("--route and --accept-* need --models: the candidates, cheapest first")
        return
    if len(opts.models) < 2:
        raise ConfigError(f"--models needs two models or more, cheapest first (e.g. gpt-4o-mini,gpt-4o), got "
                          f"'{','.join(opts.models)}'")  # fmt: skip
    if len(set(opts.models)) != len(opts.models):
        raise ConfigError(f"--models names a model twice: {','.join(opts.models)}")
    if opts.route_policy != "cascade" and (any(c is not None for c in checks) or opts.accept_nonempty):
        raise ConfigError(f"--accept-* checks answers in a cascade; --route {opts.route_policy} sends no row twice")
    if opts.route_policy == "budget" and opts.budget_usd is None:
        raise ConfigError("--route budget needs --budget: it upgrades rows while the worst case fits the budget")
    if opts.fallback_model:
        raise ConfigError("--fallback-model and --models do not go together yet: list the fallback in --models")
    if opts.mode == "batch" and opts.route_policy == "cascade":
        raise ConfigError("--route cascade needs answers before it can escalate: use --mode online")


def _metrics(opts: RunOptions) -> list[tuple[str, Path]]:
    return [("--metrics-file", opts.metrics_file)] if opts.metrics_file is not None else []


def written_paths(opts: RunOptions) -> list[tuple[str, Path]]:
    """Every file a run writes, with the option that names it: results, rejects, the report (JSON and HTML, beside
    the results), the metrics file, the semantic audit."""
    out = opts.output_path()
    named = [("--output", out), ("--rejects", opts.rejects_path())]
    if opts.report:
        named += [
            ("the report (beside --output)", out.with_name(f"{out.stem}.report.json")),
            ("the HTML report (beside --output)", out.with_name(f"{out.stem}.report.html")),
        ]
    named += _metrics(opts)
    if opts.semantic_audit:
        named.append(("--semantic-audit's file (beside --output)", opts.audit_path()))
    return named


def _check_distinct(opts: RunOptions) -> None:
    """The input, the store and every file a run writes are different files: writing one must never destroy another
    (``-o data.jsonl`` once overwrote the dataset with its results; ``--metrics-file`` the dataset or the store; a
    dataset named ``x.report.json`` its own report). Symbolic links and relative paths are resolved."""
    named = written_paths(opts)
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


def simulator_settings(opts: RunOptions) -> dict[str, Any]:
    """What a provider that serves itself (the simulator) is configured with, from the run's options."""
    return {
        "latency_ms": opts.simulator_latency_ms,
        "faults": opts.simulator_faults,
        "rpm": opts.simulator_rpm,
        "tpm": opts.simulator_tpm,
        "seed": opts.simulator_seed,
        "limit_mode": opts.simulator_limit_mode,
        "bad_answers": opts.simulator_bad_answers,
        "timeout_s": opts.timeout_s,
    }


def options_record(opts: RunOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in vars(opts).items():
        out[name] = str(value) if isinstance(value, (Path, Decimal)) else value
    return out


def dataset_label(opts: RunOptions) -> str:
    """The dataset's name in metrics and reports: its file name (or stdin)."""
    return "stdin" if is_stdin(opts.input_path) else opts.input_path.name
