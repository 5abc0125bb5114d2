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
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from aiohttp import web

from costinfer.core.tokens import TokenCounter

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


def _error(status: int, kind: str, message: str) -> web.Response:
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""
    payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def body_digest(body: dict[str, Any]) -> str:
    """The digest the request log records for a body: SHA-256 of its sorted-key JSON."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def answer_for(body: dict[str, Any], cfg: SimulatorConfig) -> tuple[str, int, str]:
    """The deterministic answer to a request: its text, its output tokens and its finish reason."""
    seed = hashlib.sha256(orjson.dumps([body.get("model"), body.get("messages")], option=orjson.OPT_SORT_KEYS)).digest()
    rng = random.Random(seed)
    length = rng.randint(cfg.min_output_tokens, cfg.max_output_tokens)
    cap = body.get("max_tokens") or body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(cap, int) and 0 < cap < length:
        length, finish = cap, "length"
    words = [rng.choice(_WORDS) for _ in range(length)]
    return " ".join(words), length, finish


class Simulator:
    def __init__(self, cfg: SimulatorConfig | None = None) -> None:
        self.cfg = cfg or SimulatorConfig()
        self.counter = TokenCounter()
        self.requests = 0
        self._log: IO[bytes] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "costinfer-simulator"} for m in DEFAULT_MODELS]
        return web.json_response({"object": "list", "data": data})

    async def chat_completions(self, request: web.Request) -> web.Response:
        received = time.time()
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
                raise ValueError("a chat request needs 'model' and 'messages'")
            prompt_tokens = self.counter.count_body(body)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "invalid_request_error", f"bad request: {exc}")
        text, completion_tokens, finish = answer_for(body, self.cfg)
        delay = self.cfg.latency_ms + (random.uniform(-1, 1) * self.cfg.jitter_ms if self.cfg.jitter_ms else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        self.requests += 1
        digest = body_digest(body)
        payload = {
            "id": f"chatcmpl-sim-{digest[:24]}",
            "object": "chat.completion",
            "created": int(received),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }
        if self._log is not None:
            self._log.write(
                orjson.dumps({"t": received, "digest": digest, "model": body["model"], "status": 200}) + b"\n"
            )
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

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
