"""OpenAI's chat-completions protocol, for OpenAI and every compatible server (vLLM, TGI's Messages API, the simulator).

The HTTP client is aiohttp: on this project's benchmark (``benchmarks/http_clients.py``) it made several times more
requests per second than httpx's default transport against the same local server, and the throughput target of
``costinfer run`` could not be met through httpx.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import aiohttp
import orjson

from costinfer.backends.base import Backend, Completion
from costinfer.core.errors import AuthError, BackendError, ConfigError

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
QUOTA_CODES = frozenset({"insufficient_quota", "enforced_spend_limit_reached", "billing_hard_limit_reached"})


class OpenAIBackend(Backend):
    name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    key_required: ClassVar[bool] = True
    path: ClassVar[str] = "/chat/completions"

    _session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        url = self.config.base_url or self.default_base_url
        if not url:
            raise ConfigError(f"provider '{self.name}' needs --base-url")
        return url.rstrip("/")

    @property
    def endpoint(self) -> str:
        if self.config.base_url and self.config.base_url.rstrip("/") != self.default_base_url:
            return f"{self.name}:{self.base_url}"
        return self.name

    def api_key(self) -> str | None:
        key = self.config.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if not key and self.key_required:
            raise ConfigError(
                f"provider '{self.name}' needs an API key: set the environment variable {self.api_key_env}"
            )
        return key or None

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        key = self.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=max(self.config.concurrency, 1), ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self.headers(),
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, body: dict[str, Any]) -> Completion:
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = f"{self.base_url}{self.path}"
        payload = self.translate(body)
        try:
            async with self._session.post(url, data=orjson.dumps(payload)) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = _retry_after(resp.headers)
                headers = rate_headers(resp.headers)
        except TimeoutError as exc:
            raise BackendError(
                f"no answer within {self.config.timeout_s:g}s", error_class="timeout", retryable=True
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise BackendError(f"truncated answer: {exc}", error_class="malformed_response", retryable=True) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, no such host, no route: nothing answered at all
            errno = exc.os_error.errno if exc.os_error is not None else None
            reason = os.strerror(errno) if errno else str(exc)
            if isinstance(exc, aiohttp.ClientConnectorDNSError):
                reason = f"cannot resolve the host {exc.host} ({reason})"
            raise BackendError(reason, error_class="cannot_connect", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise BackendError(
                f"connection failed: {exc.__class__.__name__}: {exc}", error_class="connection_error", retryable=True
            ) from exc
        if status != 200:
            error = _http_error(status, raw, retry_after)
            error.headers = headers
            raise error
        done = self.parse(raw)
        done.headers = headers
        return done

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        """The provider-neutral request in this protocol's shape (OpenAI's is the neutral one). A reasoning model
        refuses ``max_tokens`` and takes ``max_completion_tokens``, which bounds its hidden reasoning too."""
        if body.get("model") in self.reasoning_models and "max_tokens" in body:
            body = dict(body)
            body["max_completion_tokens"] = body.pop("max_tokens")
        return body

    def parse(self, raw: bytes) -> Completion:
        return parse_chat_completion(raw)


def parse_chat_completion(raw: bytes) -> Completion:
    try:
        data = orjson.loads(raw)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        output_details = usage.get("completion_tokens_details") or {}
        message = choice.get("message") or {}
        text = message.get("content")
        if text is None and message.get("tool_calls"):
            text = orjson.dumps(message["tool_calls"]).decode()
        return Completion(
            text=text,
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            cached_tokens=int(details.get("cached_tokens") or 0),
            reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            model=data.get("model"),
        )
    except MALFORMED as exc:
        raise malformed(raw, exc) from exc


# What parsing an answer raises when the body is not the protocol's shape
MALFORMED = (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError)


def malformed(raw: bytes, exc: Exception) -> BackendError:
    """A body that is not the protocol's answer (a proxy's error page, a cut body): retryable."""
    snippet = raw[:120].decode("utf-8", "replace")
    return BackendError(
        f"malformed answer ({exc.__class__.__name__}): {snippet!r}", error_class="malformed_response", retryable=True
    )


def rate_headers(headers: Any) -> dict[str, str] | None:
    """The headers the rate limiter reads (x-ratelimit-*, anthropic-ratelimit-*, retry-after)."""
    found = {
        k.lower(): v for k, v in headers.items() if "ratelimit" in k.lower() or k.lower().startswith("retry-after")
    }
    return found or None


def _retry_after(headers: Any) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _http_error(status: int, raw: bytes, retry_after: float | None) -> BackendError:
    message = raw[:300].decode("utf-8", "replace")
    code = ""
    try:
        err = orjson.loads(raw).get("error")
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
            code = str(err.get("code") or (err.get("details") or {}).get("error_code") or "")
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if status in (401, 403):
        return AuthError(f"HTTP {status}: {message}", status=status)
    if status == 429 and code in QUOTA_CODES:
        # money ran out, not a rate: retrying cannot help, and every other call would fail the same way
        return BackendError(f"HTTP 429: {message}", error_class="quota_exhausted", status=429, fatal=True)
    retryable = status in RETRYABLE_STATUS or status >= 500
    error_class = "rate_limited" if status == 429 else ("server_error" if status >= 500 else "bad_request")
    return BackendError(
        f"HTTP {status}: {message}",
        error_class=error_class,
        status=status,
        retryable=retryable,
        retry_after=retry_after,
    )


class VLLMBackend(OpenAIBackend):
    """A vLLM server's OpenAI-compatible API; a key only if the server was started with ``--api-key``."""

    name: ClassVar[str] = "vllm"
    default_base_url: ClassVar[str | None] = "http://127.0.0.1:8000/v1"
    api_key_env: ClassVar[str | None] = "VLLM_API_KEY"
    key_required: ClassVar[bool] = False

    @property
    def endpoint(self) -> str:
        return f"vllm:{self.base_url}"


class SimulateBackend(OpenAIBackend):
    """costinfer's own simulator: deterministic answers, realistic usage, no key, no cost beyond the rehearsal."""

    name: ClassVar[str] = "simulate"
    default_base_url: ClassVar[str | None] = None
    api_key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = False

    @property
    def endpoint(self) -> str:
        return "simulate"
