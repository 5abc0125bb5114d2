"""The parts of the shared store that write through to PostgreSQL: embeddings (computed once for the team), provider
batch jobs (found again from any machine) and the cache commands (acting on the shared cache)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from costinfer.store.postgres import PER_RUN, Postgres, pull_into_duck, push, push_from_duck
from costinfer.store.store import Store


def _chunks(values: list[str], size: int = 5000) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


class SharedParts(Store):
    pg: Postgres

    def _cursor(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        raise NotImplementedError

    # --- embeddings: computed once for the team

    def embeddings(self, model: str, hashes: list[str]) -> Iterator[pa.RecordBatch]:
        with self.pg.tx() as cur, self._cursor() as local:
            for part in _chunks(hashes):
                pull_into_duck(
                    self.pg, local, "embeddings", "model = %s AND text_hash = ANY(%s)", [model, part], cur=cur
                )
        return super().embeddings(model, hashes)

    def add_embeddings(self, table: pa.Table) -> None:
        super().add_embeddings(table)
        push(self.pg, "embeddings", ["model", "text_hash", "vector"], (list(r.values()) for r in table.to_pylist()))

    # --- a learned route learns from every run of the team

    def check_history(self, cheap: str, check: str, run_id: str, before_round: int) -> list[dict[str, Any]]:
        judged = (
            "SELECT rk.key FROM run_keys rk JOIN runs ru ON ru.run_id = rk.run_id WHERE ru.route_check = %s "
            "AND rk.routed AND (rk.route_checked OR rk.tier = 'escalated') AND rk.run_id <> %s"
        )
        with self.pg.tx() as cur, self._cursor() as local:
            pull_into_duck(self.pg, local, "runs", "route_check = %s", [check], cur=cur)
            pull_into_duck(
                self.pg, local, "run_keys",
                "(run_id, key) IN (SELECT rk.run_id, rk.key FROM run_keys rk JOIN runs ru ON ru.run_id = rk.run_id "
                "WHERE ru.route_check = %s AND rk.routed AND (rk.route_checked OR rk.tier = 'escalated') "
                "AND rk.run_id <> %s)",
                [check, run_id], cur=cur,
            )  # fmt: skip
            pull_into_duck(self.pg, local, "requests", f"key IN ({judged})", [check, run_id], cur=cur)
            pull_into_duck(self.pg, local, "responses", f"key IN ({judged})", [check, run_id], cur=cur)
        return super().check_history(cheap, check, run_id, before_round)

    # --- provider batch jobs: found again from any machine

    def add_batch(self, local_id: str, run_id: str, provider: str, endpoint: str, reserved: dict[str, Decimal]) -> int:
        part = super().add_batch(local_id, run_id, provider, endpoint, reserved)
        with self.pg.tx() as cur:
            push_from_duck(self.pg, self._con, "batches", "local_id = ?", [local_id], cur=cur)
            push_from_duck(self.pg, self._con, "batch_items", "local_id = ?", [local_id], cur=cur)
        return part

    def set_batch(self, local_id: str, **fields: Any) -> None:
        super().set_batch(local_id, **fields)
        push_from_duck(self.pg, self._con, "batches", "local_id = ?", [local_id], update=True)

    def batches(self, run_id: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        with self.pg.tx() as cur:
            where, params = ("run_id = %s", [run_id]) if run_id is not None else ("true", [])
            pull_into_duck(self.pg, self._con, "batches", where, params, cur=cur)
            pull_into_duck(
                self.pg, self._con, "batch_items", f"local_id IN (SELECT local_id FROM batches WHERE {where})", params,
                cur=cur,
            )  # fmt: skip
        return super().batches(run_id, open_only)

    # --- the cache commands act on the shared cache

    def clear_cache(self) -> int:
        with self.pg.tx() as cur:
            cur.execute("DELETE FROM responses")
            n = cur.rowcount
            cur.execute("DELETE FROM embeddings")
        super().clear_cache()
        return int(n)

    def prune_cache(self, days: int) -> int:
        with self.pg.tx() as cur:
            cur.execute("DELETE FROM responses WHERE created_at < now() - %s * interval '1 day'", [int(days)])
            n = cur.rowcount
            cur.execute("DELETE FROM embeddings WHERE created_at < now() - %s * interval '1 day'", [int(days)])
        super().prune_cache(days)
        return int(n)

    def copy_run_rows(self, run_id: str) -> None:
        """A reading command about one run (its report, its results): its rows, and the requests and answers they
        name, copied from the shared store."""
        named = (
            "key IN (SELECT key FROM run_keys WHERE run_id = %s "
            "UNION SELECT answer_key FROM run_keys WHERE run_id = %s)"
        )
        with self.pg.tx() as cur:
            for table in PER_RUN:
                pull_into_duck(self.pg, self._con, table, "run_id = %s", [run_id], cur=cur)
            for table in ("requests", "responses"):
                pull_into_duck(self.pg, self._con, table, named, [run_id, run_id], cur=cur)

    def cache_stats(self) -> dict[str, Any]:
        """Counted in PostgreSQL: the cache is not copied for it."""
        with self.pg.tx() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM responses), (SELECT coalesce(sum(cost_usd), 0) FROM responses), "
                "(SELECT count(*) FROM requests), (SELECT count(*) FROM embeddings), (SELECT count(*) FROM runs), "
                "(SELECT min(created_at) FROM responses)::text, (SELECT max(created_at) FROM responses)::text"
            )
            row = cur.fetchone()
        keys = ("answers", "paid_usd", "requests", "embeddings", "runs", "oldest", "newest")
        return dict(zip(keys, row, strict=True))

    def export_cache(self, path: Path, fmt: str = "json") -> int:
        """The shared cache, copied here first."""
        with self.pg.tx() as cur:
            pull_into_duck(self.pg, self._con, "responses", cur=cur)
            pull_into_duck(self.pg, self._con, "requests", "key IN (SELECT key FROM responses)", cur=cur)
        return super().export_cache(path, fmt)


__all__ = ["Any", "Decimal", "Iterator", "pa", "pull_into_duck", "push", "push_from_duck"]
