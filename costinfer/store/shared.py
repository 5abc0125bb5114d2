"""A store a team shares: ``--store postgresql://...``.

PostgreSQL holds what runs share: the runs, the response cache and the requests it answers, the ledger of calls, the
embeddings, provider batch jobs, budget pools and the claims that make each distinct request paid once across
processes and machines. Each process works on a private DuckDB file beside it (the same ``Store`` the embedded
default is, in a temporary folder removed at the end): ingestion, reuse, routing and the plan run there at DuckDB's
speed, after the answers the shared store already holds for the run's requests are copied in. What a run pays is
written to PostgreSQL before it counts (and before the private copy), so a process that dies loses nothing paid; its
working set (rows, distinct requests, sources) is written when the run settles its account. A reading command
(``runs``, ``analyze``, ``report``...) copies the shared history into an in-memory DuckDB and asks it the usual
questions: PostgreSQL's own concurrency lets it read while runs write.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from costinfer.errors import StoreError
from costinfer.store.base import Outcome
from costinfer.store.claims import lease_seconds
from costinfer.store.outcomes import AnswerReader, Writer
from costinfer.store.postgres import (
    KEYS,
    PER_RUN,
    Postgres,
    duck_columns,
    pull_into_duck,
    push_from_duck,
)
from costinfer.store.schema import SCHEMA_VERSION
from costinfer.store.shared_claiming import Coordination
from costinfer.store.shared_ledger import SharedAnswerReader, share_outcomes
from costinfer.store.shared_parts import SharedParts
from costinfer.store.shared_pool import same_tx
from costinfer.store.store import Store

# what a reading command copies: the history; a run's rows and the cache are copied when a command asks for them
_HISTORY = ("runs", "calls", "run_sources", "batches", "batch_items", "budget_pools")
_CHUNK = 5000
LIVE_OWNER = f"{socket.gethostname()}:{os.getpid()}"  # who runs a run now: a rerun on this machine knows it died


def _gone(owner: str | None) -> bool:
    """A run's process on this machine that no longer exists (killed): its run may be resumed at once."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SharedStore(Coordination, SharedParts, Store):
    pg: Postgres
    owner: str
    _workdir: Path | None
    _heartbeat: threading.Thread | None
    _stop: threading.Event
    _runs: set[str]
    _lease: float
    _tagged: dict[str, bool]

    @classmethod
    def open_shared(cls, url: str, *, read_only: bool = False) -> SharedStore:
        pg = Postgres(url)
        try:
            if read_only:
                workdir = None
                store = cls._adopt(Store.memory(), pg, None)
                pg.ensure_schema(duck_columns(store._con), SCHEMA_VERSION)
                for table in _HISTORY:
                    pull_into_duck(pg, store._con, table)
                return store
            workdir = Path(tempfile.mkdtemp(prefix="costinfer-shared-"))
            local = Store.open(workdir / "work.duckdb", live=False)
            store = cls._adopt(local, pg, workdir)
            pg.ensure_schema(duck_columns(store._con), SCHEMA_VERSION)
            store._start_heartbeat()
            return store
        except BaseException:
            pg.close()
            raise

    @classmethod
    def _adopt(cls, local: Store, pg: Postgres, workdir: Path | None) -> SharedStore:
        store = cls.__new__(cls)
        Store.__init__(store, local.path, local._con)
        store.path = pg.name  # type: ignore[assignment]  # what messages name: the URL without its password
        store.pg = pg
        store.owner = uuid.uuid4().hex
        store._workdir = workdir
        store._heartbeat = None
        store._stop = threading.Event()
        store._runs = set()
        store._tagged = {}
        store._lease = lease_seconds()
        return store

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of the private copy for one block (a DuckDB connection is not shared across threads)."""
        cur = self._con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    # --- liveness: claims, pool holds and the runs this process runs, renewed while it lives

    def _start_heartbeat(self) -> None:
        self._heartbeat = threading.Thread(target=self._beat, name="costinfer-store-lease", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                self.keep_alive()
            except StoreError:
                continue  # the next beat tries again; a lease lapses only after three misses

    def keep_alive(self) -> None:
        """Renew this process's leases; claims are locked in key order (as every claim statement does), so that two
        processes never wait on each other's claims in a circle."""
        lease, owner = self._lease, self.owner

        def claims(cur: Any) -> None:
            cur.execute(
                "UPDATE claims SET lease_until = greatest(lease_until, now() + %s * interval '1 second') WHERE key IN "
                "(SELECT key FROM claims WHERE owner = %s AND NOT done ORDER BY key FOR UPDATE)",
                [lease, owner],
            )

        def holds(cur: Any) -> None:
            cur.execute(
                "UPDATE pool_holds SET lease_until = now() + %s * interval '1 second' WHERE owner = %s",
                [lease, owner],
            )
            if self._runs:
                cur.execute(
                    "UPDATE runs SET live_until = now() + %s * interval '1 second' WHERE run_id = ANY(%s)",
                    [lease, sorted(self._runs)],
                )

        self.pg.retrying(claims)
        self.pg.retrying(holds)

    # --- runs: their records live in PostgreSQL

    def _sync_run(self, run_id: str, cur: Any = None) -> None:
        push_from_duck(self.pg, self._con, "runs", "run_id = ?", [run_id], update=True, cur=cur)
        with self.pg.tx() if cur is None else same_tx(cur) as c:
            c.execute(
                "UPDATE runs SET live_until = now() + %s * interval '1 second', live_owner = %s WHERE run_id = %s",
                [self._lease, LIVE_OWNER, run_id],
            )

    def find_unfinished_run(self, fingerprint: str) -> dict[str, Any] | None:
        """The latest unfinished run of this fingerprint that no live process runs (its lease lapsed, or its process
        on this machine is gone), taken in one transaction so that two commands never resume the same run; its
        record and what it paid are copied here (its rows are read again: they lived in the process that ran it)."""
        with self.pg.tx() as cur:
            cur.execute(
                "SELECT run_id, live_until IS NULL OR live_until < now(), live_owner FROM runs "
                "WHERE fingerprint = %s AND status IN ('planned', 'running', 'stopped') "
                "ORDER BY started_at DESC FOR UPDATE SKIP LOCKED",
                [fingerprint],
            )
            found = next((str(r[0]) for r in cur.fetchall() if r[1] or _gone(r[2])), None)
            if found is None:
                return None
            run_id = found
            cur.execute(
                "UPDATE runs SET live_until = now() + %s * interval '1 second', live_owner = %s WHERE run_id = %s",
                [self._lease, LIVE_OWNER, run_id],
            )
            pull_into_duck(self.pg, self._con, "runs", "run_id = %s", [run_id], cur=cur)
            pull_into_duck(self.pg, self._con, "calls", "run_id = %s", [run_id], cur=cur)
        self._con.execute("UPDATE runs SET ingested = false WHERE run_id = ?", [run_id])
        self._runs.add(run_id)
        self._sync_run(run_id)
        return super().find_unfinished_run(fingerprint)

    def create_run(self, run_id: str, fingerprint: str, fields: dict[str, Any]) -> None:
        super().create_run(run_id, fingerprint, fields)
        self._runs.add(run_id)
        self._sync_run(run_id)

    def set_run(self, run_id: str, **fields: Any) -> None:
        super().set_run(run_id, **fields)
        self._sync_run(run_id)

    def keep_plan(self, run_id: str, plan: dict[str, Any]) -> None:
        super().keep_plan(run_id, plan)
        self._sync_run(run_id)

    def remember_batch(self, run_id: str, batch: float) -> None:
        super().remember_batch(run_id, batch)
        self._sync_run(run_id)

    # --- what the shared store already knows, copied in once the run's requests are known

    def finish_ingest(self, run_id: str, id_field: str = "id") -> dict[str, int]:
        counts = super().finish_ingest(run_id, id_field)
        self.copy_in_answers(run_id)
        # the run's requests, before anything is paid for them: an answer in the shared cache always has its request
        # (what another machine's reuse tiers borrow, what `cache export` and `store copy` carry), even after a crash
        push_from_duck(self.pg, self._con, "requests", "key IN (SELECT key FROM run_keys WHERE run_id = ?)", [run_id])
        self._sync_run(run_id)
        return counts

    def copy_in_answers(self, run_id: str) -> None:
        """The shared answers to the run's requests, and the answered requests its normalized and semantic tiers may
        borrow from (same normalized key, same group), with their answers."""
        con = self._con
        keys = [k for (k,) in con.execute("SELECT key FROM run_keys WHERE run_id = ?", [run_id]).fetchall()]
        norms = [
            k
            for (k,) in con.execute(
                "SELECT DISTINCT q.norm_key FROM run_keys rk JOIN requests q USING (key) "
                "WHERE rk.run_id = ? AND q.norm_key IS NOT NULL",
                [run_id],
            ).fetchall()
        ]
        groups = [
            k
            for (k,) in con.execute(
                "SELECT DISTINCT q.group_key FROM run_keys rk JOIN requests q USING (key) "
                "WHERE rk.run_id = ? AND q.group_key IS NOT NULL",
                [run_id],
            ).fetchall()
        ]
        with self.pg.tx() as cur:
            for part in _chunks(keys):
                pull_into_duck(self.pg, con, "responses", "key = ANY(%s)", [part], cur=cur)
            answered = "EXISTS (SELECT 1 FROM responses r WHERE r.key = requests.key)"
            for name, values in (("norm_key", norms), ("group_key", groups)):
                for part in _chunks(values):
                    pull_into_duck(self.pg, con, "requests", f"{name} = ANY(%s) AND {answered}", [part], cur=cur)
                    pull_into_duck(
                        self.pg,
                        con,
                        "responses",
                        f"key IN (SELECT key FROM requests WHERE {name} = ANY(%s))",
                        [part],
                        cur=cur,
                    )

    # --- outcomes: into PostgreSQL first (durable, and claims marked done), then this process's copy

    def record(self, run_id: str, outcomes: list[Outcome], tagged: bool = False) -> None:
        self.share_outcomes(run_id, outcomes)
        super().record(run_id, outcomes, tagged)

    def writer(self, tagged: bool = False) -> Writer:
        return SharedWriter(self, super().writer(tagged))

    def answer_reader(self) -> AnswerReader:
        return SharedAnswerReader(self.pg, self._con.cursor())

    def share_outcomes(self, run_id: str, outcomes: list[Outcome], cur: Any = None) -> None:
        """What a group of outcomes paid, into PostgreSQL (ledger, cache, answered requests, claims done)."""
        if not any(not o.cached for o in outcomes):
            return
        if cur is None:
            self.pg.retrying(lambda own: self.share_outcomes(run_id, outcomes, own))
            return
        with self._cursor() as local:
            if run_id not in self._tagged:  # the calls' tags come from the run's rows: only when they have any
                found = local.execute("SELECT 1 FROM items WHERE run_id = ? AND tag IS NOT NULL LIMIT 1", [run_id])
                self._tagged[run_id] = bool(found.fetchall())
            share_outcomes(self.pg, local, self.owner, run_id, outcomes, cur, self._tagged[run_id])

    # --- a run's working set, written when its account is settled

    def save_run_sources(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        super().save_run_sources(run_id, rows)
        self.share_working_set(run_id)

    def share_working_set(self, run_id: str) -> None:
        with self.pg.tx() as cur:
            for table in PER_RUN:
                push_from_duck(self.pg, self._con, table, "run_id = ?", [run_id], replace_run=run_id, cur=cur)
            # the requests lent by a fallback model (made while calling): the run's own went in with its rows
            push_from_duck(
                self.pg, self._con, "requests", "key IN (SELECT key FROM responses WHERE run_id = ?)", [run_id], cur=cur
            )
            self._sync_run(run_id, cur)

    def attribute_cost(self, run_id: str, since: datetime.datetime, model: str, total_usd: Decimal) -> None:
        super().attribute_cost(run_id, since, model, total_usd)
        with self.pg.tx() as cur:
            cur.execute(
                "DELETE FROM calls WHERE run_id = %s AND model = %s AND finished_at >= %s", [run_id, model, since]
            )
            push_from_duck(self.pg, self._con, "calls", "run_id = ? AND model = ?", [run_id, model], cur=cur)
            push_from_duck(
                self.pg, self._con, "responses", "run_id = ? AND model = ?", [run_id, model], update=True, cur=cur
            )

    # --- the end

    def close(self) -> None:
        self._stop.set()
        try:
            if self._workdir is not None:
                for run_id in self._runs:
                    with suppress(StoreError):
                        self._sync_run(run_id)
                with self.pg.tx() as cur:  # nothing of this process's lives on: let others take it now
                    cur.execute("UPDATE runs SET live_until = NULL WHERE run_id = ANY(%s)", [list(self._runs)])
                self.release_claims()
        finally:
            super().close()
            self.pg.close()
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)


class SharedWriter(Writer):
    """The executor's writer on a shared store: each group of outcomes into PostgreSQL and into the private copy at
    once (each on a thread of its own: libpq and DuckDB both work outside the GIL); the group counts when both are
    done."""

    def __init__(self, store: SharedStore, local: Writer) -> None:
        self._store = store
        self._local = local
        self._beside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="costinfer-private-copy")

    def record(self, run_id: str, outcomes: list[Outcome]) -> None:
        local = self._beside.submit(self._local.record, run_id, outcomes)
        try:
            self._store.share_outcomes(run_id, outcomes)
        finally:
            local.result()

    def close(self) -> None:
        self._beside.shutdown(wait=True)
        self._local.close()


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


__all__ = ["KEYS", "SharedStore"]
