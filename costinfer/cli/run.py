"""``costinfer run``: run a dataset through a model, paying once per distinct request, never past the budget."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Optional

import orjson
import typer

from costinfer.cli import options
from costinfer.cli.app import app, err_console, handled, out_console, sigterm_interrupts
from costinfer.cli.render import make_progress, plan_table, stop_progress, summary_table
from costinfer.errors import CostinferError, ExitCode
from costinfer.pipeline.options import RunOptions, dataset_label
from costinfer.pipeline.run import run
from costinfer.planning.plan import Plan


@app.command("run")
def run_command(
    input_path: Path = options.PATH,
    provider: Optional[str] = options.PROVIDER,
    base_url: Optional[list[str]] = options.BASE_URL,
    model: str = options.MODEL,
    budget: Optional[str] = options.BUDGET,
    output: Optional[Path] = options.OUTPUT,
    rejects: Optional[Path] = options.REJECTS,
    store: Optional[Path] = options.STORE,
    store_wait_s: float = options.STORE_WAIT,
    concurrency: Optional[int] = typer.Option(
        None,
        "--concurrency",
        "-c",
        help="Calls in flight at once (default 16). With --provider vllm the calls in flight follow the server's "
        "queue (/metrics) and this is their ceiling (default 256).",
    ),
    fixed_concurrency: bool = typer.Option(
        False, "--fixed-concurrency", help="Keep --concurrency calls in flight even on a server that reports its load."
    ),
    input_format: Optional[str] = options.FORMAT,
    prompt_field: str = options.PROMPT_FIELD,
    id_field: str = options.ID_FIELD,
    template: Optional[str] = options.TEMPLATE,
    system: Optional[str] = options.SYSTEM,
    max_tokens: int = options.MAX_TOKENS,
    on_bad_row: str = options.ON_BAD_ROW,
    strict_fields: bool = options.STRICT_FIELDS,
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds to wait for one answer."),
    max_attempts: int = typer.Option(4, help="Attempts per request for errors that may pass (429, 5xx, timeouts)."),
    on_over_budget: str = typer.Option(
        "fail", help="When the plan's expected cost does not fit: fail (send nothing) or partial (run what fits)."
    ),
    prices: Optional[Path] = options.PRICES,
    config: Optional[Path] = options.CONFIG,
    fallback_model: Optional[str] = options.FALLBACK_MODEL,
    compare_with: Optional[str] = options.COMPARE_WITH,
    models: Optional[str] = options.MODELS,
    route: Optional[str] = options.ROUTE,
    accept_regex: Optional[str] = options.ACCEPT_REGEX,
    accept_json_schema: Optional[Path] = options.ACCEPT_JSON_SCHEMA,
    accept_nonempty: bool = options.ACCEPT_NONEMPTY,
    accept_cmd: Optional[str] = options.ACCEPT_CMD,
    rpm: Optional[float] = typer.Option(
        None, help="The provider's requests-per-minute limit: calls are paced under it."
    ),
    tpm: Optional[float] = typer.Option(None, help="The provider's tokens-per-minute limit (prompt + max_tokens)."),
    simulator_latency_ms: float = typer.Option(
        0.0, "--sim-latency-ms", help="With --provider simulate: the simulated answer latency."
    ),
    simulator_faults: Optional[str] = typer.Option(
        None,
        "--sim-faults",
        help='With --provider simulate: faults to rehearse, e.g. "429=0.05,5xx=0.1,timeout=0.02,malformed=0.01".',
    ),
    simulator_rpm: Optional[int] = typer.Option(
        None, "--sim-rpm", help="With --provider simulate: a requests-per-minute limit to enforce."
    ),
    simulator_tpm: Optional[int] = typer.Option(
        None, "--sim-tpm", help="With --provider simulate: a tokens-per-minute limit to enforce."
    ),
    simulator_seed: Optional[int] = typer.Option(
        None, "--sim-seed", help="With --provider simulate: the seed of the injected faults."
    ),
    semantic_audit: int = typer.Option(
        0,
        help="Sample this many of the run's semantic reuses into <results>.semantic-audit.jsonl for a person to "
        "label (1 same question, 0 not); `costinfer cache calibrate FILE` then gives the precision per threshold.",
    ),
    simulator_bad_answers: Optional[str] = typer.Option(
        None,
        "--sim-bad-answers",
        help="With --provider simulate: the share of a model's answers that are bad (refusals), e.g. "
        '"gpt-4o-mini=0.3", seeded by --sim-seed: a rehearsal of --route cascade.',
    ),
    simulator_limit_mode: str = typer.Option(
        "window",
        "--sim-limit-mode",
        help="With --provider simulate: how --sim-rpm/--sim-tpm are enforced: window, bucket or second.",
    ),
    semantic: Optional[bool] = options.SEMANTIC,
    semantic_threshold: float = options.SEMANTIC_THRESHOLD,
    embedding_model: Optional[str] = options.EMBEDDING_MODEL,
    engine: str = options.ENGINE,
    ray_address: Optional[str] = options.RAY_ADDRESS,
    ray_serve: Optional[str] = options.RAY_SERVE,
    ray_servers: Optional[int] = options.RAY_SERVERS,
    mode: str = typer.Option(
        "online",
        help="online: one call per request; batch: the provider's batch API at batch prices (openai, anthropic, "
        "simulate); auto: batch when the provider has one and --deadline allows its 24h window.",
    ),
    deadline_h: Optional[float] = typer.Option(
        None,
        "--deadline",
        help="Hours the results may take (default 24): auto takes a batch only when it allows the 24h window, and a "
        "batch older than this is cancelled and its requests sent online.",
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Batch mode: wait for the batches, or submit, stop and collect on a later run."
    ),
    batch_poll_s: float = typer.Option(5.0, "--batch-poll", help="Batch mode: seconds before the first status check."),
    output_format: Optional[str] = typer.Option(
        None, help="openai-batch or anthropic-batch: write the results as that provider's batch output file."
    ),
    report: bool = options.REPORT,
    tag_by: Optional[str] = options.TAG_BY,
    tags: list[str] = options.TAGS,
    metrics_file: Optional[Path] = options.METRICS_FILE,
    json_out: bool = options.JSON,
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress output and no summary table (errors and notes still go to stderr)."
    ),
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
    with handled(), sigterm_interrupts():
        opts = options.run_options(locals())
        progress = make_progress(err_console, quiet)

        def show_plan(plan: Plan) -> None:
            # the plan and its notes (unknown fields, estimates) before anything is sent, not after the money is spent
            if not quiet:
                err_console.print(plan_table(plan.as_dict(), err_console.width), soft_wrap=False)
            for note in plan.notes:
                err_console.print(f"note: {note}", markup=False)

        started = time.monotonic()
        try:
            summary = run(opts, progress, on_plan=show_plan)
        except CostinferError as exc:
            _failure_metrics(opts, int(exc.exit_code), started)
            raise
        except KeyboardInterrupt:
            _failure_metrics(opts, int(ExitCode.INTERRUPTED), started)
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


def _failure_metrics(opts: RunOptions, exit_code: int, started: float) -> None:
    """--metrics-file is written on every exit: a run that stopped with an error says so (a stale file from a
    passing run must not stand)."""
    if opts.metrics_file is None:
        return
    from costinfer.report.metrics import write_failure_metrics

    with contextlib.suppress(OSError, ValueError):  # the error itself is what the user must see
        write_failure_metrics(opts.metrics_file, dataset_label(opts), exit_code, time.monotonic() - started)
