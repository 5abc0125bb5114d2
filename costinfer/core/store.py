"""The DuckDB store: runs, their rows, the request bodies, the response cache and the ledger of calls.

One file, queryable with plain SQL (``docs/store.md`` lists the tables). The schema is versioned: each migration is a
named function, applied once, in order, and recorded in ``schema_migrations``. DuckDB lets one process at a time open a
file for writing; a second costinfer process waits up to ``wait_seconds`` and then stops with ``StoreBusyError``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from costinfer.core.errors import StoreBusyError, StoreError, WriteError

ENV_STORE = "COSTINFER_STORE"
ENV_MEMORY = "COSTINFER_DUCKDB_MEMORY"
DEFAULT_MEMORY = "1GB"
MONEY = pa.decimal128(38, 12)
_QUANTUM = Decimal("1e-12")


def default_store_path() -> Path:
    """``$COSTINFER_STORE``, else ``$XDG_DATA_HOME/costinfer/store.duckdb`` (``~/.local/share`` without XDG)."""
    env = os.environ.get(ENV_STORE)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "costinfer" / "store.duckdb"


# Every DuckDB database file has these bytes at offset 8 (its header's magic number)
_DUCKDB_MAGIC = b"DUCK"


def check_store_path(path: Path, *, create: bool = True) -> None:
    """A store path must be a DuckDB database file, or a new path (only where ``create`` allows making one)."""
    if path.is_dir():
        raise StoreError(f"--store {path}: is a folder; name a file such as {path / 'store.duckdb'}")
    if not path.exists():
        if not create:
            raise StoreError(f"--store {path}: no store there (nothing has run with it); check the path")
        return
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        raise StoreError(f"--store {path}: cannot be read: {exc.strerror}") from exc
    if head[8:12] != _DUCKDB_MAGIC:
        raise StoreError(
            f"--store {path}: is not a DuckDB database (it holds other data); costinfer will not use or overwrite "
            f"it. Pass a new path or an existing costinfer store; nothing was read or sent"
        )


def money(value: Decimal) -> Decimal:
    return value.quantize(_QUANTUM)


# --- migrations -------------------------------------------------------------------------------------------------


def _m1_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, fingerprint VARCHAR NOT NULL, status VARCHAR NOT NULL,
            input_path VARCHAR, input_format VARCHAR, provider VARCHAR, endpoint VARCHAR, model VARCHAR,
            budget_usd DECIMAL(38,12), options JSON, rows BIGINT, rejects BIGINT, distinct_keys BIGINT,
            ingested BOOLEAN NOT NULL DEFAULT false,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(), finished_at TIMESTAMPTZ, stop_reason VARCHAR);
        CREATE TABLE items (
            run_id VARCHAR NOT NULL, row_idx BIGINT NOT NULL, line BIGINT NOT NULL, row_id VARCHAR NOT NULL,
            key VARCHAR NOT NULL, metadata JSON);
        CREATE TABLE rejects (
            run_id VARCHAR NOT NULL, row_idx BIGINT NOT NULL, line BIGINT NOT NULL, row_id VARCHAR,
            field VARCHAR NOT NULL, reason VARCHAR NOT NULL);
        CREATE TABLE requests (
            key VARCHAR PRIMARY KEY, endpoint VARCHAR NOT NULL, model VARCHAR NOT NULL, body JSON NOT NULL,
            input_tokens INTEGER NOT NULL, max_tokens INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        CREATE TABLE run_keys (
            run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, first_idx BIGINT NOT NULL, n_rows BIGINT NOT NULL);
        CREATE TABLE responses (
            key VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, provider VARCHAR NOT NULL, model VARCHAR NOT NULL,
            response VARCHAR, finish_reason VARCHAR, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL, cost_usd DECIMAL(38,12) NOT NULL, latency_ms DOUBLE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        CREATE TABLE calls (
            run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, provider VARCHAR NOT NULL, model VARCHAR NOT NULL,
            status VARCHAR NOT NULL, attempts INTEGER NOT NULL, http_status INTEGER, error_class VARCHAR,
            error_message VARCHAR, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL, cost_usd DECIMAL(38,12) NOT NULL, latency_ms DOUBLE,
            finished_at TIMESTAMPTZ NOT NULL DEFAULT now());
        """
    )


