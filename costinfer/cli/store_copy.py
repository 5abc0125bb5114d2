"""``costinfer store copy``: move a store's history and cache between a DuckDB file and a shared PostgreSQL store."""

from __future__ import annotations

import orjson
import typer

from costinfer.cli.app import app, handled, out_console

store_app = typer.Typer(help="The store itself: copy it between a DuckDB file and PostgreSQL.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("copy")
def copy(
    source: str = typer.Option(..., "--from", help="The store to copy from: a DuckDB file or postgresql://..."),
    dest: str = typer.Option(..., "--to", help="The store to copy into (made when missing)."),
    json_out: bool = typer.Option(False, "--json", help="Rows per table, as JSON."),
) -> None:
    """Copy runs, requests, the answer cache, the ledger, embeddings, batch jobs and pools; again is harmless.

    \b
    Examples:
      costinfer store copy --from ~/.local/share/costinfer/store.duckdb --to postgresql://me@db/costinfer
      costinfer store copy --from postgresql://me@db/costinfer --to team-snapshot.duckdb
    """
    from costinfer.store.copying import copy_store
    from costinfer.store.postgres import redact

    with handled():
        counts = copy_store(source, dest)
    if json_out:
        typer.echo(orjson.dumps(counts).decode())
        return
    shown = ", ".join(f"{table} {n}" for table, n in counts.items() if n)
    out_console.print(f"copied into {redact(dest)}: {shown or 'nothing new'}", markup=False)
