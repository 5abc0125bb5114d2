"""``costinfer plan``: what a run will cost, before anything is spent. No network."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import orjson
import typer

from costinfer.cli import options
from costinfer.cli.app import app, err_console, handled, out_console
from costinfer.cli.render import plan_table
from costinfer.errors import ExitCode
from costinfer.pipeline.run import plan as make_plan


@app.command("plan")
def plan_command(
    input_path: Path = options.PATH,
    budget: Optional[str] = options.BUDGET,
    model: str = options.MODEL,
    provider: Optional[str] = options.PROVIDER,
    base_url: Optional[list[str]] = options.BASE_URL,
    fallback_model: Optional[str] = options.FALLBACK_MODEL,
    compare_with: Optional[str] = options.COMPARE_WITH,
    models: Optional[str] = options.MODELS,
    route: Optional[str] = options.ROUTE,
    accept_regex: Optional[str] = options.ACCEPT_REGEX,
    accept_json_schema: Optional[Path] = options.ACCEPT_JSON_SCHEMA,
    accept_nonempty: bool = options.ACCEPT_NONEMPTY,
    accept_cmd: Optional[str] = options.ACCEPT_CMD,
    store: Optional[Path] = options.STORE,
    store_wait_s: float = options.STORE_WAIT,
    input_format: Optional[str] = options.FORMAT,
    prompt_field: str = options.PROMPT_FIELD,
    id_field: str = options.ID_FIELD,
    template: Optional[str] = options.TEMPLATE,
    system: Optional[str] = options.SYSTEM,
    max_tokens: int = options.MAX_TOKENS,
    on_bad_row: str = options.ON_BAD_ROW,
    strict_fields: bool = options.STRICT_FIELDS,
    output: Optional[Path] = options.OUTPUT,
    rejects: Optional[Path] = options.REJECTS,
    prices: Optional[Path] = options.PRICES,
    config: Optional[Path] = options.CONFIG,
    semantic: Optional[bool] = options.SEMANTIC,
    semantic_threshold: float = options.SEMANTIC_THRESHOLD,
    embedding_model: Optional[str] = options.EMBEDDING_MODEL,
    engine: str = options.ENGINE,
    ray_address: Optional[str] = options.RAY_ADDRESS,
    ray_serve: Optional[str] = options.RAY_SERVE,
    ray_servers: Optional[int] = options.RAY_SERVERS,
    mode: str = typer.Option("online", help="online, batch or auto: the plan says which auto chooses and why."),
    deadline_h: Optional[float] = typer.Option(
        None,
        "--deadline",
        help="Hours the results may take (default 24): auto takes a batch only when it allows the 24h window, and a "
        "batch older than this is cancelled and its requests sent online.",
    ),
    tag_by: Optional[str] = options.TAG_BY,
    tags: list[str] = options.TAGS,
    json_out: bool = options.JSON,
) -> None:
    """Count, price and plan a dataset's run against a budget, without touching the network.

    Exits 0 when the expected cost fits the budget, 4 when it does not, 3 when rows are bad.

    \b
    Examples:
      costinfer plan prompts.jsonl --budget 50                  # does it fit? (exit 4 if not)
      costinfer plan prompts.jsonl --model gpt-4.1-mini --json  # the plan as one JSON object
      costinfer plan data.csv --template "Classify: {text}" --budget 5
    A run with the same options then starts without reading the dataset again.
    """
    with handled():
        prepared = make_plan(options.run_options(locals()))
        data = prepared.plan.as_dict()
        if json_out:
            typer.echo(orjson.dumps(data).decode())
        else:
            out_console.print(plan_table(data, out_console.width), soft_wrap=False)
        for note in prepared.notes:
            err_console.print(f"note: {note}", markup=False)
        if prepared.counts["rejects"]:
            raise typer.Exit(int(ExitCode.BAD_INPUT))
        if not prepared.plan.fits:
            raise typer.Exit(int(ExitCode.BUDGET))
