"""The options of ``run`` and ``plan``, defined once. Each command's parameter has the name of the ``RunOptions``
field it sets, so ``run_options`` builds the dataclass without copying fields by hand, and the core validates it in one
place (``costinfer.pipeline.options.validate``)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal, InvalidOperation
from typing import Any

import typer

from costinfer.errors import ConfigError
from costinfer.pipeline.options import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, RunOptions
from costinfer.reuse.tiers import DEFAULT_THRESHOLD

PATH = typer.Argument(
    ...,
    help="The dataset: .jsonl, .csv or .parquet (.jsonl.gz and .jsonl.zst too), or - for JSONL on stdin.",
    show_default=False,
    metavar="PATH",
)
PROVIDER = typer.Option(
    None,
    help="openai, anthropic, vllm, simulate (a rehearsal: the built-in server, nothing paid), or a plugin. "
    "Default: the model's provider (gpt-*, o-series: openai; claude-*: anthropic; else the price catalog's).",
    show_default=False,
)
BASE_URL = typer.Option(
    None,
    metavar="<url>",
    help="The server's base URL, e.g. http://127.0.0.1:8000/v1. Give it again for more servers of the same model "
    "(replicas): calls go to the least busy one, and a server that dies leaves its calls to the others.",
)
MODEL = typer.Option(DEFAULT_MODEL, help="The model for rows that do not name one.")
BUDGET = typer.Option(None, "--budget", help="Dollars the run may spend at most; calls stop before passing it.")
STORE = typer.Option(
    None, help="The DuckDB store. Default: $COSTINFER_STORE, else ~/.local/share/costinfer/store.duckdb"
)
STORE_WAIT = typer.Option(0.0, "--store-wait", help="Seconds to wait for another process to release the store.")
OUTPUT = typer.Option(
    None, "--output", "-o", help="Results file (.jsonl or .parquet). Default: ./<input name>.results.jsonl"
)
REJECTS = typer.Option(None, help="Where bad rows go. Default: beside the results, .rejects.jsonl")
FORMAT = typer.Option(
    None,
    "--format",
    help="jsonl, csv, parquet, or a provider batch file (openai-batch, anthropic-batch); default: by extension, and a "
    "JSONL file whose first line is a batch request is read as one.",
)
PROMPT_FIELD = typer.Option("prompt", help="The column that holds the prompt text.")
ID_FIELD = typer.Option("id", help="The column that holds the row id; without one, the row position.")
TEMPLATE = typer.Option(None, help='Build the prompt from columns, e.g. "Classify: {text}".')
SYSTEM = typer.Option(None, help="A system prompt for rows that do not carry one.")
MAX_TOKENS = typer.Option(
    DEFAULT_MAX_TOKENS, help="The output cap for rows that do not set max_tokens; the budget reserves it."
)
ON_BAD_ROW = typer.Option(
    "fail", help="fail: stop before any call if a row is bad (the safe default in CI); skip: run the rest."
)
STRICT_FIELDS = typer.Option(
    False,
    "--strict-fields",
    help="A row field costinfer does not know (a typo such as max_token) makes the row bad, instead of a warning.",
)
PRICES = typer.Option(None, help="A price catalog in LiteLLM's JSON format.")
CONFIG = typer.Option(None, help="costinfer.toml. Default: $COSTINFER_CONFIG or ./costinfer.toml")
FALLBACK_MODEL = typer.Option(
    None, help="A model to send to while the provider keeps failing (the circuit breaker is open)."
)
SEMANTIC = typer.Option(
    None,
    "--semantic/--no-semantic",
    help="Reuse answers of near-duplicate requests (default: on, or $COSTINFER_SEMANTIC=0 for off).",
)
SEMANTIC_THRESHOLD = typer.Option(
    DEFAULT_THRESHOLD, help="Cosine similarity from which a near-duplicate may share an answer (guards apply)."
)
EMBEDDING_MODEL = typer.Option(
    None, help="A sentence-transformers model name or path (default: all-MiniLM-L6-v2, offline)."
)
ENGINE = typer.Option(
    "local", help="Where the semantic tier embeds texts: local (this machine, its GPU if any) or ray (a Ray cluster)."
)
RAY_ADDRESS = typer.Option(
    None, help="With --engine ray: the cluster to join (auto, or ray://HOST:10001). Default: start a local Ray."
)
RAY_SERVE = typer.Option(
    None,
    help="With --engine ray and --provider vllm (or openai): a command that starts a server on {port}, run on Ray "
    "(each holding its model's [self_hosted] gpus), e.g. 'vllm serve MODEL --port {port}'. The run calls them as "
    "replicas and stops them.",
)
RAY_SERVERS = typer.Option(
    None, help="How many --ray-serve servers (default: as many as the cluster's GPUs allow, or 1)."
)
REPORT = typer.Option(
    True, "--report/--no-report", help="Write <results>.report.json and a self-contained <results>.report.html."
)
METRICS_FILE = typer.Option(
    None, help="Write the run's figures in Prometheus's text format here (for the node exporter's textfile collector)."
)
TAG_BY = typer.Option(
    None, help="Metadata keys whose values attribute each row's cost, e.g. team,project (see `analyze --by tag`)."
)
TAGS = typer.Option(
    [], "--tag", metavar="<key=value>", help="A tag for every row of the run, KEY=VALUE; may be given more than once."
)
JSON = typer.Option(False, "--json", help="Print the result as one JSON object on stdout.")
COMPARE_WITH = typer.Option(
    None, help="Price the same tokens at this catalog model too (e.g. gpt-4o-mini), beside a self-hosted run's cost."
)
MODELS = typer.Option(
    None,
    help="Route rows that name no model among these candidates, cheapest first, e.g. gpt-4o-mini,gpt-4o "
    "(a row's own model always wins).",
)
ROUTE = typer.Option(
    None,
    help="cheapest: each row to the cheapest candidate that takes it; cascade: escalate rows whose answer fails "
    "the --accept-* checks (and cut or refused answers); budget: upgrade rows by priority while the worst case fits "
    "--budget. Default: cascade with a check, else cheapest.",
)
ACCEPT_REGEX = typer.Option(None, help="Cascade: an answer must contain a match of this regular expression.")
ACCEPT_JSON_SCHEMA = typer.Option(None, help="Cascade: an answer must be JSON valid against this JSON Schema file.")
ACCEPT_NONEMPTY = typer.Option(False, "--accept-nonempty", help="Cascade: an empty answer is escalated.")
ACCEPT_CMD = typer.Option(
    None,
    help="Cascade: a command that reads {id, request, answer, model, finish_reason, metadata} as JSON on stdin; "
    "exit 0 accepts the answer, exit 1 escalates it; a crash or any other exit stops the run before it escalates.",
)

# CLI parameters that set no RunOptions field as they are: output switches, and those converted on the way
_NOT_FIELDS = {"json_out", "quiet", "budget", "semantic", "tag_by", "tags", "models"}


def parse_budget(text: str | None) -> Decimal | None:
    """--budget as exact dollars ("50", "$0.25"); its range is checked with the other options."""
    if text is None:
        return None
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise ConfigError(f"--budget must be a number of dollars, got '{text}'") from None
    if not value.is_finite():
        raise ConfigError(f"--budget must be a number of dollars, got '{text}'")
    return value


def parse_tags(items: list[str]) -> dict[str, str]:
    """--tag team=search --tag env=prod as a dict; anything but KEY=VALUE is a configuration error."""
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--tag must be KEY=VALUE, got '{item}'")
        if "," in item or "=" in value:  # a row's tag is "k=v,k=v": a comma or '=' inside would read as two tags
            raise ConfigError(f"--tag {item}: a tag's key and value cannot hold ',' or '='; give --tag once per tag")
        tags[key.strip()] = value.strip()
    return tags


def run_options(params: dict[str, Any]) -> RunOptions:
    """``RunOptions`` from a command's parameters (named as its fields; ``budget`` as text, ``semantic`` None for
    the default)."""
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    values = {k: v for k, v in params.items() if k in fields and k not in _NOT_FIELDS}
    unknown = set(params) - fields - _NOT_FIELDS
    assert not unknown, f"CLI parameters that set no RunOptions field: {sorted(unknown)}"
    values["budget_usd"] = parse_budget(params.get("budget"))
    urls = values.get("base_url")
    if isinstance(urls, list):  # --base-url given several times: the first, then the replicas
        values["base_url"] = urls[0] if urls else None
        values["replicas"] = list(urls[1:])
    if "deadline_h" in params:
        values["deadline_given"] = params["deadline_h"] is not None
        values["deadline_h"] = 24.0 if params["deadline_h"] is None else params["deadline_h"]
    values["tag_by"] = [k.strip() for k in (params.get("tag_by") or "").split(",") if k.strip()]
    values["tags"] = parse_tags(params.get("tags") or [])
    values["models"] = [m.strip() for m in (params.get("models") or "").split(",") if m.strip()]
    opts = RunOptions(**values)
    if params.get("semantic") is not None:
        opts.semantic = bool(params["semantic"])
    return opts
