"""A vLLM server: its OpenAI-compatible chat API, plus what only a self-hosted server can tell.

- ``POST /tokenize`` (with the chat template applied): the exact prompt tokens the server will bill, for the plan and
  the budget;
- ``GET /v1/models``: the served models and their ``max_model_len``;
- ``GET /metrics`` (Prometheus text): ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and the KV-cache
  usage, from which the executor keeps enough requests in flight to fill the running batch without a long queue.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio

from costinfer.backends.base import ServerLoad
from costinfer.backends.completion import MALFORMED, malformed
from costinfer.backends.openai import OpenAIBackend
from costinfer.backends.prompt_cache import PromptCache
from costinfer.errors import BackendError


class VLLMBackend(OpenAIBackend):
    """A vLLM server's OpenAI-compatible API; a key only if the server was started with ``--api-key``."""

    name: ClassVar[str] = "vllm"
    default_base_url: ClassVar[str | None] = "http://127.0.0.1:8000/v1"
    api_key_env: ClassVar[str | None] = "VLLM_API_KEY"
    key_required: ClassVar[bool] = False
    self_hosted: ClassVar[bool] = True
    supports_batch: ClassVar[bool] = False
    prompt_cache: ClassVar[PromptCache | None] = None
    model_names: ClassVar[str | None] = None  # any model: it serves what it was started with
    exact_counts: ClassVar[bool] = True  # POST /tokenize
    reports_load: ClassVar[bool] = True  # GET /metrics

    @property
    def endpoint(self) -> str:
        return f"vllm:{self.config.identity or self.base_url}"

    @property
    def root(self) -> str:
        """The server's root: /tokenize and /metrics live beside /v1, not under it."""
        url = self.base_url
        return url[: -len("/v1")] if url.endswith("/v1") else url

    async def _ready(self) -> None:
        if not self.transport.started:
            await self.start()

    async def tokenize(self, body: dict[str, Any]) -> int:
        """The prompt tokens of a chat request, with the model's chat template, as the server counts them."""
        await self._ready()
        payload: dict[str, Any] = {"model": body["model"], "messages": body["messages"], "add_generation_prompt": True}
        if body.get("tools"):
            payload["tools"] = body["tools"]
        data = await self.transport.json("POST", f"{self.root}/tokenize", payload)
        try:
            return int(data["count"])
        except MALFORMED as exc:
            raise malformed(str(data).encode(), exc) from exc

    async def count_tokens(self, bodies: list[dict[str, Any]], parallel: int = 32) -> list[int]:
        """``tokenize`` for many requests, ``parallel`` at a time."""
        out = [0] * len(bodies)
        limit = anyio.Semaphore(parallel)

        async def one(i: int) -> None:
            async with limit:
                out[i] = await self.tokenize(bodies[i])

        try:
            async with anyio.create_task_group() as tg:
                for i in range(len(bodies)):
                    tg.start_soon(one, i)
        except BaseExceptionGroup as group:  # the calls' first error, as one error (a server without /tokenize)
            first = _first_backend_error(group)
            if first is None:
                raise
            raise first from None
        return out

    async def load(self) -> ServerLoad:
        """The server's queue right now, from its Prometheus metrics."""
        await self._ready()
        raw, _ = await self.transport.send("GET", f"{self.root}/metrics")
        return parse_metrics(raw.decode("utf-8", "replace"))


_KV_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:cpu_cache_usage_perc")


def parse_metrics(text: str) -> ServerLoad:
    """vLLM's gauges from Prometheus's text format, summed over label sets (one per served model)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    if "vllm:num_requests_running" not in values:
        raise BackendError(
            "the server's /metrics has no vllm:num_requests_running: not a vLLM server", error_class="bad_request"
        )
    kv = next((values[n] for n in _KV_NAMES if n in values), None)
    return ServerLoad(values["vllm:num_requests_running"], values.get("vllm:num_requests_waiting", 0.0), kv)


def _first_backend_error(group: BaseExceptionGroup[BaseException]) -> BackendError | None:
    for error in group.exceptions:
        if isinstance(error, BackendError):
            return error
        if isinstance(error, BaseExceptionGroup) and (inner := _first_backend_error(error)) is not None:
            return inner
    return None
