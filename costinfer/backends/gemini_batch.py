"""Gemini's Batch Mode (https://ai.google.dev/api/batch-mode), at the catalog's batch prices (half the online ones).

A batch is one model's requests, inline: ``POST {base}/v1beta/models/{model}:batchGenerateContent`` with
``{"batch": {"displayName", "inputConfig": {"requests": {"requests": [{"request", "metadata"}]}}}}`` (each request a
``GenerateContentRequest``, its ``metadata.key`` the item's id; inline input keeps the whole request under 20 MB, so a
larger part is sent as several batches). The answer is a long-running ``Operation`` (``name`` ``batches/{id}``,
``metadata`` the ``GenerateContentBatch`` with its ``state`` ``BATCH_STATE_*``, ``done``), polled with
``GET {base}/v1beta/{name}``; when it succeeded, ``output.inlinedResponses.inlinedResponses`` hold each request's
``response`` or ``error`` with its ``metadata``. ``POST {base}/v1beta/{name}:cancel`` cancels; ``GET
{base}/v1beta/batches`` lists, and a batch whose name never reached the store is found by its display name
(``costinfer-{run}-part{n}``).

Not given here: file input (``inputConfig.fileName``, uploaded through the Files API) and file output
(``responsesFile``), which Google uses for batches over 20 MB; costinfer sends such a part as several inline batches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from costinfer.backends.base import Backend
from costinfer.backends.batch_api import BatchState, ItemResult, server_time
from costinfer.errors import BackendError

MAX_BYTES = 20 * 1024 * 1024  # inline requests: the whole batch request under 20 MB
MAX_REQUESTS = 50_000
_STATES = {"BATCH_STATE_PENDING": "validating", "BATCH_STATE_RUNNING": "in_progress",
           "BATCH_STATE_SUCCEEDED": "completed", "BATCH_STATE_FAILED": "failed",
           "BATCH_STATE_CANCELLED": "cancelled", "BATCH_STATE_EXPIRED": "expired"}  # fmt: skip


class GeminiBatches:
    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES
    one_model = True  # a batch names one model in its path: the executor splits parts where the model changes

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def _json(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        return await self.backend.transport.json(method, f"{self.backend.base_url}/v1beta/{path}", payload)

    async def submit(self, items: list[tuple[str, dict[str, Any]]], metadata: dict[str, str]) -> BatchState:
        models = {str(body.get("model")) for _, body in items}
        if len(models) != 1:
            raise BackendError(f"a Gemini batch takes one model's requests, got {sorted(models)}")
        requests = [{"request": body, "metadata": {"key": cid}} for cid, body in items]
        batch = {"displayName": display_name(metadata), "inputConfig": {"requests": {"requests": requests}}}
        return _state(await self._json("POST", f"{models.pop()}:batchGenerateContent", {"batch": batch}))

    async def status(self, batch_id: str) -> BatchState:
        return _state(await self._json("GET", batch_id))

    async def find(
        self, metadata: dict[str, str], created_after: datetime | None = None, requests: int | None = None
    ) -> list[BatchState]:
        """The server's batches with this part's display name, created after ``created_after``."""
        del requests
        found, token = [], ""
        while True:
            page = await self._json("GET", "batches?pageSize=100" + (f"&pageToken={token}" if token else ""))
            for op in page.get("operations") or []:
                batch = op.get("metadata") or {}
                created = server_time(batch.get("createTime"))
                recent = created_after is None or created is None or created >= created_after
                if batch.get("displayName") == display_name(metadata) and recent:
                    found.append(_state(op))
            token = str(page.get("nextPageToken") or "")
            if not token:
                return found

    async def cancel(self, batch_id: str) -> BatchState:
        await self._json("POST", f"{batch_id}:cancel", {})
        return await self.status(batch_id)

    async def results(self, state: BatchState) -> list[ItemResult]:
        op = await self._json("GET", state.id)
        output = (op.get("metadata") or {}).get("output") or op.get("response") or {}
        if output.get("responsesFile"):
            raise BackendError(f"Gemini batch {state.id} answered in a file ({output['responsesFile']}): not read here")
        out = []
        for item in (output.get("inlinedResponses") or {}).get("inlinedResponses") or []:
            key = str((item.get("metadata") or {}).get("key"))
            if item.get("response") is not None:
                try:
                    out.append(ItemResult(key, self.backend.parse(orjson.dumps(item["response"]))))
                except BackendError as exc:
                    out.append(ItemResult(key, None, "malformed_response", str(exc)))
                continue
            error = item.get("error") or {}
            code = int(error.get("code") or 0)
            kind = "server_error" if code >= 500 or code == 0 else "bad_request"
            out.append(ItemResult(key, None, kind, f"{code}: {error.get('message')}"))
        return out


def display_name(metadata: dict[str, str]) -> str:
    return f"costinfer-{metadata.get('costinfer_run')}-part{metadata.get('costinfer_part')}"


def _state(op: dict[str, Any]) -> BatchState:
    batch = op.get("metadata") or {}
    status = _STATES.get(str(batch.get("state")), "in_progress")
    if op.get("done") and op.get("error"):  # an operation that ended in error (cancelled: code 1)
        status = "cancelled" if int(op["error"].get("code") or 0) == 1 else "failed"
    name = str(op.get("name") or batch.get("name"))
    return BatchState(
        id=name,
        status=status,
        output_file_id=name if status == "completed" else None,  # the answers are read from the operation
        error_file_id=None,
        metadata={},
    )
