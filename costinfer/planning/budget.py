"""The budget guard: reserve a call's worst case before sending it, settle the billed cost after it.

All calls in flight together hold reservations that fit within what is left, so the spend can never pass the limit
as long as no call costs more than its reservation (the worst case is every input token at full price plus every
allowed output token). A call that does not fit waits for the calls in flight to settle (``reserve``) rather than
ending the run: they are billed far below their worst case, as a rule. Money is exact: ``Decimal`` throughout. The
guard is used from one event loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import anyio

ZERO = Decimal(0)


class BudgetGuard:
    def __init__(self, limit: Decimal | None, spent: Decimal = ZERO) -> None:
        self.limit = limit
        self.spent = spent  # settled, billed dollars (including what an earlier attempt of this run spent)
        self.reserved = ZERO  # held for calls in flight
        self.overruns = 0  # calls billed above their reservation: a sign that the worst case was underestimated
        self._room = anyio.Event()  # set when a reservation is settled or released while workers wait for room
        self._waiting = 0

    @property
    def left(self) -> Decimal | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved

    def try_reserve(self, amount: Decimal) -> bool:
        if self.limit is not None and self.spent + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        return True

    async def reserve(self, amount: Decimal, stopping: Callable[[], bool]) -> bool:
        """Hold a call's worst case. While it does not fit and other calls are in flight, wait for them to settle
        (they are billed far below their worst case, as a rule) and try again; False once nothing is in flight and
        it still does not fit, or ``stopping()`` says the run is stopping."""
        while not self.try_reserve(amount):
            if stopping() or self.reserved <= 0:
                return False
            room = self._room
            self._waiting += 1
            try:
                await room.wait()
            finally:
                self._waiting -= 1
        return True

    def wake(self) -> None:
        """Wake the calls waiting for room (a reservation ended, or the run is stopping)."""
        if self._waiting:
            self._room.set()
            self._room = anyio.Event()

    def settle(self, reserved: Decimal, actual: Decimal) -> None:
        self.reserved -= reserved
        self.spent += actual
        if actual > reserved:
            self.overruns += 1
        self.wake()

    def release(self, reserved: Decimal) -> None:
        self.reserved -= reserved
        self.wake()
