"""Runs and what ingestion writes: the run's record, its rows (items), the distinct request bodies, its rejects.

Requests are content-addressed: a key is stored once, whichever chunk, batch or run brought it first (``add_chunk``
is the one place that decides it). ``finish_ingest`` settles what spans chunks: repeated ids and the run's distinct
requests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from costinfer.store.base import Part, copy_atomically, one_dict, reading_mode, registered, sql_str, transaction
from costinfer.store.known_keys import KnownKeys, digests

# A dataset's first writes find the keys already stored with a scan of ``requests`` each; later ones look them up in
# memory, in the keys read once (``known_keys``). A scan and the read cost about the same, so a small dataset beside
# a large store reads no more than two scans' worth, and a large one reads the store once, not once a write.
SCANNED_WRITES = 2
_NEW_REQUEST_COLUMNS = "key, endpoint, model, body, input_tokens, max_tokens, input_bound, norm_key, group_key"
# The models a run's requests name or were sent to. Not a join ``ON q.key = rk.key OR q.key = rk.answer_key``: DuckDB
# runs an OR of equalities as a nested-loop join, which had not finished after 10 minutes (20 CPU-minutes) on a run of
# 1,000,000 requests picked up again; as one list of keys, 0.1-0.2 s
RUN_MODELS = """
    SELECT DISTINCT q.model FROM requests q WHERE q.key IN (
        SELECT key FROM run_keys WHERE run_id = $1
        UNION ALL SELECT answer_key FROM run_keys WHERE run_id = $1 AND answer_key IS NOT NULL)
"""


class RunsPart(Part):
    def find_unfinished_run(self, fingerprint: str) -> dict[str, Any] | None:
        rel = self._con.execute(
            "SELECT * FROM runs WHERE fingerprint = ? AND status IN ('planned', 'running', 'stopped') "
            "ORDER BY started_at DESC LIMIT 1",
            [fingerprint],
        )
        return one_dict(rel)

    def create_run(self, run_id: str, fingerprint: str, fields: dict[str, Any]) -> None:
        cols = ["run_id", "fingerprint", "status", *fields]
        marks = ", ".join("?" for _ in cols)
        self._con.execute(
            f"INSERT INTO runs ({', '.join(cols)}) VALUES ({marks})", [run_id, fingerprint, "running", *fields.values()]
        )

    def set_run(self, run_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        self._con.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [*fields.values(), run_id])

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row (docs/store.md, ``runs``), its plan decoded."""
        row = one_dict(self._con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]))
        if row is not None:
            row["plan"] = orjson.loads(row["plan"]) if row.get("plan") else {}
        return row

    def keep_plan(self, run_id: str, plan: dict[str, Any]) -> None:
        """The plan as it was made, kept with the run: its report sets it beside the outcome."""
        self._con.execute(
            "UPDATE runs SET plan = ? WHERE run_id = ?", [orjson.dumps(plan, default=str).decode(), run_id]
        )

    def run_models(self, run_id: str) -> list[str]:
        """The models a run's distinct requests name, and those they were sent to instead (routed, escalated, the
        fallback model)."""
        rows = self._con.execute(RUN_MODELS, [run_id]).fetchall()
        return sorted(str(model) for (model,) in rows)


