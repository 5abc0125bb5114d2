"""The simulator: a real OpenAI-compatible server with deterministic answers and realistic usage."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from costinfer.reading.tokens import TokenCounter
from costinfer.simulator import Simulator
from tests.conftest import sim_log, subprocess_cli


def post(url: str, body: object) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{url}/chat/completions", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is the refund policy?"}],
    "max_tokens": 100,
}


def test_same_request_same_answer_and_usage(sim: Simulator) -> None:
    status, first = post(sim.url, BODY)
    _, second = post(sim.url, BODY)
    assert status == 200
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert first["object"] == "chat.completion" and first["model"] == "gpt-4o-mini"
    usage = first["usage"]
    assert usage["prompt_tokens"] == TokenCounter().count_body(BODY)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    _, other = post(sim.url, {**BODY, "messages": [{"role": "user", "content": "Something else"}]})
    assert other["choices"][0]["message"]["content"] != first["choices"][0]["message"]["content"]
    assert len(sim_log(sim)) == 3


def test_max_tokens_truncates_with_finish_reason_length(sim: Simulator) -> None:
    _, answer = post(sim.url, {**BODY, "max_tokens": 2})
    assert answer["usage"]["completion_tokens"] == 2
    assert answer["choices"][0]["finish_reason"] == "length"


def test_bad_request_gets_an_openai_shaped_400(sim: Simulator) -> None:
    status, answer = post(sim.url, {"messages": "nope"})
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert sim_log(sim) == []


def test_models_endpoint(sim: Simulator) -> None:
    with urllib.request.urlopen(f"{sim.url}/models", timeout=10) as resp:
        data = json.loads(resp.read())
    assert "gpt-4o-mini" in {m["id"] for m in data["data"]}


def test_standalone_serve_command() -> None:
    proc = subprocess_cli("simulate", "serve", "--port", "0")
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        status, answer = post(url, BODY)
        assert status == 200 and answer["usage"]["completion_tokens"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0  # SIGTERM is a clean stop
