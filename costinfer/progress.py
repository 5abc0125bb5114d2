"""How the core reports progress without knowing about terminals: the CLI passes a sink that renders it."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol


class ProgressSink(Protocol):
    def phase(self, name: str, total: int | None) -> None:
        """A new phase starts ("reading", "calling"); ``total`` is its size when known."""

    def advance(self, done: int, cost_usd: Decimal) -> None:
        """``done`` calls of this phase are durable; they cost ``cost_usd`` so far."""

    def note(self, text: str) -> None:
        """A message for the user (a warning, a resume hint)."""

    def problem(self, kind: str, text: str) -> None:
        """A call went wrong: ``kind`` is "retry" (it will be tried again) or "failed" (its row keeps the error)."""


class NullProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, done: int, cost_usd: Decimal) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def problem(self, kind: str, text: str) -> None:
        pass