class IngestPart(Part):
    _known: KnownKeys | None = None  # the stored requests' keys, while a dataset is read (``add_chunk``)
    _scans = 0  # the writes of this dataset that found stored keys by a scan

    def reset_ingest(self, run_id: str) -> None:
        """Forget a half-ingested run's rows so that ingestion can start over; responses and calls are kept. Reading
        starts: DuckDB's memory is bounded lower until ``finish_ingest``, as the ingest workers need room too."""
        reading_mode(self._con, reading=True)
        self._known, self._scans = None, 0
        for table in ("items", "rejects", "run_keys", "route_learned"):
            self._con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])

    def share_cores(self, processes: int) -> None:
        """Leave a core to each of ``processes`` other processes (ingestion's workers) until ``finish_ingest``:
        DuckDB runs on the cores left, at least one. With every core its own, DuckDB's threads stored the chunks in
        parallel while the workers wanted the same cores: a plan of 1,000,000 rows on 2 cores with 2 workers spent
        0.5-0.6 CPU-s more in this process for a slower plan (13.6-13.8 s against 12.9-13.2 s, 2026-12-07)."""
        if processes:
            self._con.execute(f"SET threads = {max(1, (os.cpu_count() or 1) - processes)}")

    def add_chunk(self, run_id: str, items: pa.Table, requests: pa.Table | None, rejects: pa.Table | None) -> None:
        """Store chunks of rows in one transaction: their items, the request bodies not stored yet, their rejects.

        A row without an id (null ``row_id``) takes its position as its id. ``requests`` may repeat a key (two
        chunks of a batch); it is stored once, and a key already stored (by an earlier batch or run) is not stored
        again."""
        con = self._con
        if requests is not None and requests.num_rows and self._known is None and self._scans >= SCANNED_WRITES:
            self._known = _read_known_keys(con)
        found = None
        with transaction(con):
            if items.num_rows:
                with registered(con, "chunk_items", items):
                    con.execute(
                        "INSERT INTO items (run_id, row_idx, line, row_id, key, metadata, priority) "
                        "SELECT $1, row_idx, line, coalesce(row_id, CAST(row_idx AS VARCHAR)), key, metadata, priority "
                        "FROM chunk_items",
                        [run_id],
                    )
            if requests is not None and requests.num_rows:
                with registered(con, "chunk_requests", requests):
                    if self._known is None:
                        stored, twice = _scan_for_known_keys(con, requests)
                        self._scans += 1
                    else:
                        found = self._known.lookup(digests(requests["key"]))
                        stored, twice = found.stored, found.twice
                    _insert_new_requests(con, requests, stored, twice)
            if rejects is not None and rejects.num_rows:
                with registered(con, "chunk_rejects", rejects):
                    con.execute(
                        "INSERT INTO rejects (run_id, row_idx, line, row_id, field, reason) "
                        "SELECT $1, row_idx, line, CASE WHEN id_default THEN CAST(row_idx AS VARCHAR) ELSE row_id END, "
                        "field, reason FROM chunk_rejects",
                        [run_id],
                    )
        if found is not None and self._known is not None:  # committed: held from now on
            self._known.add(*found.new())

    def finish_ingest(self, run_id: str, id_field: str = "id") -> dict[str, int]:
        """Settle what spans chunks: a row repeating an earlier row's id becomes a reject; then the run's distinct
        requests (``run_keys``) and its counts. Reading is over: DuckDB's memory bound is widened again. The run is
        marked ``ingested`` only once its reuse and routing are made too (``set_run(..., ingested=True)``): a run
        stopped before then reads its dataset again when resumed."""
        con = self._con
        reading_mode(con, reading=False)
        self._known, self._scans = None, 0
        with transaction(con):
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
                "SELECT (SELECT count(*) FROM items WHERE run_id = $1), "
                "(SELECT count(*) FROM rejects WHERE run_id = $1), (SELECT count(*) FROM run_keys WHERE run_id = $1)",
                [run_id],
            ).fetchone()
            assert counts is not None
            rows, rejects, distinct = (int(c) for c in counts)
            con.execute(
                "UPDATE runs SET rows = ?, rejects = ?, distinct_keys = ?, ingested = false WHERE run_id = ?",
                [rows, rejects, distinct, run_id],
            )
        return {"rows": rows, "rejects": rejects, "distinct": distinct}

    def set_tags(self, run_id: str, keys: list[str], run_tags: dict[str, str]) -> None:
        """Each row's tag: ``key=value`` for the metadata keys chosen (``-`` where a row lacks one) and the run's own
        tags, sorted by key and joined with commas. The ledger and the reports attribute cost by it."""
        parts = [(k, f"coalesce(json_extract_string(metadata, {sql_str('$.' + k)}), '-')") for k in keys]
        parts += [(k, sql_str(v)) for k, v in run_tags.items()]
        if not parts:
            return
        expr = " || ',' || ".join(f"{sql_str(k + '=')} || {value}" for k, value in sorted(parts))
        self._con.execute(f"UPDATE items SET tag = {expr} WHERE run_id = ?", [run_id])

    def rejects_count(self, run_id: str) -> int:
        row = self._con.execute("SELECT count(*) FROM rejects WHERE run_id = ?", [run_id]).fetchone()
        return int(row[0]) if row else 0

    def first_rejects(self, run_id: str, limit: int) -> list[dict[str, Any]]:
        rel = self._con.execute(
            "SELECT row_idx, line, row_id, field, reason FROM rejects WHERE run_id = ? ORDER BY row_idx LIMIT ?",
            [run_id, limit],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]

    def write_rejects(self, run_id: str, path: Path, input_path: str) -> int:
        """Write the run's rejects as JSONL (file, line, id, field, reason), atomically; returns how many."""
        query = (
            f"SELECT {sql_str(input_path)} AS file, line, row_id AS id, field, reason FROM rejects "
            f"WHERE run_id = {sql_str(run_id)} ORDER BY row_idx"
        )
        copy_atomically(self._con, query, path, "FORMAT JSON")
        return self.rejects_count(run_id)


