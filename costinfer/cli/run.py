"""``costinfer run``: run a dataset through a model, paying once per distinct request, never past the budget."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal, Optional, cast

import orjson
import typer

from costinfer.cli import options
from costinfer.cli.app import app, err_console, handled, out_console
from costinfer.cli.render import make_progress, plan_table, stop_progress, summary_table
from costinfer.core.errors import ConfigError
from costinfer.core.plan import Plan
from costinfer.core.runner import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, RunOptions, run


def parse_budget(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise ConfigError(f"--budget must be a number of dollars, got '{text}'") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"--budget must be zero or more dollars, got '{text}'")
    return value


@app.command("run")
def run_command(
    path: Path = typer.Argument(
        ...,
        help="The dataset: .jsonl, .csv or .parquet (.jsonl.gz and .jsonl.zst too), or - for JSONL on stdin.",
        show_default=False,
    ),
    provider: str = typer.Option(
        "simulate", help="openai, vllm, simulate (the built-in rehearsal server), or a plugin."
    ),
    base_url: Optional[str] = typer.Option(None, help="The server's base URL, e.g. http://127.0.0.1:8000/v1."),
    model: str = typer.Option(DEFAULT_MODEL, help="The model for rows that do not name one."),
    budget: Optional[str] = typer.Option(
        None, help="Dollars this run may spend at most; calls stop before passing it."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Results file (.jsonl or .parquet). Default: ./<input name>.results.jsonl"
    ),
    rejects: Optional[Path] = typer.Option(None, help="Where bad rows go. Default: beside the results, .rejects.jsonl"),
    store: Optional[Path] = typer.Option(
        None, help="The DuckDB store. Default: $COSTINFER_STORE, else ~/.local/share/costinfer/store.duckdb"
    ),
    store_wait: float = typer.Option(0.0, help="Seconds to wait for another process to release the store."),
    concurrency: int = typer.Option(16, "--concurrency", "-c", help="Calls in flight at once."),
    input_format: Optional[str] = options.FORMAT,
    prompt_field: str = options.PROMPT_FIELD,
    id_field: str = options.ID_FIELD,
    template: Optional[str] = options.TEMPLATE,
    system: Optional[str] = options.SYSTEM,
    max_tokens: int = typer.Option(
        DEFAULT_MAX_TOKENS, help="The output cap for rows that do not set max_tokens; the budget reserves it."
    ),
    on_bad_row: str = options.ON_BAD_ROW,
    strict_fields: bool = options.STRICT_FIELDS,
    timeout: float = typer.Option(60.0, help="Seconds to wait for one answer."),
    max_attempts: int = typer.Option(4, help="Attempts per request for errors that may pass (429, 5xx, timeouts)."),
    on_over_budget: str = typer.Option(
        "fail", help="When the plan's expected cost does not fit: fail (send nothing) or partial (run what fits)."
    ),
    prices: Optional[Path] = options.PRICES,
    config: Optional[Path] = options.CONFIG,
    fallback_model: Optional[str] = typer.Option(
        None, help="A model to send to while the provider keeps failing (the circuit breaker is open)."
    ),
    rpm: Optional[float] = typer.Option(
        None, help="The provider's requests-per-minute limit: calls are paced under it."
    ),
    tpm: Optional[float] = typer.Option(None, help="The provider's tokens-per-minute limit (prompt + max_tokens)."),
    sim_latency_ms: float = typer.Option(0.0, help="With --provider simulate: the simulated answer latency."),
    sim_faults: Optional[str] = typer.Option(
        None, help='With --provider simulate: faults to rehearse, e.g. "429=0.05,5xx=0.1,timeout=0.02,malformed=0.01".'
    ),
    sim_rpm: Optional[int] = typer.Option(
        None, help="With --provider simulate: a requests-per-minute limit to enforce."
    ),
    sim_tpm: Optional[int] = typer.Option(None, help="With --provider simulate: a tokens-per-minute limit to enforce."),
    sim_seed: Optional[int] = typer.Option(None, help="With --provider simulate: the seed of the injected faults."),
    sim_limit_mode: str = typer.Option(
        "window", help="With --provider simulate: how --sim-rpm/--sim-tpm are enforced: window, bucket or second."
    ),
    semantic: Optional[bool] = options.SEMANTIC,
    semantic_threshold: float = options.SEMANTIC_THRESHOLD,
    embedding_model: Optional[str] = options.EMBEDDING_MODEL,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
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
    with handled():
        opts = RunOptions(
            input_path=path,
            provider=provider,
            model=model,
            base_url=base_url,
            budget_usd=parse_budget(budget),
            output=output,
            rejects=rejects,
            store=store,
            store_wait_s=store_wait,
            concurrency=concurrency,
            input_format=input_format,
            prompt_field=prompt_field,
            id_field=id_field,
            template=template,
            system=system,
            max_tokens=max_tokens,
            on_bad_row=cast(Literal["fail", "skip"], on_bad_row),  # checked by the core's validate()
            timeout_s=timeout,
            max_attempts=max_attempts,
            prices=prices,
            config=config,
            on_over_budget=cast(Literal["fail", "partial"], on_over_budget),
            simulator_latency_ms=sim_latency_ms,
            simulator_faults=sim_faults,
            simulator_rpm=sim_rpm,
            simulator_tpm=sim_tpm,
            simulator_seed=sim_seed,
            simulator_limit_mode=sim_limit_mode,
            rpm=rpm,
            tpm=tpm,
            fallback_model=fallback_model,
            semantic_threshold=semantic_threshold,
            embedding_model=embedding_model,
            strict_fields=strict_fields,
        )
        if semantic is not None:
            opts.semantic = semantic
        progress = make_progress(err_console, quiet)

        def show_plan(plan: Plan) -> None:
            # the plan and its notes (unknown fields, estimates) before anything is sent, not after the money is spent
            if not quiet:
                err_console.print(plan_table(plan.as_dict(), err_console.width), soft_wrap=False)
            for note in plan.notes:
                err_console.print(f"note: {note}", markup=False)

        try:
            summary = run(opts, progress, on_plan=show_plan)
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
        raise typer.Exit(int(summary.exit_code))
