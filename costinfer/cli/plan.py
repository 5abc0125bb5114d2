"""``costinfer plan``: what a run will cost, before anything is spent. No network."""

from __future__ import annotations

from typing import Any

import orjson
import typer

from costinfer.cli import options
from costinfer.cli.app import app, err_console, handled, out_console
from costinfer.cli.render import make_progress, plan_table, stop_progress
from costinfer.errors import ExitCode
from costinfer.pipeline.build import run_spec
from costinfer.pipeline.run import plan as make_plan


@app.command("plan")
@options.with_params(planning=True)
def plan_command(**params: Any) -> None:
    """Count, price and plan a dataset's run against a budget, without touching the network.

    Exits 0 when the expected cost fits the budget, 4 when it does not, 3 when rows are bad.

    \b
    Examples:
      costinfer plan prompts.jsonl --budget 50                  # does it fit? (exit 4 if not)
      costinfer plan prompts.jsonl --model gpt-4.1-mini --json  # the plan as one JSON object
      costinfer plan data.csv --template "Classify: {text}" --budget 5
    A run with the same options then starts without reading the dataset again.
    """
    json_out = bool(params["json_out"])
    with handled():
        progress = make_progress(err_console, json_out)  # reading and embedding can take a while: shown on stderr
        try:
            prepared = make_plan(run_spec(**params), progress)
        finally:
            stop_progress(progress)
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
