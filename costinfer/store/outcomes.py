"""Making outcomes durable: a group of answers and errors in one transaction, answers into the cache, every call
into the ledger, a fallback's answer lent to the request it stands in for.

The executor commits from a worker thread: ``Store.writer()`` gives it a ``Writer`` on a cursor of its own (a DuckDB
connection is not shared across threads; its cursors are independent connections to the same database).
"""

from __future__ import annotations

import threading

import duckdb
import orjson
import pyarrow as pa

from costinfer.errors import WriteError
from costinfer.store.base import ROUTED_TIERS, Outcome, Part, money, registered, transaction


def record(
    con: duckdb.DuckDBPyConnection, where: str, run_id: str, outcomes: list[Outcome], tagged: bool = False
) -> None:
    """Commit a group of outcomes; a failure (a full disk) is ``WriteError`` and nothing of the group is kept."""
    if not outcomes:
        return
    lent = [o for o in outcomes if o.cached]  # answers already in the cache: nothing was called or paid
    outcomes = [o for o in outcomes if not o.cached]
    if not outcomes:
        try:
            with transaction(con):
                for o in lent:
                    _lend_fallback(con, run_id, o)
        except (duckdb.Error, OSError) as exc:
            raise WriteError(f"{where}: cannot save answers: {exc}") from exc
        return
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
            "cache_write_tokens": pa.array([o.cache_write_tokens for o in outcomes], pa.int32()),
            "reasoning_tokens": pa.array([o.reasoning_tokens for o in outcomes], pa.int32()),
            # exact: Decimal -> text here, text -> DECIMAL(38,12) in SQL
            "cost_usd": pa.array([str(money(o.cost_usd)) for o in outcomes], pa.string()),
            "latency_ms": pa.array([o.latency_ms for o in outcomes], pa.float64()),
            "response": pa.array([o.response for o in outcomes], pa.string()),
            "finish_reason": pa.array([o.finish_reason for o in outcomes], pa.string()),
            "mode": pa.array([o.mode for o in outcomes], pa.string()),
        }
    )
    try:
        with transaction(con), registered(con, "outcome_batch", batch):
            con.execute(
                "INSERT INTO calls (run_id, key, provider, model, status, attempts, http_status, error_class, "
                "error_message, input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_usd, latency_ms, "
                "mode, cache_write_tokens) "
                "SELECT run_id, key, provider, model, CASE WHEN ok THEN 'ok' ELSE 'error' END, attempts, http_status, "
                "error_class, error_message, input_tokens, output_tokens, cached_tokens, reasoning_tokens, "
                "cost_usd::DECIMAL(38,12), latency_ms, mode, cache_write_tokens FROM outcome_batch"
            )
            if tagged:  # the call's tag is its paying row's (the first row of its request)
                con.execute(
                    "UPDATE calls SET tag = i.tag FROM run_keys rk, items i "
                    "WHERE calls.run_id = $1 AND calls.tag IS NULL AND rk.run_id = $1 "
                    "AND (rk.key = calls.key OR rk.answer_key = calls.key) "
                    "AND i.run_id = $1 AND i.row_idx = rk.first_idx "
                    "AND calls.key IN (SELECT key FROM outcome_batch)",
                    [run_id],
                )
            con.execute(
                "INSERT INTO responses (key, run_id, provider, model, response, finish_reason, input_tokens, "
                "output_tokens, cached_tokens, reasoning_tokens, cost_usd, latency_ms, cache_write_tokens) "
                "SELECT key, run_id, provider, model, response, finish_reason, input_tokens, output_tokens, "
                "cached_tokens, reasoning_tokens, cost_usd::DECIMAL(38,12), latency_ms, cache_write_tokens "
                "FROM outcome_batch WHERE ok "
                "ON CONFLICT DO NOTHING"
            )
            for o in [*outcomes, *lent]:
                if o.replaces and o.ok and o.request_body is not None:
                    _lend_fallback(con, run_id, o)
    except (duckdb.Error, OSError) as exc:
        raise WriteError(f"{where}: cannot save answers: {exc}") from exc


def _lend_fallback(con: duckdb.DuckDBPyConnection, run_id: str, o: Outcome) -> None:
    """A fallback answer is cached under the fallback request's own key and lent to the request it stands in for."""
    con.execute(
        "INSERT INTO requests (key, endpoint, model, body, input_tokens, max_tokens, input_bound) "
        "SELECT $1, q.endpoint, $2, $3, q.input_tokens, q.max_tokens, q.input_bound FROM requests q "
        "WHERE q.key = $4 AND NOT EXISTS (SELECT 1 FROM requests WHERE key = $1) LIMIT 1",
        [o.key, o.model, orjson.dumps(o.request_body).decode(), o.replaces],
    )
    # the request it stands in for: sent as itself, or routed/escalated and sent as $3; its borrowers keep their tier
    # and follow it (``base.ANSWER_AT``)
    con.execute(
        "UPDATE run_keys SET answer_key = $1, tier = 'fallback' WHERE run_id = $2 "
        f"AND ((key = $3 AND tier IS NULL) OR (answer_key = $3 AND tier IN {ROUTED_TIERS}))",
        [o.key, run_id, o.replaces],
    )


class AnswerReader:
    """Whether the cache holds an answer, asked from the executor's threads on a cursor of its own (one at a time)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self._lock = threading.Lock()

    def has_answer(self, key: str) -> bool:
        with self._lock:
            return bool(self._cursor.execute("SELECT 1 FROM responses WHERE key = ? LIMIT 1", [key]).fetchall())

    def close(self) -> None:
        self._cursor.close()


class Writer:
    """Commits outcomes on a cursor of its own, from whichever thread holds it. Close it when done."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, where: str, tagged: bool = False) -> None:
        self._cursor = cursor
        self._where = where
        self._tagged = tagged

    def record(self, run_id: str, outcomes: list[Outcome]) -> None:
        record(self._cursor, self._where, run_id, outcomes, self._tagged)

    def close(self) -> None:
        self._cursor.close()


class OutcomesPart(Part):
    def record(self, run_id: str, outcomes: list[Outcome], tagged: bool = False) -> None:
        """Make a group of outcomes durable in one transaction: answers enter the cache, every call the ledger
        (with its paying row's tag when the run is ``tagged``)."""
        record(self._con, str(self.path), run_id, outcomes, tagged)

    def writer(self, tagged: bool = False) -> Writer:
        return Writer(self._con.cursor(), str(self.path), tagged)

    def answer_reader(self) -> AnswerReader:
        return AnswerReader(self._con.cursor())
