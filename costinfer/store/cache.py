"""The response cache as the ``cache`` commands see it: what it holds, forgetting, exporting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from costinfer.store.base import Part, copy_atomically, one_dict, transaction

EXPORT_OPTIONS = {"json": "FORMAT JSON", "csv": "FORMAT CSV, HEADER", "parquet": "FORMAT PARQUET"}


class CachePart(Part):
    def cache_stats(self) -> dict[str, Any]:
        """Answers and what they cost, requests, embeddings and runs kept, the oldest and newest answer."""
        row = self._con.execute(
            """
            SELECT (SELECT count(*) FROM responses) AS answers,
                   (SELECT coalesce(sum(cost_usd), 0) FROM responses) AS paid_usd,
                   (SELECT count(*) FROM requests) AS requests,
                   (SELECT count(*) FROM embeddings) AS embeddings,
                   (SELECT count(*) FROM runs) AS runs,
                   (SELECT min(created_at) FROM responses)::VARCHAR AS oldest,
                   (SELECT max(created_at) FROM responses)::VARCHAR AS newest
            """
        )
        return one_dict(row) or {}

    def clear_cache(self) -> int:
        row = self._con.execute("SELECT count(*) FROM responses").fetchone()
        with transaction(self._con):
            self._con.execute("DELETE FROM responses")
            self._con.execute("DELETE FROM embeddings")
        return int(row[0]) if row else 0

    def prune_cache(self, days: int) -> int:
        cutoff = f"now() - INTERVAL {int(days)} DAY"
        row = self._con.execute(f"SELECT count(*) FROM responses WHERE created_at < {cutoff}").fetchone()
        with transaction(self._con):
            self._con.execute(f"DELETE FROM responses WHERE created_at < {cutoff}")
            self._con.execute(f"DELETE FROM embeddings WHERE created_at < {cutoff}")
        return int(row[0]) if row else 0

    def export_cache(self, path: Path, fmt: str = "json") -> int:
        """Every cached answer with its request, as ``fmt`` (json lines, csv or parquet), written atomically."""
        query = (
            "SELECT r.key, q.endpoint, r.model, q.body AS request, r.response, r.finish_reason, r.input_tokens, "
            "r.output_tokens, r.cost_usd, r.run_id, r.created_at FROM responses r JOIN requests q ON q.key = r.key "
            "ORDER BY r.created_at"
        )
        copy_atomically(self._con, query, path, EXPORT_OPTIONS[fmt])
        row = self._con.execute("SELECT count(*) FROM responses").fetchone()
        return int(row[0]) if row else 0
