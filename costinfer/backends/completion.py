"""What a provider's answer and a self-hosted server's queue are, whichever protocol carried them."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from costinfer.backends.redact import redact
from costinfer.errors import BackendError

# What parsing an answer raises when the body is not the protocol's shape
MALFORMED = (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError)


@dataclass(slots=True)
class Completion:
    text: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0  # input tokens read from the provider's prompt cache (part of input_tokens)
    cache_write_tokens: int = 0  # input tokens written to it (part of input_tokens; Anthropic bills them higher)
    reasoning_tokens: int = 0  # hidden reasoning tokens (part of output_tokens, billed as output)
    finish_reason: str | None = None
    model: str | None = None
    http_status: int = 200
    headers: dict[str, str] | None = None  # the rate-limit headers of the answer


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """A self-hosted server's queue right now (``reports_load``): what runs, what waits, the KV cache in use."""

    running: float
    waiting: float
    kv_cache: float | None  # share of the KV cache in use, 0 to 1


def malformed(raw: bytes, exc: Exception) -> BackendError:
    """A body that is not the protocol's answer (a proxy's error page, a cut body): retryable."""
    snippet = redact(raw[:120].decode("utf-8", "replace"))
    return BackendError(
        f"malformed answer ({exc.__class__.__name__}): {snippet!r}", error_class="malformed_response", retryable=True
    )
