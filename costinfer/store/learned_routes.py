"""What ``--route learned`` keeps and reads: each request's round and decision (``route_learned``), and the history
of checked answers a router learns from: every answer of the cheapest candidate that a cascade's check judged,
in any run whose checks were the same (``runs.route_check``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from costinfer.store.base import UNANSWERED, Part, registered, transaction

_TEXT = "coalesce(q.sem_text, json_extract_string(q.body, '$.messages[#-1].content'))"
# a routed request whose cheap answer the check judged: passed (its own answer, checked) or failed (escalated, the
# first step of its route naming the cheap model)
_PASSED = "(rk.route_checked AND rk.tier IS NULL)"
_FAILED = "(rk.tier = 'escalated' AND starts_with(rk.route, $cheap || ': '))"


class LearnedRoutesPart(Part):
    def learned_rounds(self, run_id: str, cheap: str, round_rows: int) -> int:
        """Give every routed request the cheap model would answer (and nothing answers yet) its round, in input
        order, once per run; returns the rounds the run has."""
        with transaction(self._con):
            self._con.execute(
                f"""
                INSERT INTO route_learned (run_id, key, round)
                SELECT rk.run_id, rk.key, CAST((row_number() OVER (ORDER BY rk.first_idx) - 1) // $rows AS INTEGER)
                FROM run_keys rk JOIN requests q ON q.key = rk.key
                WHERE rk.run_id = $run AND rk.routed AND rk.tier IS NULL AND q.model = $cheap AND {UNANSWERED}
                  AND NOT EXISTS (SELECT 1 FROM route_learned x WHERE x.run_id = $run)
                """,
                {"run": run_id, "cheap": cheap, "rows": round_rows},
            )
        row = self._con.execute("SELECT max(round) FROM route_learned WHERE run_id = ?", [run_id]).fetchone()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def undecided_round(self, run_id: str) -> int | None:
        """The first round of the run not decided yet, or None."""
        row = self._con.execute(
            "SELECT min(round) FROM route_learned WHERE run_id = ? AND decision IS NULL", [run_id]
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def round_requests(self, run_id: str, round_: int) -> list[dict[str, Any]]:
        """The undecided requests of a round: key, the text to embed, counted input tokens and max_tokens."""
        rel = self._con.execute(
            f"""
            SELECT l.key, {_TEXT} AS text, q.input_tokens, q.max_tokens
            FROM route_learned l JOIN requests q ON q.key = l.key
            WHERE l.run_id = ? AND l.round = ? AND l.decision IS NULL ORDER BY l.key
            """,
            [run_id, round_],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]

    def held_keys(self, run_id: str) -> set[str]:
        """Requests of rounds not decided yet: not sent until their round is decided."""
        rows = self._con.execute(
            "SELECT key FROM route_learned WHERE run_id = ? AND decision IS NULL", [run_id]
        ).fetchall()
        return {str(k) for (k,) in rows}

    def check_history(self, cheap: str, check: str, run_id: str, before_round: int) -> list[dict[str, Any]]:
        """Every distinct request whose answer from ``cheap`` was judged by the checks ``check``: in other runs, and
        in this run's rounds before ``before_round`` (so that a resumed run learns from what the uninterrupted one
        would have); with the dataset of the run that judged it last. Sorted by key: the same store gives the same
        history."""
        rel = self._con.execute(
            f"""
            SELECT key, text, input_tokens, max_tokens, failed, billed_output, input_path FROM (
                SELECT DISTINCT ON (q.key) q.key, {_TEXT} AS text, q.input_tokens, q.max_tokens,
                       {_FAILED} AS failed, r.output_tokens AS billed_output, ru.input_path
                FROM run_keys rk JOIN runs ru ON ru.run_id = rk.run_id JOIN requests q ON q.key = rk.key
                LEFT JOIN responses r ON r.key = rk.key
                WHERE rk.routed AND q.model = $cheap AND ru.route_check = $check AND ({_PASSED} OR {_FAILED})
                  AND (rk.run_id <> $run
                       OR rk.key IN (SELECT key FROM route_learned WHERE run_id = $run AND round < $before))
                ORDER BY q.key, ru.started_at DESC)
            ORDER BY key
            """,
            {"cheap": cheap, "check": check, "run": run_id, "before": before_round},
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]

    def decide(self, run_id: str, decisions: list[tuple[str, float | None, float | None, int, str]]) -> None:
        """(key, predicted chance of failing, threshold, history size, decision) for requests of the run."""
        if not decisions:
            return
        table = pa.table(
            {
                "key": pa.array([d[0] for d in decisions], pa.string()),
                "fail_p": pa.array([d[1] for d in decisions], pa.float64()),
                "threshold": pa.array([d[2] for d in decisions], pa.float64()),
                "history": pa.array([d[3] for d in decisions], pa.int32()),
                "decision": pa.array([d[4] for d in decisions], pa.string()),
            }
        )
        with transaction(self._con), registered(self._con, "learned_decisions", table):
            self._con.execute(
                """
                UPDATE route_learned SET fail_p = d.fail_p, threshold = d.threshold, history = d.history,
                       decision = d.decision, decided_at = now()
                FROM learned_decisions d WHERE route_learned.run_id = ? AND route_learned.key = d.key
                """,
                [run_id],
            )

    def learned_plan(self, run_id: str) -> dict[str, tuple[int, float, int, int]]:
        """For the plan: the run's learned requests by decision ('undecided' for later rounds): requests, the sum of
        their predicted chances of failing, their counted input tokens and their max_tokens."""
        rows = self._con.execute(
            """
            SELECT coalesce(l.decision, 'undecided'), count(*), coalesce(sum(l.fail_p), 0), sum(q.input_tokens),
                   sum(q.max_tokens)
            FROM route_learned l JOIN requests q ON q.key = l.key WHERE l.run_id = ? GROUP BY ALL
            """,
            [run_id],
        ).fetchall()
        return {str(d): (int(n), float(p), int(t or 0), int(m or 0)) for d, n, p, t, m in rows}

    def learned_outcomes(self, run_id: str, cheap: str) -> dict[str, Any]:
        """What a learned run decided and how its predictions fared against the checks: requests by decision, the
        input tokens and output estimate of those sent straight to the strong model (the cheap calls not made), and
        for the requests the cheap model answered, predicted failure against the checked outcome."""
        rows = self._con.execute(
            f"""
            SELECT l.decision, count(*), sum(q.input_tokens),
                   count(*) FILTER (WHERE {_FAILED}), count(*) FILTER (WHERE {_PASSED})
            FROM route_learned l JOIN run_keys rk ON rk.run_id = l.run_id AND rk.key = l.key
            JOIN requests q ON q.key = l.key
            WHERE l.run_id = $run AND l.decision IS NOT NULL GROUP BY ALL
            """,
            {"run": run_id, "cheap": cheap},
        ).fetchall()
        by = {str(d): (int(n), int(t or 0), int(f), int(p)) for d, n, t, f, p in rows}
        out_row = self._con.execute(
            """
            SELECT avg(r.output_tokens) FROM run_keys rk JOIN requests q ON q.key = rk.key
            JOIN responses r ON r.key = rk.key WHERE rk.run_id = ? AND q.model = ?
            """,
            [run_id, cheap],
        ).fetchone()
        return {"by_decision": by, "cheap_output_mean": float(out_row[0]) if out_row and out_row[0] else None}

    def router_accuracy(self, run_ids: list[str]) -> dict[str, dict[str, int]]:
        """Per learned run: requests sent straight to the strong model (``skipped``), predicted to fail but explored,
        and for the cheap answers the check judged, how the prediction (chance at or above the threshold in force,
        0.5 where none paid) compares with the check: ``checked``, ``correct``, ``failed``, ``predicted_fail``,
        ``caught`` (predicted to fail and failed)."""
        wanted = pa.table({"run_id": pa.array(run_ids, pa.string())})
        with registered(self._con, "accuracy_runs", wanted):
            rows = self._con.execute(
                f"""
                WITH judged AS (
                    SELECT l.run_id, l.decision, l.fail_p >= coalesce(l.threshold, 0.5) AS predicted,
                           CASE WHEN {_FAILED} THEN true WHEN {_PASSED} THEN false END AS failed
                    FROM route_learned l JOIN run_keys rk ON rk.run_id = l.run_id AND rk.key = l.key
                    JOIN runs ru ON ru.run_id = l.run_id
                    WHERE l.run_id IN (SELECT run_id FROM accuracy_runs) AND l.decision IS NOT NULL)
                SELECT run_id, count(*) FILTER (WHERE decision = 'strong'),
                       count(*) FILTER (WHERE decision = 'explore'),
                       count(*) FILTER (WHERE predicted IS NOT NULL AND failed IS NOT NULL),
                       count(*) FILTER (WHERE predicted = failed),
                       count(*) FILTER (WHERE failed AND predicted IS NOT NULL),
                       count(*) FILTER (WHERE predicted AND failed IS NOT NULL),
                       count(*) FILTER (WHERE predicted AND failed)
                FROM judged GROUP BY run_id
                """.replace("$cheap", "ru.models[1]")
            ).fetchall()
        names = ("skipped", "explored", "checked", "correct", "failed", "predicted_fail", "caught")
        return {str(r[0]): dict(zip(names, (int(v) for v in r[1:]), strict=True)) for r in rows}
