"""The PostgreSQL side of a shared store: the connection pool, its schema, and moving rows between it and DuckDB.

The schema is not written twice: PostgreSQL's tables are made from the DuckDB store's own (its migrations are the one
definition), column for column, with the keys that make copies idempotent, plus the tables only a shared store needs
(``claims``, ``pool_spend``, ``pool_holds``). A newer costinfer adds the columns it knows to an older shared store.
Credentials come from the connection string, the environment (``PGPASSWORD``...) or ``~/.pgpass``; the store's name
in every message is the string without its password.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import duckdb
import pyarrow as pa

from costinfer.errors import StoreError

T = TypeVar("T")
_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)
# what identifies a row of each table: a copy inserts what is missing by it and never duplicates a row
KEYS: dict[str, tuple[str, ...]] = {
    "schema_migrations": ("version",),
    "runs": ("run_id",),
    "requests": ("key",),
    "responses": ("key",),
    "calls": ("run_id", "key", "finished_at", "attempts", "mode"),
    "items": ("run_id", "row_idx"),
    "rejects": ("run_id", "row_idx", "field"),
    "run_keys": ("run_id", "key"),
    "run_sources": ("run_id", "source", "model", "tag"),
    "embeddings": ("model", "text_hash"),
    "batches": ("local_id",),
    "batch_items": ("local_id", "key"),
    "budget_pools": ("name",),
    "route_learned": ("run_id", "key"),
}
# a run's working set: written whole when the run settles its account (replacing what an earlier attempt wrote)
PER_RUN = ("items", "rejects", "run_keys", "run_sources", "route_learned")
_TYPES = {
    "VARCHAR": "text",
    "JSON": "text",  # kept byte for byte (jsonb would reorder keys)
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "DOUBLE": "double precision",
    "FLOAT": "real",
    "BOOLEAN": "boolean",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "DECIMAL(38,12)": "numeric(38,12)",
}
_SHARED_ONLY = """
CREATE TABLE IF NOT EXISTS claims (
    key text PRIMARY KEY, owner text NOT NULL, run_id text NOT NULL, lease_until timestamptz NOT NULL,
    done boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS pool_spend (
    name text NOT NULL, period_key text NOT NULL, spent_usd numeric(38,12) NOT NULL DEFAULT 0,
    lapsed_usd numeric(38,12) NOT NULL DEFAULT 0, PRIMARY KEY (name, period_key));
CREATE TABLE IF NOT EXISTS pool_holds (
    name text NOT NULL, owner text NOT NULL, run_id text NOT NULL, period_key text NOT NULL,
    amount numeric(38,12) NOT NULL, lease_until timestamptz NOT NULL, PRIMARY KEY (name, owner));
ALTER TABLE runs ADD COLUMN IF NOT EXISTS live_until timestamptz;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS live_owner text;
"""
_LOCK = 7_318_263_501  # an advisory lock: one process at a time makes or upgrades the schema


def is_url(location: object) -> bool:
    return isinstance(location, str) and bool(_URL.match(location))


def redact(url: str) -> str:
    """The connection string without its password: what messages and the run's record show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def duck_columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        tables.setdefault(str(table), []).append((str(column), str(kind)))
    return tables


def pg_type(duck: str) -> str:
    if duck.endswith("[]"):
        return pg_type(duck[:-2]) + "[]"
    if duck not in _TYPES:
        raise StoreError(f"the shared store has no PostgreSQL type for DuckDB's {duck}; this is a costinfer bug")
    return _TYPES[duck]


class Postgres:
    """A pool of connections to one PostgreSQL database (psycopg 3), each transaction ``with pg.tx() as cur``."""

    def __init__(self, url: str, max_size: int = 8) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - a dependency of costinfer
            raise StoreError(f"a PostgreSQL store needs psycopg and psycopg-pool: {exc}") from exc
        self.url = url
        self.name = redact(url)
        self._errors = psycopg.Error
        try:
            with psycopg.connect(url, connect_timeout=10) as probe:
                probe.execute("SELECT 1")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"--store {self.name}: cannot connect to PostgreSQL: {first}") from None
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=True, kwargs={"connect_timeout": 10})

    @contextmanager
    def tx(self) -> Iterator[Any]:
        """A cursor in a transaction: committed when the block ends, rolled back when it raises."""
        try:
            with self.pool.connection() as con, con.transaction(), con.cursor() as cur:
                yield cur
        except self._errors as exc:
            raise StoreError(f"{self.name}: {str(exc).strip().splitlines()[0]}") from exc

    def _complete(self, columns: dict[str, list[tuple[str, str]]], version: int) -> bool:
        with self.tx() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            )
            have = {(str(t), str(c)) for t, c in cur.fetchall()}
            wanted = {(t, c) for t, cols in columns.items() for c, _ in cols}
            wanted |= {("claims", "key"), ("pool_spend", "lapsed_usd"), ("pool_holds", "lease_until")}
            wanted |= {("runs", "live_until"), ("runs", "live_owner")}
            if not wanted <= have:
                return False
            cur.execute("SELECT max(version) FROM schema_migrations")
            row = cur.fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
        if current > version:
            raise StoreError(
                f"{self.name}: the shared store's schema is version {current}, newer than this costinfer knows "
                f"({version}); upgrade costinfer"
            )
        return current == version

    def retrying(self, work: Callable[[Any], T], attempts: int = 8) -> T:
        """``work(cur)`` in a transaction, again when PostgreSQL ends it for a deadlock or a serialization failure
        (two processes locking claims in different orders): nothing of a failed attempt was kept."""
        import psycopg.errors

        for attempt in range(attempts):
            try:
                with self.pool.connection() as con, con.transaction(), con.cursor() as cur:
                    return work(cur)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == attempts - 1:
                    raise StoreError(f"{self.name}: the shared store stayed too busy to commit; rerun") from None
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
            except self._errors as exc:
                raise StoreError(f"{self.name}: {str(exc).strip().splitlines()[0]}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.pool.close()

    def ensure_schema(self, columns: dict[str, list[tuple[str, str]]], version: int) -> None:
        """Make (or complete) the shared tables from the DuckDB store's columns; one process at a time. A complete
        schema is left alone: DDL takes locks that would wait on (and deadlock with) the runs using the tables."""
        if self._complete(columns, version):
            return
        with self.tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
            for table, cols in columns.items():
                body = ", ".join(f"{name} {pg_type(kind)}" for name, kind in cols)
                cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
                for name, kind in cols:
                    cur.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {pg_type(kind)}")
                key = KEYS.get(table)
                if key:
                    # NULLS NOT DISTINCT: run_sources.tag may be null and still identify its row
                    cur.execute(
                        f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} ({', '.join(key)}) "
                        f"NULLS NOT DISTINCT"
                    )
            cur.execute("ALTER TABLE runs ALTER COLUMN started_at SET DEFAULT now()")
            for table in ("requests", "responses", "calls", "embeddings", "batches", "budget_pools"):
                if any(c == "created_at" for c, _ in columns.get(table, [])):
                    cur.execute(f"ALTER TABLE {table} ALTER COLUMN created_at SET DEFAULT now()")
            cur.execute("ALTER TABLE calls ALTER COLUMN finished_at SET DEFAULT now()")
            cur.execute(_SHARED_ONLY)
            cur.execute("CREATE INDEX IF NOT EXISTS requests_norm ON requests (norm_key)")
            cur.execute("CREATE INDEX IF NOT EXISTS requests_group ON requests (group_key)")
            cur.execute("CREATE INDEX IF NOT EXISTS calls_run ON calls (run_id)")
            for table in PER_RUN:
                cur.execute(f"CREATE INDEX IF NOT EXISTS {table}_run ON {table} (run_id)")
            cur.execute("SELECT max(version) FROM schema_migrations")
            row = cur.fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > version:
                raise StoreError(
                    f"{self.name}: the shared store's schema is version {current}, newer than this costinfer knows "
                    f"({version}); upgrade costinfer"
                )
            if current < version:
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, now()) "
                    "ON CONFLICT DO NOTHING",
                    [version, f"shared store made from the DuckDB schema {version}"],
                )


