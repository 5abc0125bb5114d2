"""The OpenAI-compatible backend against recorded protocol shapes (OpenAI's API reference) and real HTTP servers."""

from __future__ import annotations

import json
from decimal import Decimal

import anyio
import pytest

from costinfer.backends.base import BackendConfig, backend_class, registry
from costinfer.backends.openai import OpenAIBackend, parse_chat_completion
from costinfer.backends.transport import http_error as _http_error
from costinfer.backends.vllm import VLLMBackend
from costinfer.errors import AuthError, BackendError, ConfigError
from costinfer.pricing.catalog import Catalog
from costinfer.simulator import Simulator

# The shape of a chat.completion object as OpenAI's API reference documents it (values illustrative).
RECORDED_COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The image shows a wooden boardwalk.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}
RECORDED_ERROR = {
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM)",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def test_parses_the_documented_completion_shape() -> None:
    done = parse_chat_completion(json.dumps(RECORDED_COMPLETION).encode())
    assert done.text == "The image shows a wooden boardwalk."
    assert (done.input_tokens, done.output_tokens, done.cached_tokens) == (1117, 46, 1024)
    assert done.finish_reason == "stop" and done.model == "gpt-4o-2024-08-06"
    # cached input tokens are part of prompt_tokens and billed at the cached price
    price = Catalog.load().lookup("gpt-4o", "openai")
    cost = price.cost(done.input_tokens, done.output_tokens, done.cached_tokens)
    assert cost == 93 * price.input + 1024 * price.cached_input + 46 * price.output
    assert cost == Decimal("0.0019725")


def test_tool_calls_are_kept_as_the_answer() -> None:
    shape = json.loads(json.dumps(RECORDED_COMPLETION))
    shape["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    done = parse_chat_completion(json.dumps(shape).encode())
    assert done.text is not None and json.loads(done.text)[0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"choices": []}', b'{"object": "chat.completion"}', b'{"choi'])
def test_malformed_answers_are_retryable_errors(raw: bytes) -> None:
    with pytest.raises(BackendError) as info:
        parse_chat_completion(raw)
    assert info.value.error_class == "malformed_response" and info.value.retryable


def test_error_mapping() -> None:
    rate = _http_error(429, json.dumps(RECORDED_ERROR).encode(), 2.0)
    assert rate.retryable and rate.error_class == "rate_limited" and rate.retry_after == 2.0
    assert "Rate limit reached" in str(rate)
    assert _http_error(503, b"<html>upstream</html>", None).retryable
    bad = _http_error(400, b'{"error": {"message": "Invalid temperature"}}', None)
    assert not bad.retryable and str(bad) == "HTTP 400: Invalid temperature"
    auth = _http_error(401, b'{"error": {"message": "Incorrect API key"}}', None)
    assert isinstance(auth, AuthError) and auth.fatal


def test_backends_are_registered_through_the_entry_point_group() -> None:
    names = registry()
    assert {"openai", "vllm", "simulate"} <= set(names)
    assert backend_class("vllm") is VLLMBackend
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        backend_class("nope")


def test_endpoint_identity() -> None:
    assert OpenAIBackend(BackendConfig()).endpoint == "openai"
    assert OpenAIBackend(BackendConfig(base_url="http://127.0.0.1:9/v1")).endpoint == "openai:http://127.0.0.1:9/v1"
    assert VLLMBackend(BackendConfig(base_url="http://h:1/v1/")).endpoint == "vllm:http://h:1/v1"


def test_sends_the_key_and_reads_a_real_answer(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    backend = OpenAIBackend(BackendConfig(base_url=sim.url))
    assert backend.headers()["authorization"] == "Bearer sk-test"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    async def call() -> object:
        async with backend:
            return await backend.complete(body)

    done = anyio.run(call)
    assert done.text and 0 < done.output_tokens <= 8 and done.input_tokens > 0  # type: ignore[attr-defined]


def test_connection_refused_is_its_own_class_and_retryable() -> None:
    backend = OpenAIBackend(BackendConfig(base_url="http://127.0.0.1:9/v1", api_key="x", timeout_s=5))

    async def call() -> None:
        async with backend:
            await backend.complete({"model": "m", "messages": []})

    with pytest.raises(BackendError) as info:
        anyio.run(call)
    # its own class: the executor stops a run whose server refuses every connection instead of retrying each row
    assert info.value.error_class == "cannot_connect" and info.value.retryable
    assert "refused" in str(info.value).lower()