def _m2_bounds_and_priority(con: duckdb.DuckDBPyConnection) -> None:
    # input_bound: the most input tokens a request can be billed for (the budget reserves it);
    # priority: with --on-over-budget partial, higher-priority rows run first.
    con.execute(
        """
        ALTER TABLE requests ADD COLUMN input_bound INTEGER;
        UPDATE requests SET input_bound = input_tokens;
        ALTER TABLE items ADD COLUMN priority INTEGER DEFAULT 0;
        ALTER TABLE run_keys ADD COLUMN priority INTEGER DEFAULT 0;
        """
    )


def _m3_semantic(con: duckdb.DuckDBPyConnection) -> None:
    # norm_key: the normalized tier's key; group_key: the request without its last user message, the only part the
    # semantic tier may differ in; sem_text: that message. run_keys gain where their answer comes from.
    con.execute(
        """
        ALTER TABLE requests ADD COLUMN norm_key VARCHAR;
        ALTER TABLE requests ADD COLUMN group_key VARCHAR;
        ALTER TABLE requests ADD COLUMN sem_text VARCHAR;
        ALTER TABLE run_keys ADD COLUMN answer_key VARCHAR;
        ALTER TABLE run_keys ADD COLUMN tier VARCHAR;
        ALTER TABLE run_keys ADD COLUMN similarity DOUBLE;
        CREATE TABLE embeddings (
            model VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, vector FLOAT[] NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        """
    )


_REQUEST_COLUMNS = "key, endpoint, model, body, input_tokens, max_tokens, input_bound, norm_key, group_key, sem_text"


def _m4_requests_without_primary_key(con: duckdb.DuckDBPyConnection) -> None:
    # The primary key's index cost 1.6 s per 200,000 inserted requests (benchmarks/plan_scale.py). Uniqueness is kept
    # by ingestion instead: a run's new requests are staged, then added with one anti-join when ingestion ends.
    con.execute(
        f"""
        CREATE TABLE requests_v4 (
            key VARCHAR NOT NULL, endpoint VARCHAR NOT NULL, model VARCHAR NOT NULL, body JSON NOT NULL,
            input_tokens INTEGER NOT NULL, max_tokens INTEGER NOT NULL, input_bound INTEGER, norm_key VARCHAR,
            group_key VARCHAR, sem_text VARCHAR, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        INSERT INTO requests_v4 ({_REQUEST_COLUMNS}, created_at) SELECT {_REQUEST_COLUMNS}, created_at FROM requests;
        DROP TABLE requests;
        ALTER TABLE requests_v4 RENAME TO requests;
        CREATE TABLE ingest_requests (
            run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, endpoint VARCHAR NOT NULL, model VARCHAR NOT NULL,
            body JSON NOT NULL, input_tokens INTEGER NOT NULL, max_tokens INTEGER NOT NULL, input_bound INTEGER,
            norm_key VARCHAR, group_key VARCHAR, sem_text VARCHAR);
        """
    )


def _m5_no_staging(con: duckdb.DuckDBPyConnection) -> None:
    # Ingestion stores new requests straight into `requests` (content-addressed: a key is stored once), in batches
    # large enough that DuckDB writes them once; the staging table wrote every body twice.
    con.execute("DROP TABLE ingest_requests")


def _m6_reasoning_tokens(con: duckdb.DuckDBPyConnection) -> None:
    # Reasoning models bill hidden reasoning tokens as output: the ledger and the cache keep them as a column of their
    # own (a part of output_tokens), so a report can tell thinking from answering.
    con.execute("ALTER TABLE calls ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0")
    con.execute("ALTER TABLE responses ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0")


_NEW_REQUEST_COLUMNS = "key, endpoint, model, body, input_tokens, max_tokens, input_bound, norm_key, group_key"

