"""What reports and ``costinfer analyze`` read: a run's rows by source (priced once, into ``run_sources``), its calls
by model, error class, latency and time, the list of runs, and spend and savings grouped over the store's history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from costinfer.store.base import MONEY, Part, registered, transaction

LATENCY_BINS = 20
TIMELINE_POINTS = 200

# What ``analyze --by`` may group by, and the SQL expression of each over the run_facts CTE below
GROUPINGS = {
    "run": "run_id",
    "model": "model",
    "day": "CAST(day AS VARCHAR)",
    "dataset": "dataset",
    "source": "source",
    "tag": "tag",
    "provider": "provider",
}

# One row per (run, source, model) with the run's day and dataset: rows and savings from run_sources; spend and calls
# are the ledger's (calls), attached to the 'fresh' and 'fallback' rows of the model that answered
_FACTS = """
    WITH scope AS (  -- a rehearsal (nothing paid) counts only when asked for, or named
        SELECT run_id, started_at, input_path FROM runs
        WHERE started_at >= $since AND ($run IS NULL OR run_id = $run)
          AND ($rehearsals OR $run IS NOT NULL OR NOT rehearsal)),
    spend AS (
        SELECT c.run_id, c.model, c.tag, count(*) AS calls, count(*) FILTER (WHERE c.status = 'error') AS failed_calls,
               sum(c.cost_usd) AS cost_usd
        FROM calls c JOIN scope USING (run_id) GROUP BY ALL),
    sources AS (
        SELECT s.run_id, s.source, s.model, s.tag, s.rows, s.naive_usd, s.cost_usd
        FROM run_sources s JOIN scope USING (run_id)),
    run_facts AS (
        SELECT coalesce(src.run_id, sp.run_id) AS run_id, coalesce(src.model, sp.model) AS model,
               coalesce(src.tag, sp.tag) AS tag,
               coalesce(src.source, 'fresh') AS source, coalesce(src.rows, 0) AS rows,
               CASE WHEN src.source IN ('duplicate', 'cache', 'normalized', 'semantic') THEN src.naive_usd
                    WHEN src.source IN ('routing', 'fallback', 'batch') THEN src.naive_usd - src.cost_usd
                    ELSE 0 END AS saved_usd,
               CASE WHEN coalesce(src.source, 'fresh') IN ('fresh', 'batch') THEN coalesce(sp.calls, 0) ELSE 0 END
                   AS calls,
               CASE WHEN coalesce(src.source, 'fresh') IN ('fresh', 'batch') THEN coalesce(sp.failed_calls, 0)
                    ELSE 0 END AS failed_calls,
               CASE WHEN coalesce(src.source, 'fresh') IN ('fresh', 'batch') THEN coalesce(sp.cost_usd, 0) ELSE 0 END
                   AS cost_usd
        FROM sources src
        FULL JOIN spend sp ON sp.run_id = src.run_id AND sp.model = src.model AND src.source IN ('fresh', 'batch')
            AND sp.tag IS NOT DISTINCT FROM src.tag),
    facts AS (
        SELECT f.*, CAST(r.started_at AS DATE) AS day, r.input_path AS dataset, r.provider, r.rehearsal
        FROM run_facts f JOIN runs r USING (run_id))
