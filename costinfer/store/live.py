"""A live status beside a DuckDB store, for reading while a run holds it.

DuckDB lets one process open a file for writing, and then no other process may open it at all: `runs` and `analyze`
in a second terminal would stop with exit 6 while a run goes. So the process that holds the store keeps a copy of
its history beside it (``store.duckdb.live``: runs, the ledger, sources, batches, pools, and the cache's counts),
written every ``INTERVAL_S`` seconds into a temporary file renamed over the last one, and removed when the store is
closed. A reading command that finds the store in use opens that copy instead when it is at most ``MAX_AGE_S``
seconds old, and says so. A copy is written only when the ledger or the runs changed since the last one.

A report needs one run's rows too, which are too many to copy every few seconds: the reader asks for them by leaving
a file (``store.duckdb.live.want-RUN``); the holder sees it within ``TICK_S``, writes that run's rows and the requests
and answers they name into ``store.duckdb.live.run-RUN``, and the reader takes them and removes the file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from costinfer.store.base import sql_str

INTERVAL_S = 2.0
FIRST_COPY_S = 1.0  # a command that holds the store for less writes no copy
MAX_AGE_S = 5.0
TICK_S = 0.2  # how often the holder looks for a reader's request of a run's rows
ROWS_WAIT_S = 30.0  # how long a reader waits for them
# A copy is written only where the disk keeps this much free beside it, and room for the store to grow as large again:
# on a nearly full disk the copy must not take the room the run's own answers need
COPY_MARGIN_BYTES = 64 << 20
# the history the reading commands ask about: the rest (rows, request bodies, answers) stays in the store
TABLES = ("schema_migrations", "runs", "calls", "run_sources", "batches", "batch_items", "budget_pools")
# one run's rows, and the requests and answers they name (its own, and those its rows borrow), written when asked
_NAMED = (
    "key IN (SELECT key FROM run_keys WHERE run_id = $run UNION SELECT answer_key FROM run_keys WHERE run_id = $run)"
)
RUN_TABLES = {
    "items": "run_id = $run",
    "rejects": "run_id = $run",
    "run_keys": "run_id = $run",
    "requests": _NAMED,
    "responses": _NAMED,
}
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def live_path(store: Path) -> Path:
    return store.with_name(store.name + ".live")


def want_path(store: Path, run_id: str) -> Path:
    return store.with_name(f"{store.name}.live.want-{run_id}")


def rows_path(store: Path, run_id: str) -> Path:
    return store.with_name(f"{store.name}.live.run-{run_id}")


class LiveStatus:
    """The holder's side: a thread writing the copy while the store is open."""

    def __init__(self, con: duckdb.DuckDBPyConnection, store: Path) -> None:
        self._con = con
        self._store = store
        self.path = live_path(store)
        self._stop = threading.Event()
        self._seen: tuple[Any, ...] | None = None
        self._thread = threading.Thread(target=self._loop, name="costinfer-live-status", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        due = time.monotonic() + FIRST_COPY_S
        while not self._stop.wait(TICK_S):
            with contextlib.suppress(duckdb.Error, OSError):
                self.answer_wants()
                if time.monotonic() >= due:
                    self.write()
                    due = time.monotonic() + INTERVAL_S

    def answer_wants(self) -> None:
        """The rows of each run a reader asked for (a report), written beside the store."""
        for want in self._store.parent.glob(f"{glob.escape(self._store.name)}.live.want-*"):
            run_id = want.name.rpartition(".live.want-")[2]
            if _RUN_ID.fullmatch(run_id):
                self.write_run(run_id)
            _discard(want)

    def write_run(self, run_id: str) -> None:
        target = rows_path(self._store, run_id)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        _discard(tmp)
        cur = self._con.cursor()
        try:
            cur.execute(f"ATTACH {sql_str(str(tmp))} AS run_copy")
            try:
                for table, where in RUN_TABLES.items():
                    cur.execute(
                        f"CREATE TABLE run_copy.{table} AS SELECT * FROM main.{table} "
                        f"WHERE {where.replace('$run', sql_str(run_id))}"
                    )
            finally:
                cur.execute("DETACH run_copy")
            os.replace(tmp, target)
        except BaseException:
            _discard(tmp)
            raise
        finally:
            cur.close()

    def write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        cur = self._con.cursor()
        try:
            if not self.room_for_copy():
                return
            mark = cur.execute(
                "SELECT (SELECT count(*) FROM calls), (SELECT max(finished_at) FROM calls), "
                "(SELECT count(*) FROM runs), (SELECT max(coalesce(finished_at, started_at)) FROM runs), "
                "(SELECT string_agg(status || coalesce(CAST(rows AS VARCHAR), ''), ',') FROM runs)"
            ).fetchall()[0]
            if mark == self._seen and self.path.exists():
                os.utime(self.path)  # nothing changed: the copy is still true, and says how fresh it is
                return
            _discard(tmp)
            cur.execute(f"ATTACH {sql_str(str(tmp))} AS live_copy")
            try:
                for table in TABLES:
                    cur.execute(f"CREATE TABLE live_copy.{table} AS SELECT * FROM main.{table}")
                cur.execute(
                    "CREATE TABLE live_copy.live_status AS SELECT "
                    f"{os.getpid()} AS pid, now() AS written_at, "
                    "(SELECT count(*) FROM responses) AS answers, "
                    "(SELECT coalesce(sum(cost_usd), 0) FROM responses) AS paid_usd, "
                    "(SELECT count(*) FROM requests) AS requests, (SELECT count(*) FROM embeddings) AS embeddings, "
                    "(SELECT count(*) FROM runs) AS runs, (SELECT min(created_at) FROM responses)::VARCHAR AS oldest, "
                    "(SELECT max(created_at) FROM responses)::VARCHAR AS newest"
                )
            finally:
                cur.execute("DETACH live_copy")
            os.replace(tmp, self.path)
            self._seen = mark
        except BaseException:
            _discard(tmp)  # a copy that failed half-way (a full disk) holds no room
            raise
        finally:
            cur.close()

    def room_for_copy(self) -> bool:
        """Whether the disk has room for a copy: the store's size again and ``COPY_MARGIN_BYTES`` free."""
        try:
            return shutil.disk_usage(self._store.parent).free >= self._store.stat().st_size + COPY_MARGIN_BYTES
        except OSError:
            return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        _discard(self.path)


def ask_for_run(store: Path, run_id: str, wait_s: float = ROWS_WAIT_S) -> Path | None:
    """Ask the process holding the store for one run's rows; the file they were written to, or None when it did not
    answer within ``wait_s`` (the caller removes the file once read)."""
    if not _RUN_ID.fullmatch(run_id):
        return None
    target = rows_path(store, run_id)
    _discard(target)  # an answer to an earlier reader: ask for today's rows
    want = want_path(store, run_id)
    want.write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            if target.exists():
                return target
            time.sleep(0.05)
        return None
    finally:
        _discard(want)


def fresh_copy(store: Path, wait_s: float = 0.0) -> tuple[Path, float] | None:
    """The live copy beside a store in use, and its age in seconds, when it is at most ``MAX_AGE_S`` old; waiting
    up to ``wait_s`` for one (a run that has just started writes its first copy after ``FIRST_COPY_S``)."""
    path = live_path(store)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            age = time.time() - path.stat().st_mtime
            if age <= MAX_AGE_S:
                return path, age
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
