"""Provider batch jobs in the store: each recorded before anything is uploaded, so that a process that dies at any
moment finds it again (or looks it up on the server by its metadata) instead of submitting twice."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pyarrow as pa

from costinfer.store.base import Part, registered, transaction

OPEN = ("preparing", "submitted")


class BatchesPart(Part):
    def add_batch(self, local_id: str, run_id: str, provider: str, endpoint: str, reserved: dict[str, Decimal]) -> int:
        """Record a batch about to be submitted (state 'preparing') with its items (key -> reserved worst case);
        returns its part number within the run."""
        con = self._con
        with transaction(con):
            row = con.execute("SELECT coalesce(max(part), 0) + 1 FROM batches WHERE run_id = ?", [run_id]).fetchone()
            part = int(row[0]) if row else 1
            total = sum(reserved.values(), Decimal(0))
            con.execute(
                "INSERT INTO batches (local_id, run_id, part, provider, endpoint, state, requests, reserved_usd) "
                "VALUES (?, ?, ?, ?, ?, 'preparing', ?, ?)",
                [local_id, run_id, part, provider, endpoint, len(reserved), total],
            )
            items = pa.table(
                {
                    "key": pa.array(list(reserved), pa.string()),
                    "reserved": pa.array([str(v) for v in reserved.values()], pa.string()),
                }
            )
            with registered(con, "new_batch_items", items):
                con.execute(
                    "INSERT INTO batch_items SELECT ?, key, reserved::DECIMAL(38,12) FROM new_batch_items", [local_id]
                )
        return part

    def set_batch(self, local_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        self._con.execute(
            f"UPDATE batches SET {sets}, updated_at = now() WHERE local_id = ?", [*fields.values(), local_id]
        )

    def batches(self, run_id: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        where, params = [], []
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if open_only:
            where.append(f"state IN {OPEN}")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rel = self._con.execute(f"SELECT * FROM batches {clause} ORDER BY created_at, part", params)
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]

    def batch_items(self, local_id: str) -> dict[str, tuple[str, Decimal]]:
        """key -> (model, reserved worst case) of a batch's items."""
        rows = self._con.execute(
            "SELECT b.key, q.model, b.reserved_usd FROM batch_items b JOIN requests q ON q.key = b.key "
            "WHERE b.local_id = ?",
            [local_id],
        ).fetchall()
        return {str(k): (str(m), Decimal(r)) for k, m, r in rows}
