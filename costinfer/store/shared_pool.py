"""A budget pool on the shared store: holds taken under a lock of the pool's row in PostgreSQL, so that the holds and
the spend of every run together never pass the pool's limit; the holds of a process that died are charged in full."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from costinfer.store.pools import ZERO, Reservation, period_key
from costinfer.store.postgres import Postgres


class SharedPool:
    """A budget pool in PostgreSQL, drawn on by every run naming it: a reservation is a hold taken under a lock of the
    pool's row, so that holds and spend together never pass the limit."""

    def __init__(self, pg: Postgres, owner: str, lease: float, name: str, run_id: str) -> None:
        self.pg = pg
        self.owner = owner
        self.lease = lease
        self.name = name
        self.run_id = run_id
        self._key: str | None = None

    def reserve(self, amount: Decimal) -> Reservation:
        return self.pg.retrying(lambda cur: self._reserve(cur, amount))

    def _reserve(self, cur: Any, amount: Decimal) -> Reservation:
        owner = self.owner
        cur.execute("SELECT limit_usd, period FROM budget_pools WHERE name = %s FOR UPDATE", [self.name])
        row = cur.fetchone()
        if row is None:
            return "no"
        limit, period = Decimal(row[0]), str(row[1])
        key = period_key(period, datetime.datetime.now(datetime.UTC))
        # the holds of processes that died are charged in full: they may have paid them
        cur.execute(
            "WITH gone AS (DELETE FROM pool_holds WHERE name = %s AND lease_until < now() "
            "RETURNING period_key, amount) "
            "INSERT INTO pool_spend (name, period_key, lapsed_usd) SELECT %s, period_key, sum(amount) FROM gone "
            "GROUP BY period_key ON CONFLICT (name, period_key) DO UPDATE "
            "SET lapsed_usd = pool_spend.lapsed_usd + excluded.lapsed_usd",
            [self.name, self.name],
        )
        spent, held = pool_state(cur, self.name, key, None)
        if spent + held + amount > limit:
            return "wait" if held > 0 else "no"
        cur.execute(
            "INSERT INTO pool_holds (name, owner, run_id, period_key, amount, lease_until) "
            "VALUES (%s, %s, %s, %s, %s, now() + %s * interval '1 second') ON CONFLICT (name, owner) DO UPDATE "
            "SET amount = pool_holds.amount + excluded.amount, lease_until = excluded.lease_until",
            [self.name, owner, self.run_id, key, amount, self.lease],
        )
        self._key = key
        return "ok"

    def settle(self, held: Decimal, cost: Decimal) -> None:
        """Calls made durable: their holds become their billed cost."""
        self.pg.retrying(lambda cur: self._settle(cur, held, cost))

    def _settle(self, cur: Any, held: Decimal, cost: Decimal) -> None:
        owner = self.owner
        cur.execute("SELECT 1 FROM budget_pools WHERE name = %s FOR UPDATE", [self.name])
        cur.execute(
            "UPDATE pool_holds SET amount = greatest(amount - %s, 0) WHERE name = %s AND owner = %s "
            "RETURNING period_key",
            [held, self.name, owner],
        )
        row = cur.fetchone()
        key = str(row[0]) if row else self._key or "total"
        if cost:
            cur.execute(
                "INSERT INTO pool_spend (name, period_key, spent_usd) VALUES (%s, %s, %s) "
                "ON CONFLICT (name, period_key) DO UPDATE "
                "SET spent_usd = pool_spend.spent_usd + excluded.spent_usd",
                [self.name, key, cost],
            )

    def release(self, held: Decimal) -> None:
        self.settle(held, ZERO)

    def left(self) -> Decimal:
        def read(cur: Any) -> Decimal:
            cur.execute("SELECT limit_usd, period FROM budget_pools WHERE name = %s", [self.name])
            row = cur.fetchone()
            if row is None:
                return ZERO
            key = period_key(str(row[1]), datetime.datetime.now(datetime.UTC))
            spent, held = pool_state(cur, self.name, key, None)
            return Decimal(row[0]) - spent - held

        return self.pg.retrying(read)

    def close(self) -> None:
        with self.pg.tx() as cur:
            cur.execute("DELETE FROM pool_holds WHERE name = %s AND owner = %s", [self.name, self.owner])


def pool_state(cur: Any, name: str, key: str, owner: str | None) -> tuple[Decimal, Decimal]:
    cur.execute(
        "SELECT coalesce(sum(spent_usd + lapsed_usd), 0) FROM pool_spend WHERE name = %s AND period_key = %s",
        [name, key],
    )
    spent = Decimal(cur.fetchone()[0])
    cur.execute("SELECT coalesce(sum(amount), 0) FROM pool_holds WHERE name = %s AND period_key = %s", [name, key])
    held = Decimal(cur.fetchone()[0])
    return spent, held


class same_tx:
    """A cursor already in a transaction, used like ``pg.tx()``."""

    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def __enter__(self) -> Any:
        return self.cur

    def __exit__(self, *exc: object) -> None:
        return None
