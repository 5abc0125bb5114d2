"""``costinfer run``: run a dataset through a model, paying once per distinct request, never past the budget."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson
import typer

from costinfer.cli import options
from costinfer.cli.app import app, err_console, handled, out_console, sigterm_interrupts
from costinfer.cli.render import make_progress, plan_table, stop_progress, summary_table
from costinfer.errors import CostinferError, ExitCode
from costinfer.pipeline.build import run_spec
from costinfer.pipeline.run import run
from costinfer.planning.plan import Plan
from costinfer.spec import RunSpec


@app.command("run")
@options.with_params(planning=False)
def run_command(**params: Any) -> None:
    """Run every row of a dataset and write one result per row.

    \b
    Examples:
      costinfer run prompts.jsonl --provider simulate --budget 1       # a rehearsal, no key, nothing paid
      costinfer run prompts.jsonl --provider openai --budget 50 -o results.jsonl
      costinfer run data.csv --template "Classify: {text}" --model gpt-4o-mini --budget 5
      zcat big.jsonl.gz | costinfer run - --budget 20 -o out.parquet
      costinfer run prompts.jsonl --budget 50 --json > summary.json     # machine-readable summary
    Rerun the same command after a crash or Ctrl-C: it resumes and pays for nothing twice.
    """
    json_out, quiet = bool(params["json_out"]), bool(params["quiet"])
    with handled(), sigterm_interrupts():
        spec = run_spec(**params)
        progress = make_progress(err_console, quiet)

        def show_plan(plan: Plan) -> None:
            # the plan and its notes (unknown fields, estimates) before anything is sent, not after the money is spent
            if not quiet:
                err_console.print(plan_table(plan.as_dict(), err_console.width), soft_wrap=False)
            for note in plan.notes:
                err_console.print(f"note: {note}", markup=False)

        started = time.monotonic()
        try:
            summary = run(spec, progress, on_plan=show_plan)
        except CostinferError as exc:
            _failure_metrics(spec, int(exc.exit_code), started)
            raise
        except KeyboardInterrupt:
            _failure_metrics(spec, int(ExitCode.INTERRUPTED), started)
            raise
        finally:
            stop_progress(progress)
        data = summary.as_dict()
        if json_out:
            typer.echo(orjson.dumps(data).decode())
        elif not quiet:
            out_console.print(summary_table(data))
        for note in summary.notes[len(summary.plan.get("notes") or []) :]:  # the plan's were shown with it
            err_console.print(f"note: {note}", markup=False)
        if summary.stop_reason == "budget" and summary.not_run:
            err_console.print(
                f"budget: {summary.not_run} rows were not run: the budget could not cover their worst case",
                markup=False,
            )
        if summary.failed:
            err_console.print(f"{summary.failed} rows failed; rerun the same command to retry them", markup=False)
        if summary.not_run and summary.stop_reason not in ("budget", "interrupted"):
            why = {"submitted": "they wait in a provider batch: rerun the same command to collect them"}.get(
                str(summary.stop_reason), "rerun the same command to send them"
            )
            reason = f" ({summary.stop_reason})" if summary.stop_reason else ""
            err_console.print(f"{summary.not_run} rows were not run{reason}; {why}", markup=False)
        raise typer.Exit(int(summary.exit_code))


def _failure_metrics(spec: RunSpec, exit_code: int, started: float) -> None:
    """--metrics-file is written on every exit: a run that stopped with an error says so (a stale file from a
    passing run must not stand)."""
    if spec.output.metrics_file is None:
        return
    from costinfer.report.metrics import write_failure_metrics

    with contextlib.suppress(OSError, ValueError):  # the error itself is what the user must see
        write_failure_metrics(spec.output.metrics_file, spec.input.label, exit_code, time.monotonic() - started)
