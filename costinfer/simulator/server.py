"""costinfer's simulator: an OpenAI-compatible chat-completions server on loopback.

It is the honest offline rehearsal of a run: a real HTTP server, deterministic answers derived from the request (the
same request always gets the same answer), ``usage`` counted with the same tokenizer costinfer plans with, and a
configurable latency. ``costinfer run --provider simulate`` starts one in-process; ``costinfer simulate serve`` runs
one for other tools and for tests that must outlive a client (kill and resume). Every answered request can be logged
as one JSON line (``--log``), which tests read to see which calls were made.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from aiohttp import web

from costinfer.core.prices import is_reasoning_model
from costinfer.core.tokens import TokenCounter
from costinfer.simulator.faults import Faults, rate_meter

# Common English words that are one token each in both cl100k_base and o200k_base (with their leading space).
_WORDS = [
    "the",
    "answer",
    "is",
    "that",
    "this",
    "request",
    "was",
    "handled",
    "by",
    "a",
    "simple",
    "model",
    "which",
    "can",
    "give",
    "good",
    "short",
    "replies",
    "about",
    "many",
    "topics",
    "such",
    "as",
    "money",
    "time",
    "work",
    "people",
    "data",
    "and",
    "more",
    "so",
    "you",
    "may",
    "use",
    "it",
    "to",
    "test",
    "your",
    "pipeline",
    "before",
    "paying",
]
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano")


@dataclass(slots=True)
class SimulatorConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    log_path: Path | None = None
    min_output_tokens: int = 4
    max_output_tokens: int = 48
    faults: Faults = field(default_factory=Faults)
    rpm: int | None = None  # enforced requests per minute (429 past it)
    tpm: int | None = None  # enforced tokens per minute: prompt tokens plus max_tokens, as OpenAI counts them
    limit_mode: str = "window"  # how rpm/tpm are enforced: window (sliding minute), bucket, second (see faults.py)
    down_models: tuple[str, ...] = ()  # models in an outage: every request for them gets a 503 (529 on Anthropic's)
    min_reasoning_tokens: int = 16  # a reasoning model's hidden thinking per answer (o-series, gpt-5 family)
    max_reasoning_tokens: int = 96


def _error(
    status: int, kind: str, message: str, protocol: str = "openai", headers: dict[str, str] | None = None
) -> web.Response:
    """An error in the protocol's shape: OpenAI's {"error": {...}} or Anthropic's {"type": "error", "error": {...}}."""
    if protocol == "anthropic":
        payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _chat_completion(
    digest: str,
    model: str,
    text: str,
    finish: str,
    prompt_tokens: int,
    completion_tokens: int,
    created: float,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-sim-{digest[:24]}",
        "object": "chat.completion",
        "created": int(created),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        },
    }


def _anthropic_message(
    digest: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": f"msg_sim{digest[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if finish == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def body_digest(body: dict[str, Any]) -> str:
    """The digest the request log records for a body: SHA-256 of its sorted-key JSON."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def answer_for(body: dict[str, Any], cfg: SimulatorConfig, reasoning: bool = False) -> tuple[str, int, str, int]:
    """The deterministic answer to a request: its text, its output tokens (reasoning included), its finish reason
    and its hidden reasoning tokens. A reasoning model thinks first: the cap bounds thinking and answer together."""
    seed = hashlib.sha256(orjson.dumps([body.get("model"), body.get("messages")], option=orjson.OPT_SORT_KEYS)).digest()
    rng = random.Random(seed)
    length = rng.randint(cfg.min_output_tokens, cfg.max_output_tokens)
    thinking = rng.randint(cfg.min_reasoning_tokens, cfg.max_reasoning_tokens) if reasoning else 0
    cap = body.get("max_tokens") or body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(cap, int) and 0 < cap < thinking + length:
        thinking = min(thinking, cap)
        length, finish = cap - thinking, "length"
    words = [rng.choice(_WORDS) for _ in range(length)]
    return " ".join(words), thinking + length, finish, thinking


def reasoning_refusal(body: dict[str, Any]) -> str | None:
    """What OpenAI answers with a 400 for a reasoning model's request (max_tokens; sampling other than default)."""
    if "max_tokens" in body:
        return (
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
        )
    for name, default in (("temperature", 1), ("top_p", 1), ("presence_penalty", 0), ("frequency_penalty", 0)):
        value = body.get(name)
        if value is not None and value != default:
            return (
                f"Unsupported value: '{name}' does not support {value} with this model. "
                f"Only the default ({default}) value is supported."
            )
    return None


class Simulator:
    def __init__(self, cfg: SimulatorConfig | None = None) -> None:
        self.cfg = cfg or SimulatorConfig()
        self.counter = TokenCounter()
        self.requests = 0  # requests answered with 200 and a good body: the calls a provider would bill
        self.received = 0  # every request, faults and refusals included
        self.window = rate_meter(self.cfg.limit_mode, self.cfg.rpm, self.cfg.tpm)
        self._log: IO[bytes] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "costinfer-simulator"} for m in DEFAULT_MODELS]
        return web.json_response({"object": "list", "data": data})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
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

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API: x-api-key and anthropic-version headers, top-level system, required max_tokens."""
        if not request.headers.get("x-api-key"):
            return _error(401, "authentication_error", "x-api-key header is required", "anthropic")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required", "anthropic")
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
                raise ValueError("a messages request needs 'model' and 'messages'")
            if not isinstance(body.get("max_tokens"), int):
                raise ValueError("max_tokens: Field required")
            if any(m.get("role") not in ("user", "assistant") for m in body["messages"]):
                raise ValueError("messages: roles must be 'user' or 'assistant' (system is a top-level field)")
            system = body.get("system")
            chat = [{"role": "system", "content": system}] if isinstance(system, str) else []
            chat += [{"role": m["role"], "content": _text(m["content"])} for m in body["messages"]]
            as_chat = {"model": body["model"], "messages": chat, "max_tokens": body["max_tokens"]}
            prompt_tokens = self.counter.count_body(as_chat)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "invalid_request_error", str(exc), "anthropic")
        return await self._serve(request, body, as_chat, prompt_tokens, "anthropic")

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
        reasoning = protocol == "openai" and is_reasoning_model(str(chat["model"]), {})
        text, completion_tokens, finish, thinking = answer_for(chat, self.cfg, reasoning)
        delay = self.cfg.latency_ms + (random.uniform(-1, 1) * self.cfg.jitter_ms if self.cfg.jitter_ms else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if protocol == "anthropic":
            payload = _anthropic_message(digest, chat["model"], text, finish, prompt_tokens, completion_tokens)
        else:
            payload = _chat_completion(
                digest, chat["model"], text, finish, prompt_tokens, completion_tokens, received, thinking
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
            self._record(received, digest, body, 200, protocol)
        return web.Response(body=raw, content_type="application/json", headers=limit_headers)

    def _record(self, t: float, digest: str, body: dict[str, Any], status: int | str, protocol: str) -> None:
        if self._log is not None:
            line = {"t": t, "digest": digest, "model": body.get("model"), "status": status, "protocol": protocol}
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
