"""HTTP for every provider: one aiohttp session, its timeouts, and the mapping of what can go wrong on the wire to
``BackendError`` (retryable or not, fatal or not). A provider class only shapes requests and reads answers.

The HTTP client is aiohttp: on this project's benchmark (``benchmarks/http_clients.py``) it made several times more
requests per second than httpx's default transport against the same local server, and the throughput target of
``costinfer run`` could not be met through httpx.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson
from yarl import URL

from costinfer.backends.completion import MALFORMED, malformed
from costinfer.backends.redact import redact
from costinfer.errors import AuthError, BackendError

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
QUOTA_CODES = frozenset({"insufficient_quota", "enforced_spend_limit_reached", "billing_hard_limit_reached"})
_JSON = {"content-type": "application/json"}


class HttpTransport:
    def __init__(self, timeout_s: float, concurrency: int) -> None:
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._secrets: tuple[str, ...] = ()  # the credentials sent: never repeated from a server's text

    async def start(self, headers: dict[str, str]) -> None:
        self._secrets = tuple(
            v.split(" ", 1)[-1]
            for k, v in headers.items()
            if k.lower() in ("authorization", "x-api-key", "api-key", "x-goog-api-key")
        )
        # a few connections beyond the calls in flight: a server's /metrics and /tokenize must not queue behind them
        connector = aiohttp.TCPConnector(limit=max(self.concurrency, 1) + 4, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def started(self) -> bool:
        return self._session is not None

    async def post(self, url: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
        """The answer's body and its rate-limit headers; ``BackendError`` for anything but a 200."""
        return await self.send("POST", url, orjson.dumps(payload), _JSON)

    async def json(self, method: str, url: str, payload: Any = None) -> dict[str, Any]:
        """A JSON request (or a GET) whose answer is a JSON object; a body that is not one is a malformed answer."""
        data = orjson.dumps(payload) if payload is not None else None
        raw, _ = await self.send(method, url, data, _JSON if payload is not None else None)
        try:
            out: dict[str, Any] = orjson.loads(raw)
        except MALFORMED as exc:
            raise self.redacted(malformed(raw, exc)) from exc
        return out

    def redacted(self, error: BackendError) -> BackendError:
        """The error with the run's keys, and anything shaped like a key, masked in its message."""
        error.args = (self.redact(str(error)),)
        return error

    def redact(self, text: str) -> str:
        """A server's text (an error in a batch's output file, say) with the run's keys and key shapes masked."""
        return redact(text, self._secrets)

    async def send(
        self, method: str, url: str | URL, data: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[bytes, dict[str, str] | None]:
        """Any request (a GET, a JSON body, a multipart form), with the same error mapping as ``post``."""
        assert self._session is not None, "start() the transport first"
        try:
            async with self._session.request(method, url, data=data, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = _retry_after(resp.headers)
                headers = rate_headers(resp.headers)
        except TimeoutError as exc:
            raise BackendError(f"no answer within {self.timeout_s:g}s", error_class="timeout", retryable=True) from exc
        except aiohttp.ClientPayloadError as exc:
            raise BackendError(f"truncated answer: {exc}", error_class="malformed_response", retryable=True) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, no such host, no route: nothing answered at all
            errno = exc.os_error.errno if exc.os_error is not None else None
            reason = os.strerror(errno) if errno else str(exc)
            if isinstance(exc, aiohttp.ClientConnectorDNSError):
                reason = f"cannot resolve the host {exc.host} ({reason})"
            raise BackendError(reason, error_class="cannot_connect", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise self.redacted(
                BackendError(
                    f"connection failed: {exc.__class__.__name__}: {exc}", error_class="connection_error",
                    retryable=True,
                )
            ) from exc  # fmt: skip
        if status != 200:
            error = self.redacted(http_error(status, raw, retry_after))
            error.headers = headers
            raise error
        return raw, headers


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


def http_error(status: int, raw: bytes, retry_after: float | None) -> BackendError:
    """A non-200 answer as an error: OpenAI's ``{"error": {...}}`` and Anthropic's ``{"type": "error", "error":
    {...}}`` both carry the message under ``error``."""
    message = raw[:300].decode("utf-8", "replace")
    code = ""
    try:
        data = orjson.loads(raw)
        err = data.get("error")
        if err is None and isinstance(data.get("message"), str):  # AWS's {"message": ...} (x-amzn-ErrorType)
            message = data["message"]
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
            details = err.get("details")
            code = str(err.get("code") or (details.get("error_code") if isinstance(details, dict) else "") or "")
            if retry_after is None and isinstance(details, list):  # Google's RetryInfo: {"retryDelay": "30s"}
                delay = next(
                    (d.get("retryDelay") for d in details if isinstance(d, dict) and d.get("retryDelay")), None
                )
                retry_after = float(str(delay).rstrip("s")) if delay else None
            if isinstance(details, list) and any(
                isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details
            ):  # Google answers a rejected key with a 400
                return AuthError(f"HTTP {status}: {message}", status=status)
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError, ValueError):
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
