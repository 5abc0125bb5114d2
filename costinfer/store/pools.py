"""Budget pools: dollars per period that every run naming the pool draws on (``costinfer budget set``).

A run reserves each call's worst case in the pool before sending it and settles the billed cost once the outcome is
durable, so that the pool is never passed, whatever the number of concurrent runs. On a shared store (PostgreSQL)
the reservations are rows of ``pool_holds`` taken under a lock of the pool's row, with a lease: the holds of a process
that died are charged in full when their lease lapses (it may have paid them; the pool errs on the safe side). On the
DuckDB file, one process at a time: the pool's spend is the ledger's calls of its runs in the period.
"""

from __future__ import annotations

import datetime
import threading
from decimal import Decimal
from typing import Literal, Protocol

PERIODS = ("month", "week", "day", "total")
Reservation = Literal["ok", "wait", "no"]
ZERO = Decimal(0)


def period_start(period: str, now: datetime.datetime) -> datetime.datetime | None:
    """When the pool's current period began (UTC); None for a pool that never resets."""
    now = now.astimezone(datetime.UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return day.replace(day=1)
    if period == "week":
        return day - datetime.timedelta(days=day.weekday())
    if period == "day":
        return day
    return None


def period_key(period: str, now: datetime.datetime) -> str:
    start = period_start(period, now)
    return "total" if start is None else f"{period}:{start:%Y-%m-%d}"


class Pool(Protocol):
    """What a run draws on: ``reserve`` a call's worst case ("wait": others hold the room now, try again soon),
    ``settle`` its hold once its outcome is durable, ``release`` a hold never used. Called from worker threads."""

    name: str

    def reserve(self, amount: Decimal) -> Reservation: ...

    def settle(self, held: Decimal, cost: Decimal) -> None: ...

    def release(self, held: Decimal) -> None: ...

    def left(self) -> Decimal: ...

    def close(self) -> None: ...


class LocalPool:
    """A pool on a store one process holds: what is left of it when the run starts, drawn on in memory."""

    def __init__(self, name: str, left: Decimal) -> None:
        self.name = name
        self._left = left
        self.held = ZERO
        self.spent = ZERO
        self._lock = threading.Lock()  # worker threads reserve while the writer's thread settles

    def reserve(self, amount: Decimal) -> Reservation:
        with self._lock:
            if self.spent + self.held + amount <= self._left:
                self.held += amount
                return "ok"
            return "wait" if self.held > 0 else "no"

    def settle(self, held: Decimal, cost: Decimal) -> None:
        with self._lock:
            self.held -= held
            self.spent += cost

    def release(self, held: Decimal) -> None:
        self.settle(held, ZERO)

    def left(self) -> Decimal:
        with self._lock:
            return self._left - self.spent - self.held

    def close(self) -> None:
        return None
