"""Gemini's Batch Mode as the simulator serves it (https://ai.google.dev/api/batch-mode): inline requests in,
a long-running ``Operation`` out, answered after the batch delay with each request's ``GenerateContentResponse`` (or
``error``) and its ``metadata``, in the order sent. The key is checked as for ``generateContent``; the batches,
their count and the log are the shared ``BatchApi``'s, so a test counts Gemini's batches as OpenAI's."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web

from costinfer.simulator.protocols import error_body


class SharedBatches(Protocol):
    """What Gemini's endpoints share with the other batch APIs (``batch_server.BatchApi``)."""

    api_key: str | None
    created: int
    delay_s: float
    fail_rate: float
    expire_rate: float
    rng: random.Random
    answer: Callable[[dict[str, Any], str], tuple[int, dict[str, Any]]]
    record: Callable[..., None]


_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta."


@dataclass
class GeminiBatch:
    name: str
    model: str
    display_name: str
    requests: list[dict[str, Any]]
    created_at: float
    state: str = "BATCH_STATE_PENDING"
    responses: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0

    def operation(self) -> dict[str, Any]:
        done = self.state in ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED")
        stats = {"requestCount": str(len(self.requests)),
                 "successfulRequestCount": str(len(self.responses) - self.failed) if done else "0",
                 "failedRequestCount": str(self.failed),
                 "pendingRequestCount": "0" if done else str(len(self.requests))}  # fmt: skip
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.created_at))
        batch: dict[str, Any] = {"@type": f"{_TYPE}GenerateContentBatch", "model": self.model, "name": self.name,
                                 "displayName": self.display_name, "createTime": f"{created}.123456789Z",
                                 "batchStats": stats, "state": self.state}  # fmt: skip
        op: dict[str, Any] = {"name": self.name, "metadata": batch, "done": done}
        if self.state == "BATCH_STATE_SUCCEEDED":
            output = {"inlinedResponses": {"inlinedResponses": self.responses}}
            batch["output"] = output
            op["response"] = {"@type": f"{_TYPE}GenerateContentBatchOutput", **output}
        elif self.state == "BATCH_STATE_CANCELLED":
            op["error"] = {"code": 1, "message": "CANCELLED"}
        return op


class GeminiBatchEndpoints:
    def __init__(self, api: SharedBatches) -> None:
        self.api = api
        self.batches: dict[str, GeminiBatch] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{model}:batchGenerateContent", self.create)
        app.router.add_get("/v1beta/batches", self.list)
        app.router.add_get("/v1beta/batches/{batch_id}", self.get)
        app.router.add_post("/v1beta/batches/{batch_id}:cancel", self.cancel)

    def _refused(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key")
        if not key or (self.api.api_key is not None and key != self.api.api_key):
            return _error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        return None

    async def create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = orjson.loads(await request.read())
        batch = body.get("batch") if isinstance(body, dict) else None
        requests = ((batch or {}).get("inputConfig") or {}).get("requests") or {}
        inline = requests.get("requests") if isinstance(requests, dict) else None
        if not isinstance(batch, dict) or not batch.get("displayName"):
            return _error(400, "* batch.display_name: display_name is required")
        if not isinstance(inline, list) or not inline or not all(isinstance(r.get("request"), dict) for r in inline):
            return _error(400, "* batch.input_config: inlined requests must each hold a request")
        model = f"models/{request.match_info['model']}"
        if any(r["request"].get("model") not in (None, model) for r in inline):
            return _error(400, f"* batch.input_config: every request's model must be the batch's, {model}")
        name = f"batches/sim{uuid.uuid4().hex[:20]}"
        self.batches[name] = GeminiBatch(name, model, str(batch["displayName"]), inline, time.time())
        self.api.created += 1
        self.api.record("batch_create", {"batch": name, "metadata": {"displayName": batch["displayName"]}}, "created")
        return web.json_response(self.batches[name].operation())

    async def get(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(f"batches/{request.match_info['batch_id']}")
        if batch is None:
            return _error(404, "Batch not found.")
        self._advance(batch)
        return web.json_response(batch.operation())

    async def list(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        size = int(request.query.get("pageSize") or 50)
        start = int(request.query.get("pageToken") or 0)
        ordered = sorted(self.batches.values(), key=lambda b: -b.created_at)
        for batch in ordered:
            self._advance(batch)
        page: dict[str, Any] = {"operations": [b.operation() for b in ordered[start : start + size]]}
        if start + size < len(ordered):
            page["nextPageToken"] = str(start + size)
        return web.json_response(page)

    async def cancel(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(f"batches/{request.match_info['batch_id']}")
        if batch is None:
            return _error(404, "Batch not found.")
        if batch.state in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            batch.state = "BATCH_STATE_CANCELLED"
        return web.json_response({})

    def _advance(self, batch: GeminiBatch) -> None:
        """Answer every request once the batch's time has come; some fail as the batch faults say."""
        if batch.state not in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            return
        if time.time() - batch.created_at < self.api.delay_s:
            batch.state = "BATCH_STATE_RUNNING"
            return
        model = batch.model.removeprefix("models/")
        for item in batch.requests:
            roll = self.api.rng.random()
            request = {**item["request"], "model": model}
            status, body = self.api.answer(request, "gemini")
            if roll < self.api.expire_rate + self.api.fail_rate:
                status, body = 500, error_body("gemini", 500, "INTERNAL", "Internal error encountered (injected)")
            usage = body.get("usageMetadata") if status == 200 else None
            self.api.record("batch_item", item["request"], status, usage)
            out: dict[str, Any] = {"metadata": item.get("metadata") or {}}
            if status == 200:
                out["response"] = body
            else:
                out["error"] = {"code": status, "message": body["error"]["message"]}
                batch.failed += 1
            batch.responses.append(out)
        batch.state = "BATCH_STATE_SUCCEEDED"


def _error(status: int, message: str, kind: str = "INVALID_ARGUMENT") -> web.Response:
    body = error_body("gemini", status, kind, message)
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
