"""What a run learns about self-hosted servers: its measured GPU time in the ledger (its cost spread over the calls
that used it, by tokens), and the size of the server's running batch, which the next run starts from."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from costinfer.store.base import Part, money, transaction


class GpuPart(Part):
    def calls_since(self, run_id: str, since: datetime.datetime) -> list[tuple[str, int, int]]:
        """(model, calls, input + output tokens) of the run's answered calls committed since ``since``."""
        rows = self._con.execute(
            "SELECT model, count(*), sum(input_tokens + output_tokens) FROM calls "
            "WHERE run_id = ? AND status = 'ok' AND finished_at >= ? GROUP BY model",
            [run_id, since],
        ).fetchall()
        return [(str(m), int(n), int(t or 0)) for m, n, t in rows]

    def attribute_cost(self, run_id: str, since: datetime.datetime, model: str, total_usd: Decimal) -> None:
        """Spread ``total_usd`` over ``model``'s answered calls of the run since ``since``, by their tokens; the
        cached answers of those calls carry the same cost."""
        total = str(money(total_usd))
        with transaction(self._con):
            self._con.execute(
                f"""
                UPDATE calls
                SET cost_usd = (CAST('{total}' AS DECIMAL(38,12)) * (calls.input_tokens + calls.output_tokens)
                                / nullif(t.tokens, 0))::DECIMAL(38,12)
                FROM (SELECT sum(input_tokens + output_tokens) AS tokens FROM calls
                      WHERE run_id = $1 AND model = $2 AND status = 'ok' AND finished_at >= $3) t
                WHERE calls.run_id = $1 AND calls.model = $2 AND calls.status = 'ok' AND calls.finished_at >= $3
                """,
                [run_id, model, since],
            )
            self._con.execute(
                "UPDATE responses SET cost_usd = c.cost_usd FROM calls c "
                "WHERE responses.key = c.key AND responses.run_id = $1 AND c.run_id = $1 AND c.model = $2 "
                "AND c.status = 'ok' AND c.finished_at >= $3",
                [run_id, model, since],
            )

    def spend_since(self, run_id: str, since: datetime.datetime) -> Decimal:
        row: Any = self._con.execute(
            "SELECT coalesce(sum(cost_usd), 0) FROM calls WHERE run_id = ? AND finished_at >= ?", [run_id, since]
        ).fetchone()
        return Decimal(row[0])

    def remember_batch(self, run_id: str, batch: float) -> None:
        """The most requests the run's server was seen running at once (``runs.server_batch``)."""
        self._con.execute("UPDATE runs SET server_batch = ? WHERE run_id = ?", [batch, run_id])

    def last_batch(self, endpoint: str) -> float | None:
        """The running batch the latest run against this server saw, if any run remembered one."""
        row = self._con.execute(
            "SELECT server_batch FROM runs WHERE endpoint = ? AND server_batch IS NOT NULL "
            "ORDER BY coalesce(finished_at, started_at) DESC LIMIT 1",
            [endpoint],
        ).fetchall()
        return float(row[0][0]) if row and row[0][0] else None
