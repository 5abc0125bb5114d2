"""The Anthropic backend against the Messages API's documented shapes, and the simulator speaking that protocol."""

from __future__ import annotations

import json
from decimal import Decimal

import anyio
import pytest

from costinfer.backends.anthropic import AnthropicBackend, parse_message, to_messages_request
from costinfer.backends.base import BackendConfig
from costinfer.backends.transport import http_error as _http_error
from costinfer.errors import AuthError, BackendError, ConfigError
from costinfer.pricing.catalog import Catalog
from costinfer.simulator import Simulator

# The shape of a Messages API response as Anthropic's reference documents it (values illustrative).
RECORDED_MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2095,
        "output_tokens": 503,
        "cache_creation_input_tokens": 2051,
        "cache_read_input_tokens": 4000,
    },
}


def test_translates_the_neutral_request() -> None:
    body = {
        "model": "claude-haiku-4-5",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "max_tokens": 100,
        "temperature": 0.2,
        "stop": "\n\n",
        "seed": 7,
        "tools": [
            {
                "type": "function",
                "function": {"name": "lookup", "description": "Find", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": "required",
    }
    out = to_messages_request(body)
    assert out == {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0.2,
        "stop_sequences": ["\n\n"],
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}, "description": "Find"}],
        "tool_choice": {"type": "any"},
    }


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        },
    ],
)
def test_refuses_what_it_cannot_translate(body: dict) -> None:
    with pytest.raises(BackendError) as info:
        to_messages_request(body)
    assert not info.value.retryable


def test_usage_adds_cache_reads_and_writes_back_to_input() -> None:
    done = parse_message(json.dumps(RECORDED_MESSAGE).encode())
    assert done.text == "Hi! My name is Claude." and done.finish_reason == "stop"
    assert (done.input_tokens, done.cached_tokens, done.cache_write_tokens, done.output_tokens) == (
        8146,
        4000,
        2051,
        503,
    )
    price = Catalog.load().lookup("claude-sonnet-4-5", "anthropic")
    cost = price.cost(done.input_tokens, done.output_tokens, done.cached_tokens, done.cache_write_tokens)
    assert cost == 2095 * price.input + 4000 * price.cached_input + 2051 * price.cache_write + 503 * price.output
    assert cost == Decimal("0.02272125")  # 0.006285 + 0.0012 + 0.00769125 + 0.007545


def test_error_shapes() -> None:
    overloaded = _http_error(529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', None)
    assert overloaded.retryable and str(overloaded) == "HTTP 529: Overloaded"
    auth = _http_error(
        401, b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}', None
    )
    assert isinstance(auth, AuthError)
    spend = _http_error(
        429,
        b'{"type":"error","error":{"type":"rate_limit_error","message":"Spend limit reached",'
        b'"details":{"error_code":"enforced_spend_limit_reached"}}}',
        None,
    )
    assert spend.fatal and not spend.retryable and spend.error_class == "quota_exhausted"


def test_sends_the_headers_the_api_requires(sim: Simulator) -> None:
    backend = AnthropicBackend(BackendConfig(base_url=sim.url, api_key="sk-ant-test"))
    assert backend.base_url == sim.url.removesuffix("/v1")
    assert backend.headers()["anthropic-version"] == "2023-06-01"

    async def call() -> object:
        async with backend:
            return await backend.complete(
                {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 20,
                    "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
                }
            )

    done = anyio.run(call)
    assert done.text and 0 < done.output_tokens <= 20  # type: ignore[attr-defined]


def test_missing_key_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicBackend(BackendConfig()).api_key()
