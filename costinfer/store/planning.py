"""What planning and execution read: a run's counts, its unanswered requests (grouped for the plan, paged for the
executor), what the ledger teaches about output lengths, and what the run has spent."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from costinfer.store.base import ROUTED_TIERS, SENT, UNANSWERED, Part, Pending, one_dict, registered, transaction


class PlanningPart(Part):
    def plan_counts(self, run_id: str) -> dict[str, int]:
        """Rows, distinct requests, how many are answered already (cache, reuse tiers, earlier in this run) and what
        is left to send."""
        row = self._con.execute(
            f"""
            SELECT count(*) AS distinct_keys,
                   sum(rk.n_rows) AS rows,
                   coalesce(sum(rk.n_rows) FILTER (WHERE a.run_id <> $1), 0) AS cache_rows,
                   count(a.key) FILTER (WHERE a.run_id = $1) AS done_keys,
                   coalesce(sum(rk.n_rows) FILTER (WHERE rk.tier = 'normalized'), 0) AS normalized_rows,
                   coalesce(sum(rk.n_rows) FILTER (WHERE rk.tier = 'semantic'), 0) AS semantic_rows,
                   coalesce(sum(rk.n_rows) FILTER (WHERE rk.tier IN {ROUTED_TIERS}), 0) AS routed_rows,
                   count(*) FILTER (WHERE {UNANSWERED}) AS pending_keys
            FROM run_keys rk
            LEFT JOIN responses a ON a.key = {SENT}
            WHERE rk.run_id = $1
            """,
            [run_id],
        )
        out = one_dict(row) or {}
        return {k: int(v or 0) for k, v in out.items()}

    def pending_groups(self, run_id: str) -> list[tuple[str, int, int, int, int, int]]:
        """(model, max_tokens, requests, counted input tokens, input bound, longest prompt) of the run's unanswered
        requests."""
        # A run key is sent as itself or, routed, as its answer key; only the latter can name one request twice, so
        # only they are made distinct (a DISTINCT over all of them took 0.4-0.5 s of 0.55 at 1,000,000 requests).
        # Each part is ``UNANSWERED`` with ``SENT`` resolved for its tiers: written with the shared CASE, the
        # correlated NOT EXISTS ran 0.1 s slower (0.39-0.42 s against 0.24-0.36 s)
        rows = self._con.execute(
            f"""
            WITH own AS (
                SELECT rk.key FROM run_keys rk
                WHERE rk.run_id = $1 AND rk.answer_key IS NULL AND coalesce(rk.tier NOT IN {ROUTED_TIERS}, true)
                  AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.key = rk.key)),
            routed AS (
                SELECT DISTINCT rk.answer_key AS key FROM run_keys rk
                WHERE rk.run_id = $1 AND rk.tier IN {ROUTED_TIERS}
                  AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.key = rk.answer_key)),
            sent AS (SELECT key FROM own UNION ALL SELECT key FROM routed WHERE key NOT IN (SELECT key FROM own))
            SELECT q.model, q.max_tokens, count(*), sum(q.input_tokens), sum(coalesce(q.input_bound, q.input_tokens)),
                   max(q.input_tokens)
            FROM sent p JOIN requests q ON q.key = p.key
            GROUP BY ALL ORDER BY 1, 2
            """,
            [run_id],
        ).fetchall()
        return [(str(m), int(t), int(n), int(c), int(b), int(x or 0)) for m, t, n, c, b, x in rows]

    def reused_groups(self, run_id: str, cache: bool = True) -> list[tuple[str, str, int, int, int]]:
        """(lever, model, max_tokens, rows, counted input tokens) of the rows no call of this run answers: duplicates
        of a request in this run, answers from earlier runs (cache), and the normalized and semantic tiers.
        ``cache``: look for answers of earlier runs (a plan that counted none skips that join)."""
        cached = f"LEFT JOIN responses a ON a.key = {SENT}" if cache else ""
        run_of = "a.run_id" if cache else "NULL"
        rows = self._con.execute(
            f"""
            WITH keyed AS (
                SELECT CASE WHEN rk.tier IN ('normalized', 'semantic') THEN rk.tier
                            WHEN {run_of} IS NOT NULL AND {run_of} <> $1 THEN 'cache'
                            ELSE 'duplicate' END AS lever,
                       q.model, q.max_tokens, q.input_tokens, rk.n_rows
                FROM run_keys rk JOIN requests q ON q.key = {SENT} {cached}
                WHERE rk.run_id = $1 {"" if cache else "AND (rk.n_rows > 1 OR rk.tier IS NOT NULL)"})
            SELECT lever, model, max_tokens,
                   sum(CASE WHEN lever = 'duplicate' THEN n_rows - 1 ELSE n_rows END) AS rows,
                   sum(input_tokens * CASE WHEN lever = 'duplicate' THEN n_rows - 1 ELSE n_rows END) AS tokens
            FROM keyed GROUP BY ALL HAVING sum(CASE WHEN lever = 'duplicate' THEN n_rows - 1 ELSE n_rows END) > 0
            ORDER BY 1, 2, 3
            """,
            [run_id],
        ).fetchall()
        return [(str(a), str(b), int(c), int(d), int(e)) for a, b, c, d, e in rows]

    def prefix_groups(self, run_id: str, min_tokens: int = 0, limit: int = 10000) -> list[tuple[str, int, str]]:
        """(model, requests, one request's body) per group of unanswered requests that differ only in their last
        message, for groups of two or more of at least ``min_tokens`` prompt tokens (a prefix is shorter than its
        prompt): the prefixes a provider's prompt cache can serve."""
        rows = self._con.execute(
            f"""
            SELECT any_value(q.model), count(*), any_value(q.body)
            FROM (SELECT DISTINCT {SENT} AS sent FROM run_keys rk WHERE rk.run_id = ? AND {UNANSWERED}) p
            JOIN requests q ON q.key = p.sent
            WHERE q.group_key IS NOT NULL AND q.input_tokens >= ?
            GROUP BY q.group_key HAVING count(*) > 1
            ORDER BY 2 DESC LIMIT ?
            """,
            [run_id, min_tokens, limit],
        ).fetchall()
        return [(str(m), int(n), str(b)) for m, n, b in rows]

    def uncounted(self, run_id: str) -> list[tuple[str, str, int]]:
        """(key, body, max_tokens) of the run's requests still to send whose prompt the server has not counted."""
        rows = self._con.execute(
            f"""
            SELECT q.key, any_value(q.body), any_value(q.max_tokens)
            FROM (SELECT DISTINCT {SENT} AS sent FROM run_keys rk WHERE rk.run_id = ? AND {UNANSWERED}) p
            JOIN requests q ON q.key = p.sent
            WHERE q.counted_by IS NULL GROUP BY q.key
            """,
            [run_id],
        ).fetchall()
        return [(str(k), str(b), int(m)) for k, b, m in rows]

    def set_server_counts(self, counts: list[tuple[str, int]]) -> None:
        """The server's own prompt counts: they replace the estimate and the bound (the server bills exactly these)."""
        if not counts:
            return
        table = pa.table(
            {"key": pa.array([k for k, _ in counts], pa.string()), "n": pa.array([n for _, n in counts], pa.int32())}
        )
        with transaction(self._con), registered(self._con, "server_counts", table):
            self._con.execute(
                "UPDATE requests SET input_tokens = c.n, input_bound = c.n, counted_by = 'server' "
                "FROM server_counts c WHERE requests.key = c.key"
            )

    def output_history(self, input_path: str | None) -> list[tuple[Any, ...]]:
        """The ledger's answered calls grouped by (model, max_tokens, same dataset as ``input_path``): count, mean
        and sum of output tokens, sum of max_tokens, billed and counted input tokens. What the plan learns from."""
        return self._con.execute(
            """
            SELECT q.model, q.max_tokens, coalesce(r.input_path = ?, false) AS same_dataset, count(*) AS n,
                   avg(c.output_tokens) AS mean_out, sum(c.output_tokens) AS out_sum, sum(q.max_tokens) AS cap_sum,
                   sum(c.input_tokens) AS billed_in, sum(q.input_tokens) AS counted_in
            FROM calls c JOIN requests q ON q.key = c.key LEFT JOIN runs r ON r.run_id = c.run_id
            WHERE c.status = 'ok'
            GROUP BY ALL
            """,
            [input_path],
        ).fetchall()

    def run_spend(self, run_id: str) -> Decimal:
        row = self._con.execute("SELECT coalesce(sum(cost_usd), 0) FROM calls WHERE run_id = ?", [run_id]).fetchone()
        return Decimal(row[0]) if row else Decimal(0)

    def pending(self, run_id: str, page: int = 2000) -> Iterator[list[Pending]]:
        """The run's unanswered requests in priority then input order, a page at a time. Requests identical but for
        their last message (a shared system prompt, few-shot examples) are sent back to back, where the first one
        came: a provider's prompt cache (and vLLM's prefix cache) then serves their shared prefix.

        They are sorted once into a numbered temporary table (DuckDB spills it to disk past its memory bound), then
        read a numbered range at a time. Paging the run's requests with a keyset and LIMIT sorted them again for
        every page: 0.2 s a page at 1,000,000 requests; holding one streaming query open instead would keep a
        transaction open for the whole run and stop DuckDB from checkpointing its log meanwhile."""
        cur = self._con.cursor()  # the temporary table is this cursor's own
        try:
            cur.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE pending_requests AS
                WITH sent AS (
                    SELECT {SENT} AS sent, max(rk.priority) AS priority, min(rk.first_idx) AS first_idx
                    FROM run_keys rk WHERE rk.run_id = ? AND {UNANSWERED} GROUP BY ALL),
                grouped AS (
                    SELECT s.priority, s.first_idx, q.key, q.body, q.max_tokens, q.model, q.input_tokens,
                           coalesce(q.input_bound, q.input_tokens) AS input_bound,
                           min(s.first_idx) OVER w AS group_idx, count(*) OVER w AS group_size
                    FROM sent s JOIN requests q ON q.key = s.sent
                    WINDOW w AS (PARTITION BY s.priority, coalesce(q.group_key, q.key)))
                SELECT row_number() OVER (ORDER BY priority DESC, group_idx, first_idx) AS n,
                       key, body, input_bound, max_tokens, model, input_tokens, group_size > 1 AS shared_prefix
                FROM grouped
                ORDER BY n
                """,
                [run_id],
            )
            done = 0
            while rows := cur.execute(
                "SELECT key, body, input_bound, max_tokens, model, input_tokens, shared_prefix FROM pending_requests "
                "WHERE n > ? AND n <= ? ORDER BY n",
                [done, done + page],
            ).fetchall():
                done += len(rows)
                yield [
                    Pending(r[0], orjson.loads(r[1]), int(r[2]), int(r[3]), str(r[4]), int(r[5]), bool(r[6]))
                    for r in rows
                ]
            cur.execute("DROP TABLE pending_requests")
        finally:
            cur.close()
