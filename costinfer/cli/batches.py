"""``costinfer batches list``: the provider batch jobs the store knows, and their state."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import orjson
import typer
from rich.table import Table

from costinfer.cli.app import app, handled, out_console
from costinfer.store import Store

batches_app = typer.Typer(help="Provider batch jobs (--mode batch): list them.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")


@batches_app.command("list")
def list_batches(
    run_id: Optional[str] = typer.Option(None, "--run", help="Only this run's batches."),
    json_out: bool = typer.Option(False, "--json", help="One JSON array."),
    store: Optional[Path] = typer.Option(None, "--store", help="The DuckDB store."),
) -> None:
    """List batch jobs: run, part, server id, state, requests. Rerun the run's command to collect open ones."""
    with handled(), Store.open(store, create=False) as st:
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
