"""OpenAI's Batch API in the simulator: files (``/v1/files``), batches (``/v1/batches``: create, get, list, cancel) and
their output and error files, as the API reference describes them. A batch completes ``batch_delay_s`` after it was
created; each item may fail (``batch_fail_rate``) or expire (``batch_expire_rate``). Everything lives in memory, so a
client process may die and come back to the same server to collect its batch."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from costinfer.simulator.gemini_batch import GeminiBatchEndpoints

FINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    created_at: float
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "request_counts": dict(self.counts),
            "metadata": self.metadata or None,
        }


class BatchApi:
    """The batch endpoints; ``answer`` turns one chat body into (status, response body) as the online path would."""

    def __init__(
        self,
        answer: Callable[[dict[str, Any], str], tuple[int, dict[str, Any]]],
        record: Callable[..., None],  # (kind, body, status, usage of an answer delivered)
        delay_s: float = 0.5,
        fail_rate: float = 0.0,
        expire_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.answer = answer
        self.record = record
        self.delay_s = delay_s
        self.fail_rate = fail_rate
        self.expire_rate = expire_rate
        self.rng = random.Random(seed)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, _Batch] = {}
        self.created = 0  # batches created: what a test counts to prove nothing was submitted twice
        self.api_key: str | None = None  # the one key Azure's and Gemini's accept (the simulator's --api-key)
        self.gemini = GeminiBatchEndpoints(self)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self.get)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)
        # Azure OpenAI's Global Batch: the same API under /openai (its api-version and key checked)
        app.router.add_post("/openai/files", self.azure(self.upload))
        app.router.add_get("/openai/files/{file_id}/content", self.azure(self.content))
        app.router.add_post("/openai/batches", self.azure(self.create))
        app.router.add_get("/openai/batches", self.azure(self.list_batches))
        app.router.add_get("/openai/batches/{batch_id}", self.azure(self.get))
        app.router.add_post("/openai/batches/{batch_id}/cancel", self.azure(self.cancel))
        # Anthropic's Message Batches: the requests inline, results as JSONL behind results_url
        app.router.add_post("/v1/messages/batches", self.create_messages)
        app.router.add_get("/v1/messages/batches", self.list_messages)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.get_messages)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self.cancel_messages)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.messages_results)
        self.gemini.routes(app)  # Gemini's Batch Mode

    def azure(self, handler: Callable[[web.Request], Awaitable[web.Response]]) -> Callable[..., Any]:
        """A batch endpoint as Azure serves it: an api-version, and the key the simulator wants (if any)."""

        async def checked(request: web.Request) -> web.Response:
            if not request.query.get("api-version"):
                return _error(404, "Resource not found")
            key = request.headers.get("api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if not key or (self.api_key is not None and key != self.api_key):
                return _error(401, "Access denied due to invalid subscription key or wrong API endpoint.")
            return await handler(request)

        return checked

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("purpose") != "batch" or not hasattr(form.get("file"), "file"):
            return _error(400, "a batch input file needs purpose=batch and a file part")
        part: Any = form["file"]
        data = part.file.read()
        file_id = f"file-sim{uuid.uuid4().hex[:20]}"
        self.files[file_id] = data
        return web.json_response(
            {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
             "filename": part.filename, "purpose": "batch"}
        )  # fmt: skip

    async def content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return _error(404, "no such file")
        return web.Response(body=data, content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if body.get("input_file_id") not in self.files:
            return _error(400, "input_file_id: no such file")
        azure = request.path.startswith("/openai/")
        endpoint = "/chat/completions" if azure else "/v1/chat/completions"
        if body.get("endpoint") != endpoint or body.get("completion_window") != "24h":
            return _error(400, f"endpoint must be {endpoint} and completion_window 24h")
        lines = [orjson.loads(raw) for raw in self.files[body["input_file_id"]].splitlines()]
        if any(line.get("url") != endpoint for line in lines):
            return _error(400, f"each line's url must be the batch's endpoint, {endpoint}")
        batch = _Batch(
            id=f"batch_sim{uuid.uuid4().hex[:20]}",
            input_file_id=body["input_file_id"],
            endpoint=body["endpoint"],
            metadata=dict(body.get("metadata") or {}),
            created_at=time.time(),
        )
        batch.counts["total"] = len(self.files[batch.input_file_id].splitlines())
        self.batches[batch.id] = batch
        self.created += 1
        self.record("batch_create", {"batch": batch.id, "metadata": batch.metadata}, "created")
        return web.json_response(batch.as_dict())

    async def get(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        self._advance(batch)
        return web.json_response(batch.as_dict())

    async def list_batches(self, request: web.Request) -> web.Response:
        for batch in self.batches.values():
            self._advance(batch)
        data = [b.as_dict() for b in sorted(self.batches.values(), key=lambda b: -b.created_at)]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        if batch.status not in FINAL:
            batch.status = "cancelled"
        return web.json_response(batch.as_dict())

    def _advance(self, batch: _Batch) -> None:
        """Complete a batch whose time has come: answer every line, some failing or expiring as configured."""
        if batch.status in FINAL:
            return
        if time.time() - batch.created_at < self.delay_s:
            batch.status = "in_progress"
            return
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for raw in self.files[batch.input_file_id].splitlines():
            line = orjson.loads(raw)
            custom_id, chat = line["custom_id"], line["body"]
            roll = self.rng.random()
            if roll < self.expire_rate:
                error = {"code": "batch_expired", "message": "This request could not be executed before the window"}
                errors.append({"id": _req_id(), "custom_id": custom_id, "response": None, "error": error})
                continue
            status, body = self.answer(chat, "openai")
            if roll < self.expire_rate + self.fail_rate:
                status, body = 500, {"error": {"message": "The server had an error (injected)", "type": "server_error"}}
            self.record("batch_item", chat, status, body.get("usage") if status == 200 else None)
            response = {"status_code": status, "request_id": _req_id(), "body": body}
            entry = {"id": _req_id(), "custom_id": custom_id, "response": response, "error": None}
            (outputs if status == 200 else errors).append(entry)
        batch.counts["completed"], batch.counts["failed"] = len(outputs), len(errors)
        batch.output_file_id = self._file(outputs)
        batch.error_file_id = self._file(errors) if errors else None
        batch.status = "completed"

    def _file(self, lines: list[dict[str, Any]]) -> str:
        file_id = f"file-sim{uuid.uuid4().hex[:20]}"
        self.files[file_id] = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        return file_id

    # --- Anthropic's Message Batches -------------------------------------------------------------------------------

    async def create_messages(self, request: web.Request) -> web.Response:
        if not request.headers.get("x-api-key"):
            return _error(401, "x-api-key header is required")
        body = orjson.loads(await request.read())
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return _error(400, "requests: a non-empty list of {custom_id, params} is required")
        file_id = f"file-sim{uuid.uuid4().hex[:20]}"
        self.files[file_id] = b"".join(orjson.dumps(r) + b"\n" for r in requests)
        batch = _Batch(f"msgbatch_sim{uuid.uuid4().hex[:20]}", file_id, "/v1/messages", {}, time.time())
        batch.counts["total"] = len(requests)
        self.batches[batch.id] = batch
        self.created += 1
        self.record("batch_create", {"batch": batch.id, "metadata": {}}, "created")
        return web.json_response(self._message_batch(batch, request))

    async def get_messages(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        self._advance_messages(batch)
        return web.json_response(self._message_batch(batch, request))

    async def list_messages(self, request: web.Request) -> web.Response:
        found = [b for b in self.batches.values() if b.endpoint == "/v1/messages"]
        for batch in found:
            self._advance_messages(batch)
        data = [self._message_batch(b, request) for b in sorted(found, key=lambda b: -b.created_at)]
        return web.json_response({"data": data, "has_more": False, "first_id": None, "last_id": None})

    async def cancel_messages(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        if batch.status not in FINAL:
            batch.status = "cancelled"
        return web.json_response(self._message_batch(batch, request))

    async def messages_results(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None or batch.output_file_id is None:
            return _error(404, "the batch has no results yet")
        return web.Response(body=self.files[batch.output_file_id], content_type="application/binary")

    def _message_batch(self, batch: _Batch, request: web.Request) -> dict[str, Any]:
        ended = batch.status in FINAL
        counts = {
            "processing": 0 if ended else batch.counts["total"],
            "succeeded": batch.counts["completed"],
            "errored": batch.counts["failed"],
            "canceled": 0,
            "expired": batch.counts.get("expired", 0),
        }
        base = str(request.url.origin())
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch.created_at)),
            "ended_at": None,
            "results_url": f"{base}/v1/messages/batches/{batch.id}/results" if batch.output_file_id else None,
        }

    def _advance_messages(self, batch: _Batch) -> None:
        if batch.status in FINAL or time.time() - batch.created_at < self.delay_s:
            return
        results = []
        for raw in self.files[batch.input_file_id].splitlines():
            line = orjson.loads(raw)
            custom_id, params = line["custom_id"], line["params"]
            roll = self.rng.random()
            if roll < self.expire_rate:
                results.append({"custom_id": custom_id, "result": {"type": "expired"}})
                batch.counts["expired"] = batch.counts.get("expired", 0) + 1
                continue
            status, body = self.answer(params, "anthropic")
            if roll < self.expire_rate + self.fail_rate:
                status, body = 500, {"type": "error", "error": {"type": "api_error", "message": "injected"}}
            self.record("batch_item", params, status, body.get("usage") if status == 200 else None)
            if status == 200:
                results.append({"custom_id": custom_id, "result": {"type": "succeeded", "message": body}})
                batch.counts["completed"] += 1
            else:
                results.append({"custom_id": custom_id, "result": {"type": "errored", "error": body}})
                batch.counts["failed"] += 1
        batch.output_file_id = self._file(results)
        batch.status = "completed"


def _req_id() -> str:
    return f"batch_req_{uuid.uuid4().hex[:24]}"


def _error(status: int, message: str) -> web.Response:
    payload = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
