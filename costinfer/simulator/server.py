"""costinfer's simulator: an OpenAI-compatible chat-completions server on loopback.

It is the honest offline rehearsal of a run: a real HTTP server, deterministic answers derived from the request (the
same request always gets the same answer), ``usage`` counted with the same tokenizer costinfer plans with, and a
configurable latency. ``costinfer run --provider simulate`` starts one in-process; ``costinfer simulate serve`` runs
one for other tools and for tests that must outlive a client (kill and resume). Every answered request can be logged
as one JSON line (``--log``), which tests read to see which calls were made.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import orjson
from aiohttp import web

from costinfer.pricing.catalog import is_reasoning_model
from costinfer.reading.tokens import TokenCounter
from costinfer.simulator.answers import (
    BAD_ANSWER,
    BAD_ANSWER_TOKENS,
    answer_for,
    answers_badly,
    anthropic_message,
    body_digest,
    chat_completion,
    reasoning_refusal,
)
from costinfer.simulator.batch_server import BatchApi
from costinfer.simulator.config import SimulatorConfig
from costinfer.simulator.endpoints import ProtocolEndpoints, VllmEndpoints
from costinfer.simulator.faults import rate_meter
from costinfer.simulator.messages import anthropic_prefix, messages_as_chat
from costinfer.simulator.prefix_cache import PromptCache
from costinfer.simulator.protocols import (
    GEMINI_THINKING,
    bedrock_error_type,
    converse_answer,
    error_body,
    gemini_answer,
    gemini_as_chat,
)


def _error(
    status: int, kind: str, message: str, protocol: str = "openai", headers: dict[str, str] | None = None
) -> web.Response:
    """An error in the protocol's shape (``protocols.error_body``)."""
    retry_s = None
    if headers and protocol == "gemini":  # a google.protobuf.Duration: fractions of a second are allowed ("0.05s")
        if "retry-after-ms" in headers:
            retry_s = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            retry_s = float(headers["retry-after"])
    payload = error_body(protocol, status, kind, message, retry_s)
    if protocol == "gemini" and headers:  # Google says how long to wait in the body, not in a header
        headers = {k: v for k, v in headers.items() if not k.startswith("retry-after")}
    if protocol == "bedrock":
        headers = {**(headers or {}), "x-amzn-ErrorType": bedrock_error_type(status, kind)}
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}