def push(
    pg: Postgres,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    update: bool = False,
    replace_run: str | None = None,
    cur: Any = None,
    direct: bool = False,
) -> None:
    """Rows into a shared table through a staging copy: new ones inserted, known ones (by ``KEYS``) left alone, or
    with ``update`` overwritten; with ``replace_run`` the run's rows are deleted first (its working set, rewritten)."""
    if cur is None:
        with pg.tx() as own:
            push(pg, table, columns, rows, update=update, replace_run=replace_run, cur=own, direct=direct)
        return
    cols = ", ".join(columns)
    if direct:  # rows that cannot be there yet (a run's new calls): straight in, no staging table
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    stage = f"stage_{table}"
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table}) ON COMMIT DROP")
    cur.execute(f"TRUNCATE {stage}")
    with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    if replace_run is not None:
        cur.execute(f"DELETE FROM {table} WHERE run_id = %s", [replace_run])
    key = KEYS.get(table, ())
    if update and key:
        sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
        conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    else:
        conflict = "ON CONFLICT DO NOTHING"
    cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} {conflict}")


def push_from_duck(
    pg: Postgres,
    con: duckdb.DuckDBPyConnection,
    table: str,
    where: str = "true",
    params: Sequence[Any] = (),
    *,
    update: bool = False,
    replace_run: str | None = None,
    cur: Any = None,
) -> int:
    """A DuckDB table's rows (``where``) into the shared table of the same name; returns how many were read."""
    columns = [c for c, _ in duck_columns(con)[table]]
    rel = con.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE {where}", list(params))
    read = 0

    def rows() -> Iterator[Sequence[Any]]:
        nonlocal read
        while page := rel.fetchmany(20_000):  # streamed: a copy of a large table never sits in memory whole
            read += len(page)
            yield from page

    push(pg, table, columns, rows(), update=update, replace_run=replace_run, cur=cur)
    return read


def pull_into_duck(
    pg: Postgres,
    con: duckdb.DuckDBPyConnection,
    table: str,
    where: str = "true",
    params: Sequence[Any] = (),
    *,
    cur: Any = None,
    page: int = 20_000,
) -> int:
    """A shared table's rows (``where``, in PostgreSQL's SQL) into the DuckDB table of the same name, skipping rows
    DuckDB holds already (by ``KEYS``); returns how many were new."""
    columns = [c for c, _ in duck_columns(con)[table]]
    if cur is None:
        with pg.tx() as own:
            return pull_into_duck(pg, con, table, where, params, cur=own, page=page)
    cur.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE {where}", list(params))
    key = KEYS.get(table, ())
    added = 0
    while rows := cur.fetchmany(page):
        data = pa.table({c: pa.array([r[i] for r in rows]) for i, c in enumerate(columns)})
        staged = f"pulled_{table}"
        con.execute("SELECT 1").fetchall()
        con.register(staged, data)
        try:
            join = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in key) or "false"
            before = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
            con.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join('s.' + c for c in columns)} "
                f"FROM {staged} s WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {join})"
            )
            after = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
            added += int(after[0]) - int(before[0]) if after and before else 0
        finally:
            con.unregister(staged)
    return added
