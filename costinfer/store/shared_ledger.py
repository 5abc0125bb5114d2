"""What a call paid, into the shared store: one transaction per group of outcomes, before the private copy."""

from __future__ import annotations

import datetime
from typing import Any

import duckdb

from costinfer.store.base import Outcome, money
from costinfer.store.outcomes import AnswerReader
from costinfer.store.postgres import Postgres, pull_into_duck, push


class SharedAnswerReader(AnswerReader):
    """Whether the cache holds an answer, asked of this process's copy and then of the shared store: a fallback
    request that another run (or this run's previous attempt, on another process) paid for is lent, not paid again.
    An answer found only in PostgreSQL is copied into this process's copy, where the run's results read it."""

    def __init__(self, pg: Postgres, cursor: duckdb.DuckDBPyConnection) -> None:
        super().__init__(cursor)
        self._pg = pg

    def has_answer(self, key: str) -> bool:
        if super().has_answer(key):
            return True
        with self._lock:
            return pull_into_duck(self._pg, self._cursor, "responses", "key = %s", [key]) > 0


def share_outcomes(
    pg: Postgres,
    local: duckdb.DuckDBPyConnection,
    owner: str,
    run_id: str,
    outcomes: list[Outcome],
    cur: Any,
    tagged: bool = True,
) -> None:
    """Write what a group of outcomes paid, in the caller's transaction: the calls into the ledger, the answers into
    the cache with the requests they answer (what other machines' reuse tiers borrow from), their claims done; a
    failed request's claim let go, so that another run may try it."""
    paid = [o for o in outcomes if not o.cached]
    if not paid:
        return
    keys = [o.key for o in paid]
    tags = (
        {}
        if not tagged
        else dict(
            local.execute(
                "SELECT rk.key, i.tag FROM run_keys rk JOIN items i "
                "ON i.run_id = rk.run_id AND i.row_idx = rk.first_idx "
                "WHERE rk.run_id = ? AND rk.key IN (SELECT unnest(?)) AND i.tag IS NOT NULL",
                [run_id, keys],
            ).fetchall()
        )
    )
    now = datetime.datetime.now(datetime.UTC)
    calls_cols = [
        "run_id", "key", "provider", "model", "status", "attempts", "http_status", "error_class", "error_message",
        "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "latency_ms", "mode",
        "cache_write_tokens", "tag", "finished_at",
    ]  # fmt: skip
    push(
        pg,
        "calls",
        calls_cols,
        (
            [
                run_id,
                o.key,
                o.provider,
                o.model,
                "ok" if o.ok else "error",
                o.attempts,
                o.http_status,
                o.error_class,
                o.error_message,
                o.input_tokens,
                o.output_tokens,
                o.cached_tokens,
                o.reasoning_tokens,
                money(o.cost_usd),
                o.latency_ms,
                o.mode,
                o.cache_write_tokens,
                tags.get(o.key),
                now,
            ]
            for o in paid
        ),
        cur=cur,
        direct=True,  # a call is a new row of the ledger: no staging, no conflict to settle
    )
    ok = [o for o in paid if o.ok]
    if ok:  # one statement over arrays, column by column: no staging table, little Python per row
        cur.execute(
            "INSERT INTO responses (key, run_id, provider, model, response, finish_reason, input_tokens, "
            "output_tokens, cached_tokens, reasoning_tokens, cost_usd, latency_ms, cache_write_tokens, created_at) "
            "SELECT k, %s, p, m, r, f, it, ot, ct, rt, c, l, cw, %s FROM unnest(%s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::int[], %s::int[], %s::int[], %s::int[], %s::numeric[], %s::float8[], "
            "%s::int[]) AS u(k, p, m, r, f, it, ot, ct, rt, c, l, cw) ON CONFLICT DO NOTHING",
            [
                run_id,
                now,
                [o.key for o in ok],
                [o.provider for o in ok],
                [o.model for o in ok],
                [o.response for o in ok],
                [o.finish_reason for o in ok],
                [o.input_tokens for o in ok],
                [o.output_tokens for o in ok],
                [o.cached_tokens for o in ok],
                [o.reasoning_tokens for o in ok],
                [money(o.cost_usd) for o in ok],
                [o.latency_ms for o in ok],
                [o.cache_write_tokens for o in ok],
            ],
        )
    ok_keys = [o.key for o in ok]
    if ok_keys:  # (the requests they answer are shared with the run's working set, when it settles its account)
        cur.execute(
            "UPDATE claims SET done = true WHERE key IN "
            "(SELECT key FROM claims WHERE key = ANY(%s) ORDER BY key FOR UPDATE)",
            [ok_keys],
        )
    failed = [o.key for o in paid if not o.ok]
    if failed:  # another run may try again
        cur.execute(
            "UPDATE claims SET lease_until = now() - interval '1 second' WHERE key IN "
            "(SELECT key FROM claims WHERE key = ANY(%s) AND (owner = %s OR run_id = %s) ORDER BY key FOR UPDATE)",
            [failed, owner, run_id],
        )
