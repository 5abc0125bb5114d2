"""The parameters of ``run`` and ``plan``, defined once, grouped into ``--help`` panels by the stage they steer.

Each parameter is named as ``costinfer.pipeline.build.run_spec`` takes it, so a command passes what Typer parsed
straight to the builder. ``with_params`` gives a command the signature Typer reads; ``plan`` takes every parameter
but those that only matter once calls are made (``RUN_ONLY``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from costinfer.spec import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, DEFAULT_THRESHOLD

INPUT = "Input: the dataset and how rows become requests"
ROUTING = "Models and routing"
REUSE = "Reuse: what is not paid twice"
MONEY = "Money: budget and prices"
CALLING = "Calling: provider, servers, limits"
BATCH = "Provider batch API"
OUTPUT = "Output"
REHEARSAL = "Rehearsal (--provider simulate)"
RAY = "Ray"
STORE = "Store"


def _opt(default: Any, *decls: str, panel: str, **kw: Any) -> Any:
    return typer.Option(default, *decls, rich_help_panel=panel, **kw)


PATH = typer.Argument(
    ...,
    help="The dataset: .jsonl, .csv or .parquet (.jsonl.gz and .jsonl.zst too), or - for JSONL on stdin.",
    show_default=False,
    metavar="PATH",
)
# (name, type, Typer's option): the order is the order in --help, panel by panel
PARAMS: list[tuple[str, Any, Any]] = [
    ("input_path", Path, PATH),
    # input
    ("input_format", Optional[str], _opt(None, "--format", panel=INPUT,
        help="jsonl, csv, parquet, or a provider batch file (openai-batch, anthropic-batch); default: by extension, "
        "and a JSONL file whose first line is a batch request is read as one.")),
    ("prompt_field", str, _opt("prompt", panel=INPUT, help="The column that holds the prompt text.")),
    ("id_field", str, _opt("id", panel=INPUT, help="The column that holds the row id; without one, the row position.")),
    ("template", Optional[str], _opt(None, panel=INPUT,
        help='Build the prompt from columns, e.g. "Classify: {text}".')),
    ("system", Optional[str], _opt(None, panel=INPUT, help="A system prompt for rows that do not carry one.")),
    ("max_tokens", int, _opt(DEFAULT_MAX_TOKENS, panel=INPUT,
        help="The output cap for rows that do not set max_tokens; the budget reserves it.")),
    ("on_bad_row", str, _opt("fail", panel=INPUT,
        help="fail: stop before any call if a row is bad (the safe default in CI); skip: run the rest.")),
    ("strict_fields", bool, _opt(False, "--strict-fields", panel=INPUT,
        help="A row field costinfer does not know (a typo such as max_token) makes the row bad, instead of a "
        "warning.")),
    ("tag_by", Optional[str], _opt(None, panel=INPUT,
        help="Metadata keys whose values attribute each row's cost, e.g. team,project (see `analyze --by tag`).")),
    ("tags", list[str], _opt([], "--tag", metavar="<key=value>", panel=INPUT,
        help="A tag for every row of the run, KEY=VALUE; may be given more than once.")),
    # models and routing
    ("model", str, _opt(DEFAULT_MODEL, panel=ROUTING, help="The model for rows that do not name one.")),
    ("models", Optional[str], _opt(None, panel=ROUTING,
        help="Route rows that name no model among these candidates, cheapest first, e.g. gpt-4o-mini,gpt-4o "
        "(a row's own model always wins).")),
    ("route", Optional[str], _opt(None, panel=ROUTING,
        help="cheapest: each row to the cheapest candidate that takes it; cascade: escalate rows whose answer fails "
        "the --accept-* checks (and cut or refused answers); budget: upgrade rows by priority while the worst case "
        "fits --budget; learned: a cascade that sends the rows its history predicts the cheap model will fail straight "
        "to the next candidate (see `costinfer route evaluate`). Default: cascade with a check, else cheapest.")),
    ("accept_regex", Optional[str], _opt(None, panel=ROUTING,
        help="Cascade: an answer must contain a match of this regular expression.")),
    ("accept_json_schema", Optional[Path], _opt(None, panel=ROUTING,
        help="Cascade: an answer must be JSON valid against this JSON Schema file.")),
    ("accept_nonempty", bool, _opt(False, "--accept-nonempty", panel=ROUTING,
        help="Cascade: an empty answer is escalated.")),
    ("accept_cmd", Optional[str], _opt(None, panel=ROUTING,
        help="Cascade: a command that reads {id, request, answer, model, finish_reason, metadata} as JSON on stdin; "
        "exit 0 accepts the answer, exit 1 escalates it; a crash or any other exit stops the run before it "
        "escalates.")),
    ("fallback_model", Optional[str], _opt(None, panel=ROUTING,
        help="A model to send to while the provider keeps failing (the circuit breaker is open).")),
    # reuse
    ("semantic", Optional[bool], _opt(None, "--semantic/--no-semantic", panel=REUSE,
        help="Reuse answers of near-duplicate requests (default: on, or $COSTINFER_SEMANTIC=0 for off).")),
    ("semantic_threshold", float, _opt(DEFAULT_THRESHOLD, panel=REUSE,
        help="Cosine similarity from which a near-duplicate may share an answer (guards apply).")),
    ("embedding_model", Optional[str], _opt(None, panel=REUSE,
        help="A sentence-transformers model name or path (default: all-MiniLM-L6-v2, offline).")),
    ("semantic_audit", int, _opt(0, panel=REUSE,
        help="Sample this many of the run's semantic reuses into <results>.semantic-audit.jsonl for a person to "
        "label (1 same question, 0 not); `costinfer cache calibrate FILE` then gives the precision per threshold.")),
    # money
    ("budget", Optional[str], _opt(None, "--budget", panel=MONEY,
        help="Dollars the run may spend at most; calls stop before passing it.")),
    ("budget_pool", Optional[str], _opt(None, "--budget-pool", panel=MONEY,
        help="Draw on this team budget pool too (`costinfer budget set NAME --usd N`): each call's worst case is held "
        "in the pool, shared by every run naming it, and the pool is never passed.")),
    ("on_over_budget", str, _opt("fail", panel=MONEY,
        help="When the plan's expected cost does not fit: fail (send nothing) or partial (run what fits).")),
    ("compare_with", Optional[str], _opt(None, panel=MONEY,
        help="Price the same tokens at this catalog model too (e.g. gpt-4o-mini), beside a self-hosted run's cost.")),
    ("prices", Optional[Path], _opt(None, panel=MONEY, help="A price catalog in LiteLLM's JSON format.")),
    ("config", Optional[Path], _opt(None, panel=MONEY,
        help="costinfer.toml. Default: $COSTINFER_CONFIG or ./costinfer.toml")),
    # calling
    ("provider", Optional[str], _opt(None, panel=CALLING, show_default=False,
        help="openai, anthropic, vllm, simulate (a rehearsal: the built-in server, nothing paid), or a plugin. "
        "Default: the model's provider (gpt-*, o-series: openai; claude-*: anthropic; else the price catalog's).")),
    ("base_url", Optional[list[str]], _opt(None, metavar="<url>", panel=CALLING,
        help="The server's base URL, e.g. http://127.0.0.1:8000/v1. Give it again for more servers of the same "
        "model (replicas): calls go to the least busy one, and a server that dies leaves its calls to the others.")),
    ("concurrency", Optional[int], _opt(None, "--concurrency", "-c", panel=CALLING,
        help="Calls in flight at once (default 16). With --provider vllm the calls in flight follow the server's "
        "queue (/metrics) and this is their ceiling (default 256).")),
    ("fixed_concurrency", bool, _opt(False, "--fixed-concurrency", panel=CALLING,
        help="Keep --concurrency calls in flight even on a server that reports its load.")),
    ("timeout_s", float, _opt(60.0, "--timeout", panel=CALLING, help="Seconds to wait for one answer.")),
    ("max_attempts", int, _opt(4, panel=CALLING,
        help="Attempts per request for errors that may pass (429, 5xx, timeouts).")),
    ("rpm", Optional[float], _opt(None, panel=CALLING,
        help="The provider's requests-per-minute limit: calls are paced under it.")),
    ("tpm", Optional[float], _opt(None, panel=CALLING,
        help="The provider's tokens-per-minute limit (prompt + max_tokens).")),
    # batch
    ("mode", str, _opt("online", panel=BATCH,
        help="online: one call per request; batch: the provider's batch API at batch prices (openai, anthropic, "
        "simulate); auto: batch when the provider has one and --deadline allows its 24h window (the plan says "
        "which auto chooses and why).")),
    ("deadline_h", Optional[float], _opt(None, "--deadline", panel=BATCH,
        help="Hours the results may take (default 24): auto takes a batch only when it allows the 24h window, and a "
        "batch older than this is cancelled and its requests sent online.")),
    ("wait", bool, _opt(True, "--wait/--no-wait", panel=BATCH,
        help="Batch mode: wait for the batches, or submit, stop and collect on a later run.")),
    ("batch_poll_s", float, _opt(5.0, "--batch-poll", panel=BATCH,
        help="Batch mode: seconds before the first status check.")),
    # output
    ("output", Optional[Path], _opt(None, "--output", "-o", panel=OUTPUT,
        help="Results file (.jsonl or .parquet). Default: ./<input name>.results.jsonl")),
    ("rejects", Optional[Path], _opt(None, panel=OUTPUT,
        help="Where bad rows go. Default: beside the results, .rejects.jsonl")),
    ("output_format", Optional[str], _opt(None, panel=OUTPUT,
        help="openai-batch or anthropic-batch: write the results as that provider's batch output file.")),
    ("report", bool, _opt(True, "--report/--no-report", panel=OUTPUT,
        help="Write <results>.report.json and a self-contained <results>.report.html.")),
    ("metrics_file", Optional[Path], _opt(None, panel=OUTPUT,
        help="Write the run's figures in Prometheus's text format here (for the node exporter's textfile "
        "collector).")),
    ("json_out", bool, _opt(False, "--json", panel=OUTPUT, help="Print the result as one JSON object on stdout.")),
    ("quiet", bool, _opt(False, "--quiet", "-q", panel=OUTPUT,
        help="No progress output and no summary table (errors and notes still go to stderr).")),
    # rehearsal
    ("simulator_latency_ms", float, _opt(0.0, "--sim-latency-ms", panel=REHEARSAL,
        help="The simulated answer latency.")),
    ("simulator_faults", Optional[str], _opt(None, "--sim-faults", panel=REHEARSAL,
        help='Faults to rehearse, e.g. "429=0.05,5xx=0.1,timeout=0.02,malformed=0.01".')),
    ("simulator_rpm", Optional[int], _opt(None, "--sim-rpm", panel=REHEARSAL,
        help="A requests-per-minute limit to enforce.")),
    ("simulator_tpm", Optional[int], _opt(None, "--sim-tpm", panel=REHEARSAL,
        help="A tokens-per-minute limit to enforce.")),
    ("simulator_seed", Optional[int], _opt(None, "--sim-seed", panel=REHEARSAL,
        help="The seed of the injected faults.")),
    ("simulator_bad_answers", Optional[str], _opt(None, "--sim-bad-answers", panel=REHEARSAL,
        help='The share of a model\'s answers that are bad (refusals), e.g. "gpt-4o-mini=0.3", seeded by '
        "--sim-seed: a rehearsal of --route cascade.")),
    ("simulator_limit_mode", str, _opt("window", "--sim-limit-mode", panel=REHEARSAL,
        help="How --sim-rpm/--sim-tpm are enforced: window, bucket or second.")),
    # ray
    ("engine", str, _opt("local", panel=RAY,
        help="Where the semantic tier embeds texts: local (this machine, its GPU if any) or ray (a Ray cluster).")),
    ("ray_address", Optional[str], _opt(None, panel=RAY,
        help="With --engine ray: the cluster to join (auto, or ray://HOST:10001). Default: start a local Ray.")),
    ("ray_serve", Optional[str], _opt(None, panel=RAY,
        help="With --engine ray and --provider vllm (or openai): a command that starts a server on {port}, run on "
        "Ray (each holding its model's [self_hosted] gpus), e.g. 'vllm serve MODEL --port {port}'. The run calls "
        "them as replicas and stops them.")),
    ("ray_servers", Optional[int], _opt(None, panel=RAY,
        help="How many --ray-serve servers (default: as many as the cluster's GPUs allow, or 1).")),
    # store
    ("store", Optional[str], _opt(None, panel=STORE,
        help="The store: a DuckDB file, or postgresql://... for a store a team shares (docs/team.md). "
             "Default: $COSTINFER_STORE, else ~/.local/share/costinfer/store.duckdb")),
    ("store_wait_s", float, _opt(0.0, "--store-wait", panel=STORE,
        help="Seconds to wait for another process to release the store.")),
]  # fmt: skip

# what only matters once calls are made: plan leaves these out
RUN_ONLY = frozenset(
    [
        "on_over_budget",
        "semantic_audit",
        "concurrency",
        "fixed_concurrency",
        "timeout_s",
        "max_attempts",
        "rpm",
        "tpm",
        "wait",
        "batch_poll_s",
        "output_format",
        "report",
        "metrics_file",
        "quiet",
        "simulator_latency_ms",
        "simulator_faults",
        "simulator_rpm",
        "simulator_tpm",
        "simulator_seed",
        "simulator_bad_answers",
        "simulator_limit_mode",
    ]
)

F = TypeVar("F", bound=Callable[..., Any])


def with_params(*, planning: bool) -> Callable[[F], F]:
    """Give a command (``def cmd(**params)``) the parameters Typer parses: all of them for ``run``, those that do
    not need calls for ``plan``."""
    chosen = [p for p in PARAMS if not (planning and p[0] in RUN_ONLY)]

    def give(func: F) -> F:
        func.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind)
                for name, kind, default in chosen
            ]
        )
        return func

    return give