MIGRATIONS: list[tuple[int, str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    (1, "initial schema: runs, items, rejects, requests, run_keys, responses, calls", _m1_initial),
    (2, "requests.input_bound for the budget's worst case; row priority", _m2_bounds_and_priority),
    (3, "normalized and semantic tiers: request norm/group keys, run_keys answers, embeddings", _m3_semantic),
    (4, "requests without a primary key; ingestion staged in ingest_requests", _m4_requests_without_primary_key),
    (5, "ingestion stores requests directly; the staging table is dropped", _m5_no_staging),
    (6, "reasoning tokens in the ledger and the cache", _m6_reasoning_tokens),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


# --- values -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """The final result of one distinct request in a run: an answer, or an error after the retries."""

    key: str
    provider: str
    model: str
    attempts: int
    response: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # part of output_tokens
    cost_usd: Decimal = Decimal(0)
    latency_ms: float | None = None
    http_status: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    replaces: str | None = None  # a fallback answer: the key of the request it stands in for
    request_body: dict[str, Any] | None = None  # ... and the fallback request that was sent

    @property
    def ok(self) -> bool:
        return self.error_class is None


@dataclass(slots=True)
class Pending:
    key: str
    body: dict[str, Any]
    input_bound: int  # the most input tokens this request can be billed for
    max_tokens: int
    model: str
    input_tokens: int = 0  # the counted input tokens: what a provider's tokens-per-minute limit counts


_BUSY = re.compile(r"lock", re.IGNORECASE)


class Store:
    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self.con = con

    # --- opening ----------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path | None = None, *, wait_seconds: float = 0.0, read_only: bool = False, create: bool = True
    ) -> Store:
        """Open (or, with ``create``, make) the store. A path that holds anything but a DuckDB database is refused:
        DuckDB would open a JSON or CSV file as a view and keep the store in memory, so nothing would be saved."""
        path = (path or default_store_path()).expanduser()
        check_store_path(path, create=create)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the store's folder: {exc.strerror}") from exc
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if not _BUSY.search(str(exc)):
                    raise StoreError(f"{path}: cannot open the store: {exc}") from exc
                if time.monotonic() >= deadline:
                    holder = re.search(r"PID (\d+)", str(exc))
                    who = f" (pid {holder.group(1)})" if holder else ""
                    raise StoreBusyError(
                        f"{path}: the store is in use by another process{who}; wait for it to finish, pass "
                        f"--store-wait SECONDS to wait for it, or use another --store"
                    ) from exc
                time.sleep(0.2)
            except duckdb.Error as exc:
                raise StoreError(f"{path}: not a DuckDB file costinfer can open: {exc}") from exc
        # DuckDB draws a progress bar on stdout during long queries: it would corrupt `--json` output
        con.execute("SET enable_progress_bar = false")
        # DuckDB may otherwise take most of the machine's memory for large joins; past this it spills to disk
        con.execute(f"SET memory_limit = {_sql_str(os.environ.get(ENV_MEMORY, DEFAULT_MEMORY))}")
        store = cls(path, con)
        if not read_only:
            store.migrate()
        return store

    def migrate(self) -> None:
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: the store's schema is version {current}, newer than this costinfer knows "
                f"({SCHEMA_VERSION}); upgrade costinfer"
            )
        for version, name, apply in MIGRATIONS:
            if version <= current:
                continue
            self.con.execute("BEGIN TRANSACTION")
            try:
                apply(self.con)
                self.con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        row = self.con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs -------------------------------------------------------------------------------------------------

    def find_unfinished_run(self, fingerprint: str) -> dict[str, Any] | None:
        rel = self.con.execute(
            "SELECT * FROM runs WHERE fingerprint = ? AND status IN ('planned', 'running', 'stopped') "
            "ORDER BY started_at DESC LIMIT 1",
            [fingerprint],
        )
        return _one_dict(rel)

    def create_run(self, run_id: str, fingerprint: str, fields: dict[str, Any]) -> None:
        cols = ["run_id", "fingerprint", "status", *fields]
        marks = ", ".join("?" for _ in cols)
        self.con.execute(
            f"INSERT INTO runs ({', '.join(cols)}) VALUES ({marks})", [run_id, fingerprint, "running", *fields.values()]
        )

    def reset_ingest(self, run_id: str) -> None:
        """Forget a half-ingested run's rows so that ingestion can start over; responses and calls are kept."""
        for table in ("items", "rejects", "run_keys"):
            self.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])

    def set_run(self, run_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        self.con.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [*fields.values(), run_id])

    def run(self, run_id: str) -> dict[str, Any] | None:
        return _one_dict(self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]))

    # --- ingest -----------------------------------------------------------------------------------------------

    def add_chunk(self, run_id: str, items: pa.Table, requests: pa.Table | None, rejects: pa.Table | None) -> None:
        """Store chunks of rows in one transaction: their items, the request bodies not stored yet, their rejects.

        A row without an id (null ``row_id``) takes its position as its id. ``requests`` holds each key at most once;
        requests are content-addressed, so a key already stored (by an earlier batch or run) is not stored again."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            if items.num_rows:
                con.register("chunk_items", items)
                con.execute(
                    "INSERT INTO items (run_id, row_idx, line, row_id, key, metadata, priority) "
                    "SELECT $1, row_idx, line, coalesce(row_id, CAST(row_idx AS VARCHAR)), key, metadata, priority "
                    "FROM chunk_items",
                    [run_id],
                )
                con.unregister("chunk_items")
            if requests is not None and requests.num_rows:
                con.register("chunk_requests", requests)
                # a plain insert of what is not stored yet: with an anti-join or DISTINCT inside the INSERT, DuckDB
                # spent a third more CPU and twice as long checkpointing (benchmarks/plan_scale.py)
                stored = con.execute(
                    "SELECT key FROM requests WHERE key IN (SELECT key FROM chunk_requests)"
                ).fetchall()
                if stored:
                    known = pa.array([k for (k,) in stored], pa.string())
                    requests = requests.filter(pc.invert(pc.is_in(requests.column("key"), value_set=known)))
                    con.unregister("chunk_requests")
                    con.register("chunk_requests", requests)
                con.execute(
                    f"INSERT INTO requests ({_NEW_REQUEST_COLUMNS}) SELECT {_NEW_REQUEST_COLUMNS} FROM chunk_requests"
                )
                con.unregister("chunk_requests")
            if rejects is not None and rejects.num_rows:
                con.register("chunk_rejects", rejects)
                con.execute(
                    "INSERT INTO rejects (run_id, row_idx, line, row_id, field, reason) "
                    "SELECT $1, row_idx, line, CASE WHEN id_default THEN CAST(row_idx AS VARCHAR) ELSE row_id END, "
                    "field, reason FROM chunk_rejects",
                    [run_id],
                )
                con.unregister("chunk_rejects")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    def finish_ingest(self, run_id: str, id_field: str = "id") -> dict[str, int]:
        """Settle what spans chunks: a row repeating an earlier row's id becomes a reject; then the run's distinct
        requests (``run_keys``) and its counts."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        repeated = con.execute(
            "SELECT count(*) - count(DISTINCT row_id) FROM items WHERE run_id = ?", [run_id]
        ).fetchone()
        if repeated and repeated[0]:
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE repeated_ids AS
                SELECT row_idx, line, row_id FROM (
                    SELECT row_idx, line, row_id, row_number() OVER (PARTITION BY row_id ORDER BY row_idx) AS nth
                    FROM items WHERE run_id = $1)
                WHERE nth > 1
                """,
                [run_id],
            )
            con.execute(
                "INSERT INTO rejects (run_id, row_idx, line, row_id, field, reason) "
                "SELECT $1, row_idx, line, row_id, $2, format('duplicate id ''{}''', row_id) FROM repeated_ids",
                [run_id, id_field],
            )
            con.execute(
                "DELETE FROM items WHERE run_id = $1 AND row_idx IN (SELECT row_idx FROM repeated_ids)", [run_id]
            )
            con.execute("DROP TABLE repeated_ids")
        con.execute(
            "INSERT INTO run_keys (run_id, key, first_idx, n_rows, priority) "
            "SELECT run_id, key, min(row_idx), count(*), max(priority) FROM items WHERE run_id = ? "
            "GROUP BY run_id, key",
            [run_id],
        )
        counts = con.execute(
            "SELECT (SELECT count(*) FROM items WHERE run_id = $1), (SELECT count(*) FROM rejects WHERE run_id = $1), "
            "(SELECT count(*) FROM run_keys WHERE run_id = $1)",
            [run_id],
        ).fetchone()
        assert counts is not None
        rows, rejects, distinct = (int(c) for c in counts)
        con.execute(
            "UPDATE runs SET rows = ?, rejects = ?, distinct_keys = ?, ingested = true WHERE run_id = ?",
            [rows, rejects, distinct, run_id],
        )
        con.execute("COMMIT")
        return {"rows": rows, "rejects": rejects, "distinct": distinct}

    def rejects_count(self, run_id: str) -> int:
        row = self.con.execute("SELECT count(*) FROM rejects WHERE run_id = ?", [run_id]).fetchone()
        return int(row[0]) if row else 0

    def first_rejects(self, run_id: str, limit: int) -> list[dict[str, Any]]:
        rel = self.con.execute(
            "SELECT row_idx, line, row_id, field, reason FROM rejects WHERE run_id = ? ORDER BY row_idx LIMIT ?",
            [run_id, limit],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]

    def write_rejects(self, run_id: str, path: Path, input_path: str) -> int:
        """Write the run's rejects as JSONL (file, line, id, field, reason); returns how many."""
        row = self.con.execute("SELECT count(*) FROM rejects WHERE run_id = ?", [run_id]).fetchone()
        n = int(row[0]) if row else 0
        query = (
            f"SELECT {_sql_str(input_path)} AS file, line, row_id AS id, field, reason FROM rejects "
            f"WHERE run_id = {_sql_str(run_id)} ORDER BY row_idx"
        )
        _copy_atomically(self.con, query, path, "FORMAT JSON")
        return n

    # --- planning and execution -------------------------------------------------------------------------------

    def plan_counts(self, run_id: str) -> dict[str, Any]:
        """Rows, distinct requests, how many are answered already (cache, reuse tiers, earlier in this run) and what
        is left to send."""
        row = self.con.execute(
            """
            SELECT count(*) AS distinct_keys,
                   sum(rk.n_rows) AS rows,
                   coalesce(sum(rk.n_rows) FILTER (WHERE r.run_id <> $1), 0) AS cache_rows,
                   count(r.key) FILTER (WHERE r.run_id = $1) AS done_keys,
                   coalesce(sum(rk.n_rows) FILTER (WHERE rk.tier = 'normalized'), 0) AS normalized_rows,
                   coalesce(sum(rk.n_rows) FILTER (WHERE rk.tier = 'semantic'), 0) AS semantic_rows,
                   count(*) FILTER (WHERE r.key IS NULL AND rk.answer_key IS NULL) AS pending_keys
            FROM run_keys rk
            LEFT JOIN responses r ON r.key = rk.key
            WHERE rk.run_id = $1
            """,
            [run_id],
        )
        out = _one_dict(row) or {}
        return {k: int(v or 0) for k, v in out.items()}

    def pending(self, run_id: str, page: int = 2000) -> Iterator[list[Pending]]:
        """The run's distinct requests with no answer yet, in priority then input order, a page at a time.

        They are sorted once into a numbered temporary table (DuckDB spills it to disk past its memory bound), then
        read a numbered range at a time. Paging the run's requests with a keyset and LIMIT sorted them again for
        every page: 0.2 s a page at 1,000,000 requests; holding one streaming query open instead would keep a
        transaction open for the whole run and stop DuckDB from checkpointing its log meanwhile."""
        import orjson

        cur = self.con.cursor()  # the temporary table is this cursor's own
        try:
            cur.execute(
                """
                CREATE OR REPLACE TEMP TABLE pending_requests AS
                SELECT row_number() OVER (ORDER BY rk.priority DESC, rk.first_idx) AS n,
                       q.key, q.body, coalesce(q.input_bound, q.input_tokens) AS input_bound, q.max_tokens, q.model,
                       q.input_tokens
                FROM run_keys rk JOIN requests q ON q.key = rk.key
                WHERE rk.run_id = ? AND rk.answer_key IS NULL
                  AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.key = rk.key)
                ORDER BY n
                """,
                [run_id],
            )
            done = 0
            while rows := cur.execute(
                "SELECT key, body, input_bound, max_tokens, model, input_tokens FROM pending_requests "
                "WHERE n > ? AND n <= ? ORDER BY n",
                [done, done + page],
            ).fetchall():
                done += len(rows)
                yield [Pending(r[0], orjson.loads(r[1]), int(r[2]), int(r[3]), str(r[4]), int(r[5])) for r in rows]
            cur.execute("DROP TABLE pending_requests")
        finally:
            cur.close()

    def record(self, run_id: str, outcomes: list[Outcome], cursor: duckdb.DuckDBPyConnection | None = None) -> None:
        """Make a group of outcomes durable in one transaction: answers enter the cache, every call the ledger."""
        if not outcomes:
            return
        con = cursor or self.con
        n = len(outcomes)
        batch = pa.table(
            {
                "run_id": pa.array([run_id] * n, pa.string()),
                "key": pa.array([o.key for o in outcomes], pa.string()),
                "provider": pa.array([o.provider for o in outcomes], pa.string()),
                "model": pa.array([o.model for o in outcomes], pa.string()),
                "ok": pa.array([o.error_class is None for o in outcomes], pa.bool_()),
                "attempts": pa.array([o.attempts for o in outcomes], pa.int32()),
                "http_status": pa.array([o.http_status for o in outcomes], pa.int32()),
                "error_class": pa.array([o.error_class for o in outcomes], pa.string()),
                "error_message": pa.array([o.error_message for o in outcomes], pa.string()),
                "input_tokens": pa.array([o.input_tokens for o in outcomes], pa.int32()),
                "output_tokens": pa.array([o.output_tokens for o in outcomes], pa.int32()),
                "cached_tokens": pa.array([o.cached_tokens for o in outcomes], pa.int32()),
                "reasoning_tokens": pa.array([o.reasoning_tokens for o in outcomes], pa.int32()),
                # exact: Decimal -> text here, text -> DECIMAL(38,12) in SQL
                "cost_usd": pa.array([str(money(o.cost_usd)) for o in outcomes], pa.string()),
                "latency_ms": pa.array([o.latency_ms for o in outcomes], pa.float64()),
                "response": pa.array([o.response for o in outcomes], pa.string()),
                "finish_reason": pa.array([o.finish_reason for o in outcomes], pa.string()),
            }
        )
        try:
            self._record(con, run_id, batch, outcomes)
        except (duckdb.Error, OSError) as exc:
            raise WriteError(f"{self.path}: cannot save answers: {exc}") from exc

    def _record(self, con: duckdb.DuckDBPyConnection, run_id: str, batch: pa.Table, outcomes: list[Outcome]) -> None:
        con.execute("BEGIN TRANSACTION")
        try:
            con.register("outcome_batch", batch)
            con.execute(
                "INSERT INTO calls (run_id, key, provider, model, status, attempts, http_status, error_class, "
                "error_message, input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_usd, latency_ms) "
                "SELECT run_id, key, provider, model, CASE WHEN ok THEN 'ok' ELSE 'error' END, attempts, http_status, "
                "error_class, error_message, input_tokens, output_tokens, cached_tokens, reasoning_tokens, "
                "cost_usd::DECIMAL(38,12), latency_ms FROM outcome_batch"
            )
            con.execute(
                "INSERT INTO responses (key, run_id, provider, model, response, finish_reason, input_tokens, "
                "output_tokens, cached_tokens, reasoning_tokens, cost_usd, latency_ms) "
                "SELECT key, run_id, provider, model, response, finish_reason, input_tokens, output_tokens, "
                "cached_tokens, reasoning_tokens, cost_usd::DECIMAL(38,12), latency_ms FROM outcome_batch WHERE ok "
                "ON CONFLICT DO NOTHING"
            )
            con.unregister("outcome_batch")
            fallbacks = [o for o in outcomes if o.replaces and o.ok and o.request_body is not None]
            if fallbacks:
                import orjson

                for o in fallbacks:
                    assert o.request_body is not None
                    con.execute(
                        "INSERT INTO requests (key, endpoint, model, body, input_tokens, max_tokens, input_bound) "
                        "SELECT $1, q.endpoint, $2, $3, q.input_tokens, q.max_tokens, q.input_bound FROM requests q "
                        "WHERE q.key = $4 AND NOT EXISTS (SELECT 1 FROM requests WHERE key = $1) LIMIT 1",
                        [o.key, o.model, orjson.dumps(o.request_body).decode(), o.replaces],
                    )
                    con.execute(
                        "UPDATE run_keys SET answer_key = $1, tier = 'fallback' WHERE run_id = $2 AND key = $3",
                        [o.key, run_id, o.replaces],
                    )
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    # --- the cache ------------------------------------------------------------------------------------------

    def clear_cache(self) -> int:
        row = self.con.execute("SELECT count(*) FROM responses").fetchone()
        self.con.execute("BEGIN TRANSACTION")
        self.con.execute("DELETE FROM responses")
        self.con.execute("DELETE FROM embeddings")
        self.con.execute("COMMIT")
        return int(row[0]) if row else 0

    def prune_cache(self, days: int) -> int:
        cutoff = f"now() - INTERVAL {int(days)} DAY"
        row = self.con.execute(f"SELECT count(*) FROM responses WHERE created_at < {cutoff}").fetchone()
        self.con.execute("BEGIN TRANSACTION")
        self.con.execute(f"DELETE FROM responses WHERE created_at < {cutoff}")
        self.con.execute(f"DELETE FROM embeddings WHERE created_at < {cutoff}")
        self.con.execute("COMMIT")
        return int(row[0]) if row else 0

    def export_cache(self, path: Path, fmt: str = "json") -> int:
        """Every cached answer with its request, as ``fmt`` (json lines, csv or parquet), written atomically."""
        query = (
            "SELECT r.key, q.endpoint, r.model, q.body AS request, r.response, r.finish_reason, r.input_tokens, "
            "r.output_tokens, r.cost_usd, r.run_id, r.created_at FROM responses r JOIN requests q ON q.key = r.key "
            "ORDER BY r.created_at"
        )
        options = {"json": "FORMAT JSON", "csv": "FORMAT CSV, HEADER", "parquet": "FORMAT PARQUET"}[fmt]
        _copy_atomically(self.con, query, path, options)
        row = self.con.execute("SELECT count(*) FROM responses").fetchone()
        return int(row[0]) if row else 0

    def run_spend(self, run_id: str) -> Decimal:
        row = self.con.execute("SELECT coalesce(sum(cost_usd), 0) FROM calls WHERE run_id = ?", [run_id]).fetchone()
        return Decimal(row[0]) if row else Decimal(0)

    # --- results ----------------------------------------------------------------------------------------------

    def results_query(self, run_id: str, not_run_reason: str) -> str:
        rid = _sql_str(run_id)
        return f"""
            WITH last_error AS (
                SELECT key, arg_max(error_class || ': ' || coalesce(error_message, ''), finished_at) AS error
                FROM calls WHERE run_id = {rid} AND status = 'error' GROUP BY key),
            rows AS (
                SELECT i.row_idx, i.row_id, i.line, i.key, i.metadata, rk.first_idx, rk.tier, rk.similarity,
                       rk.answer_key, q.model AS requested_model, r.run_id AS answered_by, r.response, r.model,
                       r.provider, r.finish_reason, r.input_tokens, r.output_tokens, r.reasoning_tokens, r.cost_usd,
                       r.latency_ms,
                       e.error
                FROM items i
                JOIN run_keys rk ON rk.run_id = i.run_id AND rk.key = i.key
                JOIN requests q ON q.key = i.key
                LEFT JOIN responses r ON r.key = coalesce(rk.answer_key, i.key)
                LEFT JOIN last_error e ON e.key = coalesce(rk.answer_key, i.key)
                WHERE i.run_id = {rid}),
            lenders AS (  -- the row whose answer a reused row got: in this run, else in the run that paid
                SELECT rk.key, min_by(i.row_id, i.row_idx) AS row_id
                FROM run_keys rk JOIN items i ON i.run_id = rk.run_id AND i.key = rk.key
                WHERE rk.key IN (SELECT answer_key FROM rows WHERE answer_key IS NOT NULL)
                  AND (rk.run_id = {rid}
                       OR rk.run_id = (SELECT run_id FROM responses WHERE responses.key = rk.key))
                GROUP BY rk.key)
            SELECT rows.row_id AS id, row_idx AS "row", response, coalesce(model, requested_model) AS model,
                   provider,
                   CASE WHEN answered_by IS NULL THEN NULL
                        WHEN tier IS NOT NULL THEN tier
                        WHEN answered_by <> {rid} THEN 'cache'
                        WHEN row_idx = first_idx THEN 'fresh' ELSE 'duplicate' END AS source,
                   input_tokens, output_tokens, reasoning_tokens,
                   CASE WHEN answered_by = {rid} AND row_idx = first_idx AND coalesce(tier, 'fallback') = 'fallback'
                        THEN cost_usd
                        WHEN answered_by IS NULL THEN NULL ELSE 0 END::DECIMAL(38,12) AS cost_usd,
                   CASE WHEN answered_by = {rid} AND coalesce(tier, 'fallback') = 'fallback' THEN latency_ms
                        WHEN answered_by IS NULL THEN NULL ELSE 0 END AS latency_ms,
                   finish_reason,
                   CASE WHEN answered_by IS NOT NULL THEN NULL
                        ELSE coalesce(error, {_sql_str(not_run_reason)}) END AS error,
                   CASE WHEN tier IS NOT NULL THEN similarity END AS similarity,
                   l.row_id AS reused_from,
                   metadata, rows.key
            FROM rows LEFT JOIN lenders l ON l.key = rows.answer_key
            ORDER BY row_idx
        """

    def reuse_by_source(self, run_id: str) -> list[tuple[str, str, int, int, int]]:
        """(source, model, rows, input tokens, output tokens) of the rows answered without a call of their own."""
        rows = self.con.execute(
            f"""
            WITH res AS ({self.results_query(run_id, "not_run")})
            SELECT res.source, q.model, count(*), sum(q.input_tokens), sum(coalesce(res.output_tokens, 0))
            FROM res JOIN requests q ON q.key = res.key
            WHERE res.source IN ('duplicate', 'cache', 'normalized', 'semantic')
            GROUP BY ALL
            """
        ).fetchall()
        return [(str(a), str(b), int(c), int(d), int(e)) for a, b, c, d, e in rows]

    def write_results(self, run_id: str, path: Path, fmt: str, not_run_reason: str) -> None:
        """Write one row per good input row, in input order, atomically (a temporary file, then a rename)."""
        options = "FORMAT PARQUET" if fmt == "parquet" else "FORMAT JSON"
        _copy_atomically(self.con, self.results_query(run_id, not_run_reason), path, options)

    def summary(self, run_id: str) -> dict[str, Any]:
        rid = _sql_str(run_id)
        row = self.con.execute(
            f"""
            WITH res AS ({self.results_query(run_id, "not_run")})
            SELECT count(*) AS rows,
                   count(*) FILTER (WHERE source = 'fresh') AS fresh,
                   count(*) FILTER (WHERE source = 'duplicate') AS duplicates,
                   count(*) FILTER (WHERE source = 'cache') AS cache_hits,
                   count(*) FILTER (WHERE source = 'normalized') AS normalized,
                   count(*) FILTER (WHERE source = 'semantic') AS semantic,
                   count(*) FILTER (WHERE source = 'fallback') AS fallback,
                   count(*) FILTER (WHERE error IS NOT NULL AND error <> 'not_run') AS failed,
                   count(*) FILTER (WHERE error = 'not_run') AS not_run,
                   (SELECT count(*) FROM rejects WHERE run_id = {rid}) AS rejects,
                   (SELECT count(*) FROM calls WHERE run_id = {rid}) AS run_calls,
                   (SELECT coalesce(sum(input_tokens), 0) FROM calls WHERE run_id = {rid}) AS input_tokens,
                   (SELECT coalesce(sum(output_tokens), 0) FROM calls WHERE run_id = {rid}) AS output_tokens,
                   (SELECT coalesce(sum(reasoning_tokens), 0) FROM calls WHERE run_id = {rid}) AS reasoning_tokens,
                   (SELECT coalesce(sum(cost_usd), 0) FROM calls WHERE run_id = {rid}) AS run_cost_usd
            FROM res
            """
        )
        out = _one_dict(row) or {}
        return out


def _copy_atomically(con: duckdb.DuckDBPyConnection, query: str, path: Path, options: str) -> None:
    """``COPY (query) TO path``: into a temporary file beside it, then renamed over it, so a reader never sees half a
    file and a failed write (a full disk) leaves the old file whole and no temporary one behind. Raises ``OSError``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        con.execute(f"COPY ({query}) TO {_sql_str(str(tmp))} ({options})")
        os.replace(tmp, path)
    except duckdb.Error as exc:
        raise OSError(f"{exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _one_dict(rel: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    row = rel.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in rel.description], row, strict=True))


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
