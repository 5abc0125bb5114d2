"""``costinfer store copy``: a store's history and cache into another store (a local DuckDB file into the shared
PostgreSQL store, and back), idempotently: a row the destination holds already (by its key) is not copied again."""

from __future__ import annotations

from pathlib import Path

from costinfer.errors import ConfigError
from costinfer.store.postgres import KEYS, PER_RUN, Postgres, duck_columns, is_url, pull_into_duck, push_from_duck
from costinfer.store.schema import SCHEMA_VERSION
from costinfer.store.store import Store

# every table a store keeps, in an order that never leaves a row without its run or its request
TABLES = ("budget_pools", "runs", "requests", "responses", "calls", *PER_RUN, "embeddings", "batches", "batch_items")


def copy_store(source: str | Path, dest: str | Path) -> dict[str, int]:
    """Copy every table; returns, per table, the rows the destination did not hold before (a DuckDB destination) or
    the rows read (a PostgreSQL destination, which keeps only those it did not hold)."""
    if is_url(source) == is_url(dest):
        raise ConfigError(
            "store copy goes between a DuckDB file and a postgresql:// store (one of each); "
            f"got --from {source} --to {dest}"
        )
    if is_url(dest):
        pg = Postgres(str(dest))
        try:
            with Store.open(Path(source), create=False) as local:
                pg.ensure_schema(duck_columns(local._con), SCHEMA_VERSION)
                counts = {}
                with pg.tx() as cur:
                    for table in TABLES:
                        counts[table] = push_from_duck(pg, local._con, table, cur=cur)
                return counts
        finally:
            pg.close()
    pg = Postgres(str(source))
    try:
        with Store.open(Path(dest)) as local:
            pg.ensure_schema(duck_columns(local._con), SCHEMA_VERSION)
            with pg.tx() as cur:
                return {table: pull_into_duck(pg, local._con, table, cur=cur) for table in TABLES}
    finally:
        pg.close()


__all__ = ["KEYS", "TABLES", "copy_store"]