"""


class HistoryPart(Part):
    # --- one run ----------------------------------------------------------------------------------------------

    def result_groups(self, run_id: str) -> list[dict[str, Any]]:
        """The run's result rows by (source, requested model, answering model): rows, counted and billed input
        tokens, output tokens and what they cost. Reads the result rows built by ``collect_results``."""
        self._results(run_id)  # type: ignore[attr-defined]
        rel = self._con.execute(
            """
            SELECT CASE WHEN res.source = 'fresh' AND EXISTS (
                            SELECT 1 FROM calls c WHERE c.run_id = $1 AND c.key = res.key AND c.status = 'ok'
                            AND c.mode = 'batch') THEN 'batch'
                        ELSE coalesce(res.source, CASE WHEN res.not_run THEN 'not_run' ELSE 'failed' END) END AS source,
                   q.model AS requested, res.model AS answered, res.tag, res.routed, count(*) AS rows,
                   sum(q.input_tokens) AS counted_input, coalesce(sum(res.input_tokens), 0) AS billed_input,
                   coalesce(sum(res.output_tokens), 0) AS output_tokens, coalesce(sum(res.cost_usd), 0) AS cost_usd,
                   coalesce(sum(res.cached_tokens), 0) AS cached_tokens,
                   coalesce(sum(res.cache_write_tokens), 0) AS cache_write_tokens
            FROM run_results res JOIN requests q ON q.key = res.key
            GROUP BY ALL ORDER BY 1, 2
            """,
            [run_id],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]

    def save_run_sources(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace the run's priced sources (source, model, rows, input_tokens, output_tokens, naive_usd, cost_usd)."""
        table = pa.table(
            {
                "source": pa.array([r["source"] for r in rows], pa.string()),
                "model": pa.array([r["model"] for r in rows], pa.string()),
                "rows": pa.array([r["rows"] for r in rows], pa.int64()),
                "input_tokens": pa.array([r["input_tokens"] for r in rows], pa.int64()),
                "output_tokens": pa.array([r["output_tokens"] for r in rows], pa.int64()),
                "naive_usd": pa.array([str(r["naive_usd"]) for r in rows], pa.string()),
                "cost_usd": pa.array([str(r["cost_usd"]) for r in rows], pa.string()),
                "tag": pa.array([r.get("tag") for r in rows], pa.string()),
            }
        )
        with transaction(self._con), registered(self._con, "new_sources", table):
            self._con.execute("DELETE FROM run_sources WHERE run_id = ?", [run_id])
            self._con.execute(
                f"INSERT INTO run_sources SELECT $1, source, model, rows, input_tokens, output_tokens, "
                f"naive_usd::{_decimal()}, cost_usd::{_decimal()}, tag FROM new_sources",
                [run_id],
            )

    def run_sources(self, run_id: str) -> list[dict[str, Any]]:
        rel = self._con.execute("SELECT * EXCLUDE (run_id) FROM run_sources WHERE run_id = ? ORDER BY 1, 2", [run_id])
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]

    def call_stats(self, run_id: str) -> dict[str, Any]:
        """A run's calls: by model (calls, tokens in, cached in, out, reasoning, cost), errors by class, the latency
        of each answered call, and calls finished per second since the first."""
        con = self._con
        by_model = con.execute(
            """
            SELECT model, count(*) AS calls, count(*) FILTER (WHERE status = 'ok') AS answered,
                   sum(input_tokens) AS input_tokens, sum(cached_tokens) AS cached_tokens,
                   sum(output_tokens) AS output_tokens, sum(reasoning_tokens) AS reasoning_tokens,
                   sum(cost_usd) AS cost_usd
            FROM calls WHERE run_id = ? GROUP BY model ORDER BY cost_usd DESC, model
            """,
            [run_id],
        )
        cols = [d[0] for d in by_model.description]
        models = [dict(zip(cols, row, strict=True)) for row in by_model.fetchall()]
        tags = con.execute(
            "SELECT tag, count(*), sum(input_tokens), sum(cached_tokens), sum(output_tokens), sum(cost_usd) "
            "FROM calls WHERE run_id = ? AND tag IS NOT NULL GROUP BY 1 ORDER BY 6 DESC, 1",
            [run_id],
        ).fetchall()
        errors = dict(
            con.execute(
                "SELECT error_class, count(*) FROM calls WHERE run_id = ? AND status = 'error' "
                "GROUP BY 1 ORDER BY 2 DESC",
                [run_id],
            ).fetchall()
        )
        answered = "FROM calls WHERE run_id = $1 AND status = 'ok' AND latency_ms IS NOT NULL"
        stats = con.execute(
            "SELECT count(*), quantile_cont(latency_ms, [0.5, 0.9, 0.99]), min(latency_ms), max(latency_ms) "
            + answered,
            [run_id],
        ).fetchone()
        count, quantiles, low, high = stats if stats else (0, None, None, None)
        bins: list[tuple[float, float, int]] = []
        if count:
            width = max((float(high) - float(low)) / LATENCY_BINS, 1e-9)
            found = dict(
                con.execute(
                    f"SELECT least(CAST(floor((latency_ms - $2) / $3) AS INTEGER), $4 - 1), count(*) {answered} "
                    "GROUP BY 1",
                    [run_id, float(low), width, LATENCY_BINS],
                ).fetchall()
            )
            bins = [
                (float(low) + i * width, float(low) + (i + 1) * width, int(found.get(i, 0)))
                for i in range(LATENCY_BINS)
            ]
        # calls finished over time, in at most TIMELINE_POINTS steps: the rate achieved, against the rate limit
        span = con.execute(
            "SELECT epoch(min(finished_at)), epoch(max(finished_at)) FROM calls WHERE run_id = ?", [run_id]
        ).fetchone()
        timeline: list[tuple[float, float]] = []
        if span and span[0] is not None:
            step = max(1.0, (float(span[1]) - float(span[0])) / TIMELINE_POINTS)
            rows = con.execute(
                "SELECT CAST(floor((epoch(finished_at) - $2) / $3) AS BIGINT), count(*) FROM calls WHERE run_id = $1 "
                "GROUP BY 1 ORDER BY 1",
                [run_id, float(span[0]), step],
            ).fetchall()
            timeline = [(float(i) * step, n * 60.0 / step) for i, n in rows]
        return {
            "models": models,
            "tags": [_tag_row(row) for row in tags],
            "errors": errors,
            "latency_ms": {
                "count": int(count or 0),
                "p50": float(quantiles[0]) if quantiles else None,
                "p90": float(quantiles[1]) if quantiles else None,
                "p99": float(quantiles[2]) if quantiles else None,
                "max": float(high) if high is not None else None,
                "bins": bins,
            },
            "calls_per_minute": timeline,
        }

    def find_run(self, prefix: str) -> list[str]:
        """The ids of runs that start with ``prefix`` (an id as ``costinfer runs`` shows it, cut short)."""
        rows = self._con.execute(
            "SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY started_at DESC LIMIT 5", [prefix]
        ).fetchall()
        return [str(r) for (r,) in rows]

    # --- the history --------------------------------------------------------------------------------------------

    def runs_list(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs: id, started, dataset, model, rows, cost (the ledger's), status, why it stopped."""
        rel = self._con.execute(
            """
            SELECT r.run_id, r.started_at, r.input_path AS dataset, r.provider, r.model, coalesce(r.rows, 0) AS rows,
                   coalesce((SELECT sum(cost_usd) FROM calls c WHERE c.run_id = r.run_id), 0) AS cost_usd,
                   r.status, r.stop_reason, r.rehearsal
            FROM runs r ORDER BY r.started_at DESC LIMIT ?
            """,
            [limit],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]

    def analyze(
        self, by: str, since: datetime, run_id: str | None = None, rehearsals: bool = False
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Totals and one group per value of ``by`` (a key of ``GROUPINGS``), over the runs started since ``since``:
        spend and calls from the ledger, rows by source and saved dollars from run_sources. Rehearsals (nothing
        paid) count only with ``rehearsals`` or when ``run_id`` names one; the totals say how many were left out."""
        key = GROUPINGS[by]
        params = {"since": since, "run": run_id, "rehearsals": rehearsals}
        measures = """
            sum(cost_usd) AS cost_usd, sum(calls) AS calls, sum(failed_calls) AS failed_calls, sum(rows) AS rows,
            sum(rows) FILTER (WHERE source = 'cache') AS cache_rows,
            sum(rows) FILTER (WHERE source IN ('normalized', 'semantic')) AS near_rows,
            sum(rows) FILTER (WHERE source = 'duplicate') AS duplicate_rows,
            sum(rows) FILTER (WHERE source IN ('failed')) AS failed_rows,
            sum(saved_usd) AS saved_usd, count(DISTINCT run_id) AS runs,
            string_agg(DISTINCT provider, ',' ORDER BY provider) AS providers,
            count(DISTINCT run_id) FILTER (WHERE rehearsal) AS rehearsal_runs
        """
        total_rel = self._con.execute(f"{_FACTS} SELECT {measures} FROM facts", params)
        cols = [d[0] for d in total_rel.description]
        totals = dict(zip(cols, total_rel.fetchone() or (), strict=True))
        left_out = self._con.execute(
            "SELECT count(*) FROM runs WHERE rehearsal AND started_at >= $since AND $run IS NULL AND NOT $rehearsals",
            params,
        ).fetchone()
        totals["rehearsals_left_out"] = int(left_out[0]) if left_out else 0
        group_rel = self._con.execute(
            f"{_FACTS} SELECT {key} AS {by}, {measures} FROM facts GROUP BY 1 ORDER BY 1", params
        )
        cols = [d[0] for d in group_rel.description]
        groups = [dict(zip(cols, row, strict=True)) for row in group_rel.fetchall()]
        return totals, groups


def _tag_row(row: tuple[Any, ...]) -> dict[str, Any]:
    tag, calls, tokens_in, cached, tokens_out, cost = row
    return {
        "tag": tag,
        "calls": int(calls),
        "input_tokens": int(tokens_in),
        "cached_tokens": int(cached),
        "output_tokens": int(tokens_out),
        "cost_usd": cost,
    }


def _decimal() -> str:
    return f"DECIMAL({MONEY.precision},{MONEY.scale})"
