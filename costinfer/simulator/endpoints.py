"""The simulator's endpoints besides OpenAI's chat completions, as mixins of ``Simulator``: the other providers'
protocols (Anthropic's Messages, Gemini's generateContent, Azure OpenAI's deployments: each checked as the provider
checks it, then answered by the same ``_serve``), and vLLM's side (``/v1/models``, ``/tokenize``, ``/metrics``)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from costinfer.reading.tokens import TokenCounter
from costinfer.simulator.config import SimulatorConfig
from costinfer.simulator.messages import messages_as_chat
from costinfer.simulator.protocols import (
    bedrock_error_type,
    converse_as_chat,
    error_body,
    gemini_as_chat,
    sigv4_problem,
)

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano")


def _error(status: int, kind: str, message: str, protocol: str = "openai") -> web.Response:
    payload = error_body(protocol, status, kind, message)
    headers = {"x-amzn-ErrorType": bedrock_error_type(status, kind)} if protocol == "bedrock" else None
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers)


class ProtocolEndpoints:
    cfg: SimulatorConfig
    counter: TokenCounter

    async def _serve(
        self, request: web.Request, body: dict[str, Any], chat: dict[str, Any], prompt_tokens: int, protocol: str
    ) -> web.StreamResponse:
        raise NotImplementedError

    def _key_ok(self, key: str | None) -> bool:
        """A key was sent, and it is the one the simulator was told to want (``--api-key``), if any."""
        return bool(key) and (self.cfg.api_key is None or key == self.cfg.api_key)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API: x-api-key and anthropic-version headers, top-level system, required max_tokens."""
        if not self._key_ok(request.headers.get("x-api-key")):
            return _error(401, "authentication_error", "x-api-key header is required", "anthropic")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required", "anthropic")
        try:
            body = orjson.loads(await request.read())
            as_chat = messages_as_chat(body)
            prompt_tokens = self.counter.count_body(as_chat)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "invalid_request_error", str(exc), "anthropic")
        return await self._serve(request, body, as_chat, prompt_tokens, "anthropic")

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        """Gemini's generateContent: the key in x-goog-api-key, the model in the path."""
        if not self._key_ok(request.headers.get("x-goog-api-key")):
            return _error(400, "API_KEY_INVALID", "API key not valid. Please pass a valid API key.", "gemini")
        try:
            body = orjson.loads(await request.read())
            as_chat = gemini_as_chat(body, request.match_info["model"])
            prompt_tokens = self.counter.count_body(as_chat)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "INVALID_ARGUMENT", str(exc), "gemini")
        return await self._serve(request, {**body, "model": as_chat["model"]}, as_chat, prompt_tokens, "gemini")

    async def azure(self, request: web.Request) -> web.StreamResponse:
        """Azure OpenAI: the deployment in the path (it names the model here), api-version, api-key or a bearer."""
        if not request.query.get("api-version"):
            return _error(404, "NotFound", "Resource not found", "azure")
        key = request.headers.get("api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not self._key_ok(key):
            denied = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
            )
            return _error(401, "invalid_request_error", denied + "key for an active subscription.", "azure")
        try:
            body = orjson.loads(await request.read())
            chat = {**body, "model": request.match_info["deployment"]}
            if not isinstance(chat.get("messages"), list):
                raise ValueError("'messages' is a required property")
            prompt_tokens = self.counter.count_body(chat)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "invalid_request_error", f"bad request: {exc}", "azure")
        return await self._serve(request, chat, chat, prompt_tokens, "azure")

    async def bedrock(self, request: web.Request) -> web.StreamResponse:
        """Bedrock's Converse: Signature Version 4 checked (``protocols.sigv4_problem``), the model in the path."""
        raw = await request.read()
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        problem = sigv4_problem(request.method, url, request.headers, raw, self.cfg.aws_key)
        if problem is not None:
            kind, message = problem.split(": ", 1)
            return _error(403, kind, message, "bedrock")
        try:
            body = orjson.loads(raw)
            as_chat = converse_as_chat(body, request.match_info["model"])
            prompt_tokens = self.counter.count_body(as_chat)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "ValidationException", str(exc), "bedrock")
        return await self._serve(request, {**body, "model": as_chat["model"]}, as_chat, prompt_tokens, "bedrock")


class VllmEndpoints:
    cfg: SimulatorConfig
    counter: TokenCounter
    running: int
    waiting: int

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "owned_by": "costinfer-simulator", "max_model_len": self.cfg.max_model_len}
            for m in DEFAULT_MODELS
        ]
        return web.json_response({"object": "list", "data": data})

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's POST /tokenize for a chat request: the prompt tokens the chat endpoint bills for it."""
        try:
            body = orjson.loads(await request.read())
            count = self.counter.count_body({"model": body.get("model") or "gpt-4o-mini", "messages": body["messages"]})
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            return _error(400, "invalid_request_error", f"bad request: {exc}")
        return web.json_response({"count": count, "max_model_len": self.cfg.max_model_len or 128000, "tokens": []})

    async def metrics(self, request: web.Request) -> web.Response:
        """vLLM's queue gauges in Prometheus's text format."""
        capacity = self.cfg.max_running or 0
        kv = self.running / capacity if capacity else 0.0
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="sim"}} {self.running}',
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="sim"}} {self.waiting}',
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{model_name="sim"}} {kv}',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
