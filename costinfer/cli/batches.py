"""``costinfer batches list``: the provider batch jobs the store knows, and their state."""

from __future__ import annotations

from typing import Optional

import orjson
import typer
from rich.table import Table

from costinfer.cli.app import app, err_console, handled, open_for_reading, out_console
from costinfer.execution.batch_mode import BatchExecutor, for_run
from costinfer.store import Store

batches_app = typer.Typer(help="Provider batch jobs (--mode batch): list, wait for, cancel.", no_args_is_help=True)
StoreOpt = typer.Option(
    None, "--store", help="The store: a DuckDB file or postgresql://... Default: $COSTINFER_STORE or the per-user one."
)
app.add_typer(batches_app, name="batches")


@batches_app.command("list")
def list_batches(
    run_id: Optional[str] = typer.Option(None, "--run", help="Only this run's batches."),
    json_out: bool = typer.Option(False, "--json", help="One JSON array."),
    store: Optional[str] = StoreOpt,
) -> None:
    """List batch jobs: run, part, server id, state, requests. Rerun the run's command to collect open ones."""
    with handled(), open_for_reading(store) as st:
        found = st.batches(run_id)
        if json_out:
            typer.echo(orjson.dumps(found, default=str).decode())
            return
        table = Table(box=None, pad_edge=False, padding=(0, 1))
        for col in ("run", "part", "server id", "state", "requests"):
            table.add_column(col, justify="right" if col in ("part", "requests") else "left", no_wrap=True)
        for b in found:
            table.add_row(b["run_id"][:12], str(b["part"]), str(b["server_id"] or "-"), b["state"], str(b["requests"]))
        out_console.print(table, soft_wrap=False)


def _executor(st: Store, run: str, poll_s: float = 5.0) -> BatchExecutor:
    from costinfer.backends.base import backend_class
    from costinfer.cli.analyze import _one_run
    from costinfer.pricing.catalog import Catalog
    from costinfer.pricing.config_file import Config

    run_id = _one_run(st, run)
    provider = str((st.run(run_id) or {}).get("provider"))
    return for_run(st, run_id, backend_class(provider), Catalog.load(None, Config.load(None)), poll_s)


@batches_app.command("wait")
def wait(
    run: str = typer.Argument(..., help="The run (an id or its start, as `costinfer runs` shows)."),
    poll: float = typer.Option(5.0, help="Seconds before the first status check (it doubles, up to 60 s)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Wait for a run's batches and collect their answers into the store (rerun the run's command for its results)."""
    import anyio

    from costinfer.cli.analyze import check_run_id

    with handled():
        check_run_id(run)
    with handled(), Store.open(store, create=False) as st:
        executor = _executor(st, run, poll)

        async def go() -> None:
            async with executor.backend:
                await executor.collect()

        anyio.run(go)
        done = executor.calls_done
        err_console.print(f"{done} answers collected; rerun the run's command to write its results", markup=False)


@batches_app.command("cancel")
def cancel(
    run: str = typer.Argument(..., help="The run (an id or its start, as `costinfer runs` shows)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Cancel a run's open batches with the provider; their requests are pending again."""
    import anyio

    from costinfer.cli.analyze import check_run_id

    with handled():
        check_run_id(run)
    with handled(), Store.open(store, create=False) as st:
        executor = _executor(st, run)

        async def go() -> int:
            async with executor.backend:
                return int(await executor.cancel())

        n = anyio.run(go)
        out_console.print(f"{n} batches cancelled", markup=False)
