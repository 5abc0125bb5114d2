"""Anthropic's Message Batches: the requests inline (``POST /v1/messages/batches``, up to 100,000 requests or 256 MB,
each ``{custom_id, params}``), polled (``GET /v1/messages/batches/{id}``, ``processing_status`` ``ended``), results as
JSONL behind ``results_url`` (per request ``succeeded``, ``errored``, ``canceled`` or ``expired``), cancelled, listed.

Anthropic's batches carry no metadata, so ``find`` matches a batch that never reached the store by what it can see:
created after the local record, with the same number of requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from costinfer.backends.base import Backend
from costinfer.backends.batch_api import BatchState, ItemResult, server_time

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024


class AnthropicBatches:
    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def _json(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        return await self.backend.transport.json(method, f"{self.backend.base_url}{path}", payload)

    async def submit(self, items: list[tuple[str, dict[str, Any]]], metadata: dict[str, str]) -> BatchState:
        del metadata  # not part of Anthropic's batches: see find()
        requests = [{"custom_id": cid, "params": params} for cid, params in items]
        return _state(await self._json("POST", "/v1/messages/batches", {"requests": requests}))

    async def status(self, batch_id: str) -> BatchState:
        return _state(await self._json("GET", f"/v1/messages/batches/{batch_id}"))

    async def find(
        self, metadata: dict[str, str], created_after: datetime | None = None, requests: int | None = None
    ) -> list[BatchState]:
        del metadata
        page = await self._json("GET", "/v1/messages/batches?limit=100")
        found = []
        for item in page.get("data") or []:
            created = server_time(item.get("created_at"))
            total = sum(int(v) for v in (item.get("request_counts") or {}).values())
            if (created_after is None or created is None or created >= created_after) and (
                requests is None or total == requests
            ):
                found.append(_state(item))
        return found

    async def cancel(self, batch_id: str) -> BatchState:
        return _state(await self._json("POST", f"/v1/messages/batches/{batch_id}/cancel", {}))

    async def results(self, state: BatchState) -> list[ItemResult]:
        if not state.output_file_id:
            return []
        raw, _ = await self.backend.transport.send("GET", state.output_file_id)  # the batch's results_url
        out = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            data = orjson.loads(line)
            custom_id, result = str(data.get("custom_id")), data.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                out.append(ItemResult(custom_id, self.backend.parse(orjson.dumps(result["message"]))))
            elif kind == "errored":
                error = (result.get("error") or {}).get("error") or {}
                out.append(ItemResult(custom_id, None, str(error.get("type") or "batch_error"), error.get("message")))
            else:  # canceled, expired
                out.append(ItemResult(custom_id, None, f"batch_{kind}", f"the request was {kind}"))
        return out


def _state(data: dict[str, Any]) -> BatchState:
    ended = data.get("processing_status") == "ended"
    return BatchState(
        id=str(data["id"]),
        status="completed" if ended else str(data.get("processing_status")),
        output_file_id=data.get("results_url"),
        error_file_id=None,
        metadata={},
    )
