"""What a call paid, into the shared store: one transaction per group of outcomes, before the private copy."""

from __future__ import annotations

import datetime
from typing import Any

import duckdb

from costinfer.store.base import Outcome, money
from costinfer.store.postgres import Postgres, push, push_from_duck


def share_outcomes(
    pg: Postgres, local: duckdb.DuckDBPyConnection, owner: str, run_id: str, outcomes: list[Outcome], cur: Any
) -> None:
    """Write what a group of outcomes paid, in the caller's transaction: the calls into the ledger, the answers into
    the cache with the requests they answer (what other machines' reuse tiers borrow from), their claims done; a
    failed request's claim let go, so that another run may try it."""
    paid = [o for o in outcomes if not o.cached]
    if not paid:
        return
    keys = [o.key for o in paid]
    tags = dict(
        local.execute(
            "SELECT rk.key, i.tag FROM run_keys rk JOIN items i "
            "ON i.run_id = rk.run_id AND i.row_idx = rk.first_idx "
            "WHERE rk.run_id = ? AND rk.key IN (SELECT unnest(?)) AND i.tag IS NOT NULL",
            [run_id, keys],
        ).fetchall()
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
    push(
        pg,
        "responses",
        [
            "key",
            "run_id",
            "provider",
            "model",
            "response",
            "finish_reason",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "cost_usd",
            "latency_ms",
            "cache_write_tokens",
            "created_at",
        ],
        (
            [
                o.key,
                run_id,
                o.provider,
                o.model,
                o.response,
                o.finish_reason,
                o.input_tokens,
                o.output_tokens,
                o.cached_tokens,
                o.reasoning_tokens,
                money(o.cost_usd),
                o.latency_ms,
                o.cache_write_tokens,
                now,
            ]
            for o in ok
        ),
        cur=cur,
    )
    ok_keys = [o.key for o in ok]
    if ok_keys:  # the requests answered: what another machine's normalized and semantic tiers may borrow
        push_from_duck(pg, local, "requests", "key IN (SELECT unnest(?))", [ok_keys], cur=cur)
        cur.execute(
            "UPDATE claims SET done = true WHERE key IN "
            "(SELECT key FROM claims WHERE key = ANY(%s) ORDER BY key FOR UPDATE)",
            [ok_keys],
        )
    failed = [o.key for o in paid if not o.ok]
    if failed:  # another run may try again
        cur.execute(
            "UPDATE claims SET lease_until = now() - interval '1 second' WHERE key IN "
            "(SELECT key FROM claims WHERE key = ANY(%s) AND owner = %s ORDER BY key FOR UPDATE)",
            [failed, owner],
        )
