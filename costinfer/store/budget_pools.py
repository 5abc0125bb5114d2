"""Budget pools in the DuckDB store (``costinfer budget``): their limits, and what their runs spent in the period."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from costinfer.errors import ConfigError
from costinfer.store.base import Part, money
from costinfer.store.pools import PERIODS, LocalPool, Pool, period_key, period_start


def check_pool(name: str, usd: Decimal | None = None, period: str | None = None) -> None:
    if not name or len(name) > 100 or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise ConfigError(f"budget pool name '{name}': use letters, digits, '-', '_' or '.' (at most 100)")
    if usd is not None and (not usd.is_finite() or usd <= 0):
        raise ConfigError(f"budget pool {name}: --usd must be a positive amount, got {usd}")
    if period is not None and period not in PERIODS:
        raise ConfigError(f"budget pool {name}: --per must be one of {', '.join(PERIODS)}, got '{period}'")


class PoolsPart(Part):
    def set_pool(self, name: str, usd: Decimal, period: str) -> None:
        check_pool(name, usd, period)
        self._con.execute(
            "INSERT INTO budget_pools (name, limit_usd, period) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
            "SET limit_usd = excluded.limit_usd, period = excluded.period, updated_at = now()",
            [name, money(usd), period],
        )

    def pools(self) -> list[dict[str, Any]]:
        """Each pool: its limit and period, what its runs spent in the period, what is held now, what is left."""
        now = datetime.datetime.now(datetime.UTC)
        out = []
        for name, limit, period in self._con.execute(
            "SELECT name, limit_usd, period FROM budget_pools ORDER BY name"
        ).fetchall():
            spent = self._pool_spent(str(name), str(period), now)
            out.append(_pool_row(str(name), Decimal(limit), str(period), spent, Decimal(0), now))
        return out

    def _pool_spent(self, name: str, period: str, now: datetime.datetime) -> Decimal:
        start = period_start(period, now)
        row = self._con.execute(
            "SELECT coalesce(sum(c.cost_usd), 0) FROM calls c JOIN runs r USING (run_id) "
            "WHERE r.budget_pool = ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR c.finished_at >= ?)",
            [name, start, start],
        ).fetchone()
        return Decimal(row[0]) if row else Decimal(0)

    def pool_for_run(self, name: str, run_id: str) -> Pool:
        row = self._con.execute("SELECT limit_usd, period FROM budget_pools WHERE name = ?", [name]).fetchone()
        if row is None:
            raise ConfigError(
                f"--budget-pool {name}: no such pool in this store; `costinfer budget set {name} --usd N`"
            )
        spent = self._pool_spent(name, str(row[1]), datetime.datetime.now(datetime.UTC))
        return LocalPool(name, Decimal(row[0]) - spent)


def _pool_row(
    name: str, limit: Decimal, period: str, spent: Decimal, held: Decimal, now: datetime.datetime
) -> dict[str, Any]:
    return {
        "name": name,
        "limit_usd": money(limit),
        "period": period,
        "period_key": period_key(period, now),
        "spent_usd": money(spent),
        "held_usd": money(held),
        "left_usd": money(limit - spent - held),
    }
