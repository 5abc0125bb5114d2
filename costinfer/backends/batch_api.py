"""What every provider batch API client offers (``Backend.batches()``): submit a batch of requests, check its
status, find a batch the store never recorded the id of, cancel it, read its items' outcomes. The batch executor
(``execution.batch_mode``) works through this protocol only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from costinfer.backends.completion import Completion

FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def server_time(value: Any) -> datetime | None:
    """A provider's RFC 3339 time (Gemini's with 9 fractional digits) as an aware datetime, UTC when it names no
    zone, so it compares with the store's ``TIMESTAMPTZ`` values; None when absent."""
    if not value:
        return None
    moment = datetime.fromisoformat(str(value))  # 3.11: a Z, and any number of fractional digits
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BatchState:
    id: str
    status: str  # validating, in_progress, finalizing, completed, failed, expired, cancelling, cancelled
    output_file_id: str | None
    error_file_id: str | None
    metadata: dict[str, str]

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True, slots=True)
class ItemResult:
    custom_id: str
    completion: Completion | None  # None: the item failed or expired
    error_class: str | None = None
    message: str | None = None


class BatchClient(Protocol):
    max_requests: int  # the most requests one batch takes
    max_bytes: int  # the largest batch the API takes, in bytes of its input

    async def submit(self, items: list[tuple[str, dict[str, Any]]], metadata: dict[str, str]) -> BatchState: ...

    async def status(self, batch_id: str) -> BatchState: ...

    async def find(
        self, metadata: dict[str, str], created_after: datetime | None = None, requests: int | None = None
    ) -> list[BatchState]:
        """The server's batches that may be this one (newest first): by metadata where the API keeps it."""
        ...

    async def cancel(self, batch_id: str) -> BatchState: ...

    async def results(self, state: BatchState) -> list[ItemResult]: ...
