"""``costinfer plan``: what a run will cost, before anything is spent. No network."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, cast

import orjson
import typer

from costinfer.cli import options
from costinfer.cli.app import app, err_console, handled, out_console
from costinfer.cli.render import plan_table
from costinfer.cli.run import parse_budget
from costinfer.core.errors import ExitCode
from costinfer.core.runner import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, RunOptions
from costinfer.core.runner import plan as make_plan


@app.command("plan")
def plan_command(
    path: Path = typer.Argument(
        ...,
        help="The dataset: .jsonl, .csv or .parquet (.jsonl.gz and .jsonl.zst too), or - for JSONL on stdin.",
        show_default=False,
    ),
    budget: Optional[str] = typer.Option(None, help="Dollars the run may spend; the plan says whether it fits."),
    model: str = typer.Option(DEFAULT_MODEL, help="The model for rows that do not name one."),
    provider: str = typer.Option("simulate", help="The provider the run will use (it shapes the request keys)."),
    base_url: Optional[str] = typer.Option(None, help="The server's base URL, as the run will use it."),
    store: Optional[Path] = typer.Option(None, help="The DuckDB store (its cache counts as free)."),
    input_format: Optional[str] = options.FORMAT,
    prompt_field: str = options.PROMPT_FIELD,
    id_field: str = options.ID_FIELD,
    template: Optional[str] = options.TEMPLATE,
    system: Optional[str] = options.SYSTEM,
    max_tokens: int = typer.Option(DEFAULT_MAX_TOKENS, help="The output cap for rows that do not set max_tokens."),
    on_bad_row: str = options.ON_BAD_ROW,
    strict_fields: bool = options.STRICT_FIELDS,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where the run will write (names rejects)."),
    prices: Optional[Path] = options.PRICES,
    config: Optional[Path] = options.CONFIG,
    semantic: Optional[bool] = options.SEMANTIC,
    semantic_threshold: float = options.SEMANTIC_THRESHOLD,
    embedding_model: Optional[str] = options.EMBEDDING_MODEL,
    json_out: bool = typer.Option(False, "--json", help="Print the plan as one JSON object on stdout."),
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
        opts = RunOptions(
            input_path=path,
            provider=provider,
            model=model,
            base_url=base_url,
            budget_usd=parse_budget(budget),
            store=store,
            input_format=input_format,
            prompt_field=prompt_field,
            id_field=id_field,
            template=template,
            system=system,
            max_tokens=max_tokens,
            on_bad_row=cast(Literal["fail", "skip"], on_bad_row),  # checked by the core's validate()
            strict_fields=strict_fields,
            output=output,
            prices=prices,
            config=config,
            semantic_threshold=semantic_threshold,
            embedding_model=embedding_model,
        )
        if semantic is not None:
            opts.semantic = semantic
        prepared = make_plan(opts)
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
