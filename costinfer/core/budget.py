"""The budget guard: reserve a call's worst case before sending it, settle the billed cost after it.

All calls in flight together hold reservations that fit within what is left, so the spend can never pass the limit
as long as no call costs more than its reservation (the worst case is every input token at full price plus every
allowed output token). Money is exact: ``Decimal`` throughout. The guard is used from one event loop thread.
"""

from __future__ import annotations

from decimal import Decimal

ZERO = Decimal(0)


class BudgetGuard:
    def __init__(self, limit: Decimal | None, spent: Decimal = ZERO) -> None:
        self.limit = limit
        self.spent = spent  # settled, billed dollars (including what an earlier attempt of this run spent)
        self.reserved = ZERO  # held for calls in flight
        self.overruns = 0  # calls billed above their reservation: a sign that the worst case was underestimated

    @property
    def left(self) -> Decimal | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved

    def try_reserve(self, amount: Decimal) -> bool:
        if self.limit is not None and self.spent + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: Decimal, actual: Decimal) -> None:
        self.reserved -= reserved
        self.spent += actual
        if actual > reserved:
            self.overruns += 1

    def release(self, reserved: Decimal) -> None:
        self.reserved -= reserved