def _read_known_keys(con: Any) -> KnownKeys:
    """The stored requests' keys, read once for the rest of a dataset. DuckDB lets no other process write the file, and
    only ``add_chunk`` adds requests while a dataset is read, so they stay true until ``finish_ingest``."""
    cursor = con.cursor()  # a connection of its own: a result left open on this one would refuse the read
    try:
        reader = cursor.sql("SELECT key FROM requests").to_arrow_reader(1 << 16)
        assert reader is not None
        return KnownKeys.of(batch.column(0) for batch in reader)
    finally:
        cursor.close()


def _scan_for_known_keys(con: Any, requests: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Which keys of ``chunk_requests`` are stored, and which it lists twice: a semi-join over all of ``requests``."""
    rows = con.execute(
        "SELECT key, true AS stored FROM requests WHERE key IN (SELECT key FROM chunk_requests) "
        "UNION ALL SELECT key, false FROM chunk_requests GROUP BY key HAVING count(*) > 1"
    ).fetchall()
    keys = requests["key"]
    stored = pc.is_in(keys, value_set=pa.array([k for k, was in rows if was], pa.string()))
    twice = pc.is_in(keys, value_set=pa.array([k for k, was in rows if not was], pa.string()))
    return stored.to_numpy(zero_copy_only=False), twice.to_numpy(zero_copy_only=False)


def _insert_new_requests(con: Any, requests: pa.Table, stored: np.ndarray, twice: np.ndarray) -> None:
    """Add the requests of ``chunk_requests`` (``requests``) that are not stored yet (``stored``: a boolean per row),
    each key once (``twice``: the rows whose key the table lists more than once).

    Chunks list a key once each, but two chunks of a batch may share one, and an earlier batch or run may have stored
    it: such keys are few, so they are found first and the rest is inserted as it is. A key listed twice is inserted
    once, from either row: a key is the hash of its body, so both rows are the same request, counted the same. A plain
    insert for the rest: with an anti-join or DISTINCT inside the INSERT, DuckDB spent a third more CPU and twice as
    long checkpointing (benchmarks/plan_scale.py)."""
    if not (stored.any() or twice.any()):
        con.execute(f"INSERT INTO requests ({_NEW_REQUEST_COLUMNS}) SELECT {_NEW_REQUEST_COLUMNS} FROM chunk_requests")
        return
    keys = requests["key"].combine_chunks()
    named = pa.table({"key": keys.filter(pa.array(stored | twice)).unique()})
    once = pa.table({"key": keys.filter(pa.array(twice & ~stored)).unique()})
    with registered(con, "left_out", named), registered(con, "once", once):
        con.execute(
            f"INSERT INTO requests ({_NEW_REQUEST_COLUMNS}) SELECT {_NEW_REQUEST_COLUMNS} FROM chunk_requests "
            f"WHERE key NOT IN (SELECT key FROM left_out)"
        )
        con.execute(
            f"INSERT INTO requests ({_NEW_REQUEST_COLUMNS}) SELECT DISTINCT ON (key) {_NEW_REQUEST_COLUMNS} "
            f"FROM chunk_requests WHERE key IN (SELECT key FROM once)"
        )
