"""The DuckDB store: opening it (one writer process at a time), its schema, and the parts that own its SQL.

One file, queryable with plain SQL (``docs/store.md`` lists the tables). The connection is private to this package:
every other module calls a named method, and each rule (what is unanswered, what a result row is, what is stored
once) is written in one place. DuckDB lets one process at a time open a file for writing; a second costinfer process
waits up to ``wait_seconds`` and then stops with ``StoreBusyError``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from costinfer.errors import StoreBusyError, StoreError
from costinfer.store.base import DEFAULT_MEMORY, ENV_MEMORY, check_store_path, default_store_path, sql_str, transaction
from costinfer.store.batch_jobs import BatchesPart
from costinfer.store.budget_pools import PoolsPart
from costinfer.store.cache import CachePart
from costinfer.store.dataset import IngestPart, RunsPart
from costinfer.store.gpu_time import GpuPart
from costinfer.store.history import HistoryPart
from costinfer.store.learned_routes import LearnedRoutesPart
from costinfer.store.live import (
    FIRST_COPY_S,
    MAX_AGE_S,
    ROWS_WAIT_S,
    RUN_TABLES,
    LiveStatus,
    ask_for_run,
    fresh_copy,
)
from costinfer.store.live import TABLES as LIVE_TABLES
from costinfer.store.outcomes import OutcomesPart
from costinfer.store.planning import PlanningPart
from costinfer.store.postgres import is_url
from costinfer.store.results import ResultsPart
from costinfer.store.reuse import ReusePart
from costinfer.store.routing import RoutingPart
from costinfer.store.schema import MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    from costinfer.store.claims import SharedClaims

_BUSY = re.compile(r"lock", re.IGNORECASE)


class Store(
    RunsPart,
    IngestPart,
    ReusePart,
    RoutingPart,
    LearnedRoutesPart,
    PlanningPart,
    OutcomesPart,
    ResultsPart,
    CachePart,
    HistoryPart,
    BatchesPart,
    GpuPart,
    PoolsPart,
):
    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self._con = con

    @classmethod
    def open(
        cls,
        path: Path | str | None = None,
        *,
        wait_seconds: float = 0.0,
        read_only: bool = False,
        create: bool = True,
        on_wait: Callable[[str], None] | None = None,
        live_ok: bool = False,
        live: bool = True,
    ) -> Store:
        """Open (or, with ``create``, make) the store. A path that holds anything but a DuckDB database is refused:
        DuckDB would open a JSON or CSV file as a view and keep the store in memory, so nothing would be saved.

        A ``postgresql://`` URL (here or in ``$COSTINFER_STORE``) opens the shared store (``store.shared``): for
        working (``create``), a private DuckDB copy beside PostgreSQL; for reading (``create=False``), the shared
        history copied into memory.

        ``live_ok`` (a reading command): a store another process holds is read from the live copy that process
        keeps beside it (``store.live``), when that copy is fresh; the store's ``note`` says so. ``live``: a store
        opened for writing keeps that copy while it is open (not for a private working copy)."""
        location = path if path is not None else default_store_path()
        if is_url(location):  # the package sets the opener (store/__init__.py): this module does not import it
            return Store.open_shared_store(str(location), not create or read_only)
        path = Path(location).expanduser()
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
                holder = re.search(r"PID (\d+)", str(exc))
                who = f" (pid {holder.group(1)})" if holder else ""
                if time.monotonic() >= deadline:
                    if live_ok and (copy := fresh_copy(path, wait_s=FIRST_COPY_S + 2)) is not None:
                        return LiveStore.of(path, *copy, who)
                    raise StoreBusyError(
                        f"{path}: the store is in use by another process{who}; wait for it to finish, pass "
                        f"--store-wait SECONDS to wait for it, or use another --store"
                    ) from exc
                if on_wait is not None:
                    on_wait(f"waiting up to {wait_seconds:g}s for the store {path}, in use by another process{who}")
                    on_wait = None  # once
                time.sleep(0.2)
            except duckdb.Error as exc:
                raise StoreError(f"{path}: not a DuckDB file costinfer can open: {exc}") from exc
        # DuckDB draws a progress bar on stdout during long queries: it would corrupt `--json` output
        con.execute("SET enable_progress_bar = false")
        # DuckDB may otherwise take most of the machine's memory for large joins; past this it spills to disk
        memory = os.environ.get(ENV_MEMORY, DEFAULT_MEMORY)
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", memory, re.IGNORECASE):
            con.close()
            raise StoreError(f"{ENV_MEMORY}={memory!r}: give an amount of memory such as 512MB or 2GB")
        con.execute(f"SET memory_limit = {sql_str(memory)}")
        store = cls(path, con)
        if not read_only:
            store.migrate()
            if live:
                store._live = LiveStatus(con, path)
        return store

    open_shared_store: Callable[[str, bool], Store]

    @classmethod
    def memory(cls) -> Store:
        """A store that lives in this process's memory only: for a stage's own tests and throwaway work."""
        con = duckdb.connect(":memory:")
        con.execute("SET enable_progress_bar = false")
        store = cls(Path(":memory:"), con)
        store.migrate()
        return store

    def migrate(self) -> None:
        con = self._con
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: the store's schema is version {current}, newer than this costinfer knows "
                f"({SCHEMA_VERSION}); upgrade costinfer"
            )
        for version, name, apply in MIGRATIONS:
            if version <= current:
                continue
            with transaction(con):
                apply(con)
                con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])

    def schema_version(self) -> int:
        row = self._con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def claims(self, run_id: str) -> SharedClaims | None:
        """The claims a run takes before calling: None here, where one process at a time holds the store."""
        return None

    def copy_run_rows(self, run_id: str) -> None:
        """Before reading one run's rows: they are here already (a shared store copies them in)."""

    _live: LiveStatus | None = None
    note: str | None = None  # what a reading command says about where its answer comes from (a live copy)

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiveStore(Store):
    """A store another process holds, read from the live copy it keeps beside it: its history (runs, the ledger,
    sources, batches, pools) as of a few seconds ago, in memory. A run's rows (for its report) are asked of the
    holder when needed."""

    live_stats: dict[str, Any]

    @classmethod
    def of(cls, path: Path, copy: Path, age: float, who: str) -> LiveStore:
        base = Store.memory()
        store = cls(path, base._con)
        con = store._con
        con.execute(f"ATTACH {sql_str(str(copy))} AS live_copy (READ_ONLY)")
        try:
            for table in LIVE_TABLES[1:]:
                con.execute(f"INSERT INTO main.{table} BY NAME SELECT * FROM live_copy.{table}")
            rel = con.execute("SELECT * FROM live_copy.live_status")
            row = rel.fetchall()[0]
            stats = dict(zip([d[0] for d in rel.description], row, strict=True))
        finally:
            con.execute("DETACH live_copy")
        store.live_stats = stats
        store.note = (
            f"the store {path} is in use by a run{who}: this is its live status, written {age:.1f} s ago "
            f"(at most {MAX_AGE_S:g} s old)"
        )
        return store

    def cache_stats(self) -> dict[str, Any]:
        s = self.live_stats
        keys = ("answers", "paid_usd", "requests", "embeddings", "runs", "oldest", "newest")
        return {k: s[k] for k in keys}

    def copy_run_rows(self, run_id: str) -> None:
        copy = ask_for_run(self.path, run_id)
        if copy is None:
            raise StoreBusyError(
                f"{self.path}: the store is in use by a run that did not hand over run {run_id[:12]}'s rows within "
                f"{ROWS_WAIT_S:g} s; rebuild the report when it ends (`costinfer report {run_id[:12]}`), or pass "
                "--store-wait SECONDS"
            )
        con = self._con
        try:
            con.execute(f"ATTACH {sql_str(str(copy))} AS run_copy (READ_ONLY)")
            try:
                for table in RUN_TABLES:
                    con.execute(f"INSERT INTO main.{table} BY NAME SELECT * FROM run_copy.{table}")
            finally:
                con.execute("DETACH run_copy")
        finally:
            copy.unlink(missing_ok=True)