class Simulator(ProtocolEndpoints, VllmEndpoints):
    def __init__(self, cfg: SimulatorConfig | None = None) -> None:
        self.cfg = cfg or SimulatorConfig()
        self.counter = TokenCounter()
        self.requests = 0  # requests answered with 200 and a good body: the calls a provider would bill
        self.received = 0  # every request, faults and refusals included
        self.window = rate_meter(self.cfg.limit_mode, self.cfg.rpm, self.cfg.tpm)
        self.prompt_cache = PromptCache(self.counter)
        self.running = 0  # requests inside the running batch (vLLM's num_requests_running)
        self.waiting = 0  # requests queued for it (num_requests_waiting)
        self.peak_running = 0
        self.peak_waiting = 0
        self._slots: asyncio.Semaphore | None = None
        self._log: IO[bytes] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.batches = BatchApi(
            self._batch_answer,
            self._batch_record,
            self.cfg.batch.delay_s,
            self.cfg.batch.fail_rate,
            self.cfg.batch.expire_rate,
            self.cfg.seed,
        )
        self.batches.api_key = self.cfg.api_key

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1beta/models/{model}:generateContent", self.gemini)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.azure)
        app.router.add_post("/model/{model}/converse", self.bedrock)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_get("/metrics", self.metrics)
        self.batches.routes(app)
        return app

    def _batch_answer(self, body: dict[str, Any], protocol: str = "openai") -> tuple[int, dict[str, Any]]:
        """One batch line's answer, as the online endpoint would give it (no faults, no latency, no limits)."""
        if protocol == "anthropic":
            try:
                chat = messages_as_chat(body)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": str(exc)}}
            text, tokens, finish, _ = answer_for(chat, self.cfg)
            prompt = self.counter.count_body(chat)
            return 200, anthropic_message(body_digest(body), str(chat["model"]), text, finish, prompt, tokens)
        if protocol == "gemini":
            try:
                chat = gemini_as_chat(body, str(body.get("model")))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return 400, error_body("gemini", 400, "INVALID_ARGUMENT", str(exc))
            thinks = GEMINI_THINKING.match(str(chat["model"])) is not None
            text, tokens, finish, thinking = answer_for(chat, self.cfg, thinks)
            prompt = self.counter.count_body(chat)
            return 200, gemini_answer(body_digest(body), str(chat["model"]), text, finish, prompt, tokens, thinking, 0)
        model = str(body.get("model"))
        if is_reasoning_model(model, {}) and (refusal := reasoning_refusal(body)) is not None:
            return 400, {"error": {"message": refusal, "type": "invalid_request_error"}}
        prompt_tokens = self.counter.count_body(body)
        text, completion_tokens, finish, thinking = answer_for(body, self.cfg, is_reasoning_model(model, {}))
        digest = body_digest(body)
        return 200, chat_completion(
            digest, model, text, finish, prompt_tokens, completion_tokens, time.time(), thinking
        )

    def _batch_record(
        self, kind: str, body: dict[str, Any], status: int | str, usage: dict[str, Any] | None = None
    ) -> None:
        if kind == "batch_item" and status == 200:
            self.requests += 1
        if self._log is not None:
            line = {"t": time.time(), "kind": kind, "status": status, "protocol": "openai-batch"}
            line["digest" if kind == "batch_item" else "batch"] = (
                body_digest(body) if kind == "batch_item" else body.get("batch")
            )
            if usage is not None:
                line["usage"], line["model"] = usage, body.get("model")
            self._log.write(orjson.dumps(line) + b"\n")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        if self.cfg.api_key is not None and not self._key_ok(request.headers.get("authorization", "")[7:]):
            return _error(401, "invalid_request_error", "Incorrect API key provided.")
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
                raise ValueError("a chat request needs 'model' and 'messages'")
            prompt_tokens = self.counter.count_body(body)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "invalid_request_error", f"bad request: {exc}")
        if is_reasoning_model(str(body["model"]), {}):
            refusal = reasoning_refusal(body)
            if refusal is not None:
                self.received += 1
                self._record(time.time(), body_digest(body), body, 400, "openai")
                return _error(400, "invalid_request_error", refusal)
        return await self._serve(request, body, body, prompt_tokens, "openai")

    async def _serve(
        self, request: web.Request, body: dict[str, Any], chat: dict[str, Any], prompt_tokens: int, protocol: str
    ) -> web.StreamResponse:
        received = time.time()
        self.received += 1
        digest = body_digest(body)
        max_tokens = int(chat.get("max_tokens") or chat.get("max_completion_tokens") or 0)
        wait = self.window.admit(prompt_tokens + max_tokens)
        limit_headers = self.window.headers()
        if wait is not None:
            self._record(received, digest, body, 429, protocol)
            return _error(
                429,
                "rate_limit_error" if protocol == "anthropic" else "requests",
                "Rate limit reached: slow down",
                protocol,
                {**limit_headers, **_retry_after(wait)},
            )
        if chat["model"] in self.cfg.down_models:
            status = 529 if protocol == "anthropic" else 503
            self._record(received, digest, body, status, protocol)
            return _error(
                status,
                "overloaded_error" if protocol == "anthropic" else "server_error",
                f"{chat['model']} is unavailable (simulated outage)",
                protocol,
            )
        fault = self.cfg.faults.draw()
        if fault == "429":
            self._record(received, digest, body, 429, protocol)
            return _error(
                429,
                "rate_limit_error" if protocol == "anthropic" else "requests",
                "Rate limit reached (injected)",
                protocol,
                {**limit_headers, **_retry_after(self.cfg.faults.retry_after_s)},
            )
        if fault == "5xx":
            status = self.cfg.faults.pick((529, 500) if protocol == "anthropic" else (500, 502, 503))
            self._record(received, digest, body, status, protocol)
            kind = "overloaded_error" if status == 529 else ("api_error" if protocol == "anthropic" else "server_error")
            return _error(status, kind, "The server had an error (injected)", protocol)
        if fault == "timeout":
            self._record(received, digest, body, "timeout", protocol)
            await asyncio.sleep(self.cfg.faults.slow_s)
        model = str(chat["model"])
        reasoning = (protocol in ("openai", "azure") and is_reasoning_model(model, {})) or (
            protocol == "gemini" and GEMINI_THINKING.match(model) is not None
        )
        text, completion_tokens, finish, thinking = answer_for(chat, self.cfg, reasoning)
        bad = bool(self.cfg.answers.bad_answers) and answers_badly(chat, self.cfg)
        if bad:
            text, completion_tokens, finish, thinking = BAD_ANSWER, BAD_ANSWER_TOKENS, "stop", 0
        delay = self.cfg.latency_ms + (random.uniform(-1, 1) * self.cfg.jitter_ms if self.cfg.jitter_ms else 0.0)
        await self._generate(delay)
        if protocol == "anthropic":
            read, written = (
                self.prompt_cache.anthropic(body, anthropic_prefix(body)) if self.cfg.prompt_cache else (0, 0)
            )
            payload = anthropic_message(
                digest, chat["model"], text, finish, prompt_tokens, completion_tokens, read, written
            )
        elif protocol == "bedrock":
            payload = converse_answer(text, finish, prompt_tokens, completion_tokens)
        elif protocol == "gemini":
            cached = self.prompt_cache.openai(chat) if self.cfg.prompt_cache else 0
            payload = gemini_answer(digest, model, text, finish, prompt_tokens, completion_tokens, thinking, cached)
        else:
            cached = self.prompt_cache.openai(chat) if self.cfg.prompt_cache else 0
            payload = chat_completion(
                digest, chat["model"], text, finish, prompt_tokens, completion_tokens, received, thinking, cached
            )
        raw = orjson.dumps(payload)
        if fault == "drop":
            self._record(received, digest, body, "drop", protocol)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=200)
        if fault == "malformed":
            self._record(received, digest, body, "malformed", protocol)
            return web.Response(body=raw[: len(raw) // 2] + b"<!-- proxy error -->", content_type="application/json")
        if fault == "truncated":
            self._record(received, digest, body, "truncated", protocol)
            resp = web.StreamResponse(status=200, headers={"content-type": "application/json"})
            resp.content_length = len(raw)
            await resp.prepare(request)
            await resp.write(raw[: len(raw) // 2])
            if request.transport is not None:
                request.transport.close()
            return resp
        if fault != "timeout":
            self.requests += 1
            usage = payload.get("usageMetadata") if protocol == "gemini" else payload.get("usage")
            self._record(received, digest, body, 200, protocol, usage, bad)
        return web.Response(body=raw, content_type="application/json", headers=limit_headers)

    async def _generate(self, delay_ms: float) -> None:
        """Hold the request for its latency, inside the running batch when its size is bounded (``max_running``)."""
        if self.cfg.max_running is None:
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.cfg.max_running)
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            await asyncio.sleep(max(delay_ms, 0.0) / 1000)
        finally:
            self.running -= 1
            self._slots.release()

    def _record(
        self,
        t: float,
        digest: str,
        body: dict[str, Any],
        status: int | str,
        protocol: str,
        usage: dict[str, Any] | None = None,
        bad: bool = False,
    ) -> None:
        """One logged request; an answer delivered (status 200) carries the usage it was billed for, as sent, and
        ``bad`` when it was answered badly as told (``--bad-answers``, ``--bad-prompts``)."""
        if self._log is not None:
            line = {"t": t, "digest": digest, "model": body.get("model"), "status": status, "protocol": protocol}
            if usage is not None:
                line["usage"] = usage
            if bad:
                line["bad"] = True
            self._log.write(orjson.dumps(line) + b"\n")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self.cfg.log_path is not None:
            self._log = self.cfg.log_path.open("ab", buffering=0)
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        bound = port
        for address in self._runner.addresses:
            bound = int(address[1])
            break
        self.url = f"http://{host}:{bound}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def running_in_thread(cfg: SimulatorConfig | None = None) -> Iterator[Simulator]:
    """Start a simulator on a loopback port in a background thread; yields it (``.url`` is its base URL)."""
    sim = Simulator(cfg)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(sim.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="costinfer-simulator", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise failure[0]
    try:
        yield sim
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def serve_forever(host: str, port: int, cfg: SimulatorConfig, on_ready: Any = None) -> None:
    """Run a simulator in the foreground until SIGINT or SIGTERM."""

    async def main() -> None:
        import signal

        sim = Simulator(cfg)
        url = await sim.start(host, port)
        if on_ready is not None:
            on_ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await sim.stop()

    asyncio.run(main())
