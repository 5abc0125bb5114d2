"""Routing decisions kept with a run: which distinct requests may be routed, which were sent as another model's
request (``tier`` 'routed' or 'escalated', ``answer_key`` the key sent), why (``route``), and which answers passed
the user's check (``route_checked``)."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa

from costinfer.store.base import ANSWER_AT, LENDER, SENT, UNANSWERED, Part, registered, transaction


class RoutingPart(Part):
    def mark_routed(self, run_id: str, own_model_keys: set[str]) -> None:
        """Every distinct request of the run is routed unless one of its rows named its own model."""
        own = pa.table({"key": pa.array(sorted(own_model_keys), pa.string())})
        with transaction(self._con), registered(self._con, "own_model_keys", own):
            self._con.execute(
                "UPDATE run_keys SET routed = key NOT IN (SELECT key FROM own_model_keys) WHERE run_id = ?", [run_id]
            )

    def routable(self, run_id: str, misfits: tuple[int, int, bool, bool] | None = None) -> list[dict[str, Any]]:
        """The routed requests nothing answers yet, in upgrade order (the row's priority, then its ``difficulty``
        metadata, then the longest prompt first): key, model, counts, and what the request needs of a model.
        ``misfits`` (most input tokens, most output tokens, takes tools, takes a JSON schema): only the requests
        that a model with these limits cannot take."""
        where = ""
        if misfits is not None:
            max_in, max_out, tools, schema = misfits
            where = f"AND (coalesce(q.input_bound, q.input_tokens) > {int(max_in)} OR q.max_tokens > {int(max_out)}"
            where += "" if tools else " OR json_exists(q.body, '$.tools')"
            where += "" if schema else " OR json_extract_string(q.body, '$.response_format.type') = 'json_schema'"
            where += ")"
        rel = self._con.execute(
            f"""
            SELECT rk.key, q.model, q.input_tokens, coalesce(q.input_bound, q.input_tokens) AS input_bound,
                   q.max_tokens, rk.priority,
                   json_exists(q.body, '$.tools') AS tools,
                   json_extract_string(q.body, '$.response_format.type') AS response_format
            FROM run_keys rk JOIN requests q ON q.key = rk.key
            LEFT JOIN items i ON i.run_id = rk.run_id AND i.row_idx = rk.first_idx
            WHERE rk.run_id = $1 AND rk.routed AND rk.tier IS NULL AND {UNANSWERED} {where}
            ORDER BY rk.priority DESC,
                     TRY_CAST(json_extract_string(i.metadata, '$.difficulty') AS DOUBLE) DESC NULLS LAST,
                     q.input_tokens DESC, rk.first_idx
            """,
            [run_id],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]

    def request_bodies(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        table = pa.table({"key": pa.array(keys, pa.string())})
        with registered(self._con, "wanted_keys", table):
            rows = self._con.execute(
                "SELECT DISTINCT ON (q.key) q.key, q.body FROM requests q JOIN wanted_keys w ON w.key = q.key"
            ).fetchall()
        return {str(k): orjson.loads(b) for k, b in rows}

    def reroute(self, run_id: str, changes: list[dict[str, Any]]) -> None:
        """Send each request ``key`` as ``new_key`` (``body``, ``norm_key``, ``group_key``) from now on: the new
        request is stored (with the original's counts) unless it is known, and the run's row says ``tier`` and
        ``route`` (why)."""
        if not changes:
            return
        table = pa.table(
            {
                name: pa.array([c[name] for c in changes], pa.string())
                for name in ("key", "new_key", "model", "body", "norm_key", "group_key", "tier", "route")
            }
        )
        with transaction(self._con), registered(self._con, "route_changes", table):
            self._con.execute(
                """
                INSERT INTO requests (key, endpoint, model, body, input_tokens, max_tokens, input_bound, norm_key,
                                      group_key, sem_text)
                SELECT DISTINCT ON (c.new_key) c.new_key, q.endpoint, c.model, c.body, q.input_tokens, q.max_tokens,
                       q.input_bound, c.norm_key, c.group_key, q.sem_text
                FROM route_changes c JOIN requests q ON q.key = c.key
                WHERE NOT EXISTS (SELECT 1 FROM requests x WHERE x.key = c.new_key)
                """
            )
            self._con.execute(
                """
                UPDATE run_keys SET answer_key = c.new_key, tier = c.tier, route_checked = false,
                       route = CASE WHEN run_keys.route IS NULL THEN c.route ELSE run_keys.route || '; ' || c.route END
                FROM route_changes c WHERE run_keys.run_id = $1 AND run_keys.key = c.key
                """,
                [run_id],
            )

    def unchecked_answers(self, run_id: str, models: list[str], limit: int = 5000) -> list[dict[str, Any]]:
        """Routed requests whose current answer came from one of ``models`` (the candidates below the strongest) and
        has not passed the check: the answer, the request it answered, and its first row's id and metadata."""
        wanted = pa.table({"model": pa.array(models, pa.string())})
        with registered(self._con, "check_models", wanted):
            rel = self._con.execute(
                f"""
                SELECT rk.key, {SENT} AS sent, {ANSWER_AT} AS answered, r.model, r.response,
                       r.finish_reason, q.body, i.row_id, i.metadata
                FROM run_keys rk
                {LENDER}
                JOIN responses r ON r.key = {ANSWER_AT}
                JOIN requests q ON q.key = {SENT}
                LEFT JOIN items i ON i.run_id = rk.run_id AND i.row_idx = rk.first_idx
                WHERE rk.run_id = $1 AND rk.routed AND NOT rk.route_checked
                  AND coalesce(rk.tier, '') <> 'fallback'
                  AND r.model IN (SELECT model FROM check_models)
                ORDER BY rk.first_idx LIMIT $2
                """,
                [run_id, limit],
            )
            cols = [d[0] for d in rel.description]
            return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]

    def mark_checked(self, run_id: str, accepted: list[tuple[str, str]]) -> None:
        """(key, note): the request's current answer passed the check; the note joins its ``route``."""
        if not accepted:
            return
        table = pa.table(
            {
                "key": pa.array([k for k, _ in accepted], pa.string()),
                "note": pa.array([n for _, n in accepted], pa.string()),
            }
        )
        with transaction(self._con), registered(self._con, "checked_keys", table):
            self._con.execute(
                """
                UPDATE run_keys SET route_checked = true,
                       route = CASE WHEN run_keys.route IS NULL THEN c.note ELSE run_keys.route || '; ' || c.note END
                FROM checked_keys c WHERE run_keys.run_id = $1 AND run_keys.key = c.key
                """,
                [run_id],
            )

    def routed_pending(self, run_id: str) -> list[tuple[str, int, int, int, int]]:
        """(model, max_tokens, requests, counted input, input bound) of the routed requests still to send, by the
        model each goes to now."""
        rows = self._con.execute(
            f"""
            SELECT q.model, q.max_tokens, count(*), sum(q.input_tokens), sum(coalesce(q.input_bound, q.input_tokens))
            FROM (SELECT DISTINCT {SENT} AS sent FROM run_keys rk
                  WHERE rk.run_id = ? AND rk.routed AND {UNANSWERED}) p
            JOIN requests q ON q.key = p.sent
            GROUP BY ALL ORDER BY 1, 2
            """,
            [run_id],
        ).fetchall()
        return [(str(m), int(t), int(n), int(c), int(b)) for m, t, n, c, b in rows]

    def escalation_history(self, input_path: str | None, model: str, run_id: str) -> tuple[int, int]:
        """(checked, escalated) answers of ``model`` to routed requests in earlier runs of the same dataset."""
        row = self._con.execute(
            """
            SELECT count(*) FILTER (WHERE rk.route_checked OR rk.tier = 'escalated'),
                   count(*) FILTER (WHERE rk.tier = 'escalated')
            FROM run_keys rk JOIN runs r ON r.run_id = rk.run_id JOIN requests q ON q.key = rk.key
            WHERE rk.routed AND r.input_path = ? AND rk.run_id <> ? AND q.model = ?
            """,
            [input_path, run_id, model],
        ).fetchone()
        checked, escalated = row or (0, 0)
        return int(checked or 0), int(escalated or 0)
