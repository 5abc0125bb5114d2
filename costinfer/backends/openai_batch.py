"""OpenAI's Batch API: a JSONL file of requests (``custom_id``, ``method``, ``url``, ``body``) uploaded with purpose
``batch`` (``POST /v1/files``), a batch over it (``POST /v1/batches``, endpoint ``/v1/chat/completions``, window
``24h``, with metadata), polled (``GET /v1/batches/{id}``), its output and error files read
(``GET /v1/files/{id}/content``), cancelled, and listed (``GET /v1/batches``) to find a batch whose id never reached
the store. Billed at the catalog's batch prices (half the online ones)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp
import orjson

from costinfer.backends.base import Backend
from costinfer.backends.batch_api import BatchState, ItemResult
from costinfer.errors import BackendError

# OpenAI's documented limits for one batch's input file
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024


class OpenAIBatches:
    """The Batch API of an OpenAI-protocol provider, over its transport and headers."""

    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES
    endpoint = "/v1/chat/completions"  # each line's url, and the batch's endpoint

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _url(self, path: str) -> str:
        return f"{self.backend.base_url}{path}"

    async def _json(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        return await self.backend.transport.json(method, self._url(path), payload)

    async def submit(self, items: list[tuple[str, dict[str, Any]]], metadata: dict[str, str]) -> BatchState:
        """Upload the items as a batch input file and create the batch; returns its state."""
        lines = b"".join(
            orjson.dumps({"custom_id": cid, "method": "POST", "url": self.endpoint, "body": body}) + b"\n"
            for cid, body in items
        )
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", lines, filename="costinfer-batch.jsonl", content_type="application/jsonl")
        raw, _ = await self.backend.transport.send("POST", self._url("/files"), form)
        file_id = str(orjson.loads(raw)["id"])
        created = await self._json(
            "POST",
            "/batches",
            {"input_file_id": file_id, "endpoint": self.endpoint, "completion_window": "24h",
             "metadata": metadata},
        )  # fmt: skip
        return _state(created)

    async def status(self, batch_id: str) -> BatchState:
        return _state(await self._json("GET", f"/batches/{batch_id}"))

    async def find(
        self, metadata: dict[str, str], created_after: datetime | None = None, requests: int | None = None
    ) -> list[BatchState]:
        """The server's batches whose metadata holds all of ``metadata`` (newest first)."""
        found, after = [], None
        while True:
            page = await self._json("GET", "/batches?limit=100" + (f"&after={after}" if after else ""))
            for item in page.get("data") or []:
                state = _state(item)
                if all(state.metadata.get(k) == v for k, v in metadata.items()):
                    found.append(state)
            if not page.get("has_more") or not page.get("data"):
                return found
            after = page["data"][-1]["id"]

    async def cancel(self, batch_id: str) -> BatchState:
        return _state(await self._json("POST", f"/batches/{batch_id}/cancel", {}))

    async def results(self, state: BatchState) -> list[ItemResult]:
        """Every item's outcome: answers from the output file, errors and expiries from the error file."""
        out: list[ItemResult] = []
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            raw, _ = await self.backend.transport.send("GET", self._url(f"/files/{file_id}/content"))
            for line in raw.splitlines():
                if line.strip():
                    out.append(_item(orjson.loads(line), self.backend))
        return out


def _state(data: dict[str, Any]) -> BatchState:
    return BatchState(
        id=str(data["id"]),
        status=str(data.get("status")),
        output_file_id=data.get("output_file_id"),
        error_file_id=data.get("error_file_id"),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


def _item(line: dict[str, Any], backend: Backend) -> ItemResult:
    custom_id = str(line.get("custom_id"))
    response = line.get("response") or {}
    error = line.get("error") or {}
    if response.get("status_code") == 200 and not error:
        try:
            return ItemResult(custom_id, backend.parse(orjson.dumps(response["body"])))  # the online answer's shape
        except BackendError as exc:
            return ItemResult(custom_id, None, "malformed_response", str(exc))
    if error:
        code = str(error.get("code") or "batch_error")
        return ItemResult(custom_id, None, "batch_expired" if code == "batch_expired" else code, error.get("message"))
    body = response.get("body") or {}
    message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    status = response.get("status_code")
    return ItemResult(
        custom_id, None, "server_error" if (status or 0) >= 500 else "bad_request", f"HTTP {status}: {message}"
    )
