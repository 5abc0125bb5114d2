"""The providers beyond OpenAI and Anthropic, end to end: real ``costinfer run`` processes against the simulator as a
server of its own, speaking each provider's protocol (``costinfer/simulator/protocols.py``, shapes from the providers'
API references: Gemini https://ai.google.dev/api/generate-content, Azure OpenAI
https://learn.microsoft.com/azure/ai-services/openai/reference, the hosts' OpenAI-compatible chat completions), and
requiring one key (``--api-key``). The simulator's log is what was billed; it is priced here from the catalog entry
each provider's model names (not through costinfer's own lookup)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costinfer.pricing.catalog import Catalog
from costinfer.pricing.config_file import Config
from tests.conftest import billed_tokens

CLI = [sys.executable, "-m", "costinfer"]
KEY = "sim-key-1234567890"
AKID = "AKIDSIMULATOR0000001"
CATALOG = Catalog.load(None, Config.load(None))


@dataclass(frozen=True)
class Provider:
    name: str
    key_env: str
    model: str  # as the user names it
    entry: str  # the catalog entry that prices it
    path: str = "/v1"  # the base URL's path on the simulator

    def env(self, key: str) -> dict[str, str]:
        """The environment a run of this provider gets its credentials from."""
        if self.name != "bedrock":
            return {**os.environ, self.key_env: key}
        # AWS's chain, and nothing from this machine's own files: the simulator accepts the pair (AKID_SIM, KEY)
        return {**os.environ, "AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": key, "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}  # fmt: skip


PROVIDERS = [
    Provider("gemini", "GEMINI_API_KEY", "gemini-2.5-flash", "gemini/gemini-2.5-flash", ""),
    Provider("azure", "AZURE_OPENAI_API_KEY", "gpt-4o-mini", "azure/gpt-4o-mini", ""),
    Provider("bedrock", "AWS_ACCESS_KEY_ID", "amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0", ""),
    Provider("deepseek", "DEEPSEEK_API_KEY", "deepseek/deepseek-chat", "deepseek/deepseek-chat"),
    Provider(
        "together",
        "TOGETHER_API_KEY",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    ),
    Provider("groq", "GROQ_API_KEY", "groq/openai/gpt-oss-20b", "groq/openai/gpt-oss-20b"),
    Provider(
        "fireworks",
        "FIREWORKS_API_KEY",
        "accounts/fireworks/models/llama-v3p1-8b-instruct",
        "fireworks_ai/accounts/fireworks/models/llama-v3p1-8b-instruct",
    ),
    Provider("mistral", "MISTRAL_API_KEY", "mistral/mistral-small-latest", "mistral/mistral-small-latest"),
]
BY_NAME = {p.name: p for p in PROVIDERS}


def _price(entry: str, usage: dict[str, Any]) -> Decimal:
    """What a logged answer costs at the catalog entry's prices, from the usage as the protocol reported it."""
    e = CATALOG.entry(entry)
    assert e is not None, entry
    prompt, cached, out = billed_tokens(usage)
    cached_price = e.get("cache_read_input_token_cost", e["input_cost_per_token"])
    return (prompt - cached) * e["input_cost_per_token"] + cached * cached_price + out * e["output_cost_per_token"]


def _billed(log: Path, entry: str) -> tuple[Decimal, dict[str, int]]:
    total, seen = Decimal(0), {}
    for line in log.read_text().splitlines() if log.exists() else []:
        e = json.loads(line)
        if e.get("status") == 200:
            total += _price(entry, e["usage"])
            seen[e["digest"]] = seen.get(e["digest"], 0) + 1
    return total, seen


@contextmanager
def simulator(log: Path, *extra: str) -> Iterator[str]:
    serve = [
        *CLI,
        "simulate",
        "serve",
        "--port",
        "0",
        "--log",
        str(log),
        "--api-key",
        KEY,
        "--aws-key",
        f"{AKID}:{KEY}",
    ]
    serve += extra
    with subprocess.Popen(serve, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            yield server.stdout.readline().strip().removesuffix("/v1")
        finally:
            server.terminate()


def _data(folder: Path, rows: int = 300) -> Path:
    path = folder / "d.jsonl"
    with path.open("w") as fh:
        for i in range(rows):
            fh.write(json.dumps({"id": f"r{i}", "system": "Answer briefly.", "prompt": f"What is {i} plus {i}?",
                                 "max_tokens": 256}) + "\n")  # fmt: skip
    return path


def _args(p: Provider, root: str, data: Path, store: Path, *extra: str) -> list[str]:
    return [*CLI, "run", str(data), "--provider", p.name, "--base-url", root + p.path, "--model", p.model,
            "--store", str(store), "-o", str(store.with_suffix(".jsonl")), "--no-semantic", "--json", "-q",
            "--max-attempts", "8", *extra]  # fmt: skip


def _run(
    p: Provider, root: str, data: Path, store: Path, *extra: str, key: str = KEY
) -> subprocess.CompletedProcess[str]:
    env = p.env(key)
    return subprocess.run(_args(p, root, data, store, *extra), capture_output=True, text=True, env=env, timeout=180)


def _results(store: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.with_suffix(".jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", [p.name for p in PROVIDERS])
def test_the_main_job_on_each_provider_costs_what_its_server_billed(name: str, tmp_path: Path) -> None:
    p, log = BY_NAME[name], tmp_path / "sim.log"
    data = _data(tmp_path)
    with simulator(log) as root:
        done = _run(p, root, data, tmp_path / "s.duckdb")
        bad = _run(p, root, data, tmp_path / "bad.duckdb", key="wrong-key")
    assert done.returncode == 0, done.stderr[-1500:]
    summary = json.loads(done.stdout)
    results = _results(tmp_path / "s.duckdb")
    assert len(results) == 300 and all(r["error"] is None and r["response"] for r in results)
    assert all(r["provider"] == name for r in results)
    billed, seen = _billed(log, p.entry)
    assert len(seen) == 300 and max(seen.values()) == 1
    assert Decimal(summary["run_cost_usd"]) == billed, (summary["run_cost_usd"], billed)  # to the digit
    # a bad key: exit 2, the variable named, nothing answered
    assert bad.returncode == 2, bad.stderr[-800:]
    assert p.key_env in bad.stderr and "wrong-key" not in bad.stderr


@pytest.mark.parametrize("name", ["gemini", "azure", "bedrock", "deepseek"])
def test_a_429_storm_is_ridden_out_and_billed_once(name: str, tmp_path: Path) -> None:
    p, log = BY_NAME[name], tmp_path / "sim.log"
    data = _data(tmp_path)
    with simulator(log, "--faults", "429=0.3", "--seed", "3", "--retry-after", "0.05") as root:
        done = _run(p, root, data, tmp_path / "s.duckdb")
    assert done.returncode == 0, done.stderr[-1500:]
    statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()]
    assert statuses.count(429) > 50  # a storm indeed
    billed, seen = _billed(log, p.entry)
    assert len(seen) == 300 and max(seen.values()) == 1
    assert Decimal(json.loads(done.stdout)["run_cost_usd"]) == billed
    assert all(r["error"] is None for r in _results(tmp_path / "s.duckdb"))


@pytest.mark.parametrize("name", ["gemini", "azure", "bedrock", "deepseek"])
def test_killed_and_resumed_each_row_is_answered_and_little_is_paid_twice(name: str, tmp_path: Path) -> None:
    p, log = BY_NAME[name], tmp_path / "sim.log"
    data, store = _data(tmp_path), tmp_path / "s.duckdb"
    with simulator(log, "--latency-ms", "30") as root:
        env = p.env(KEY)
        proc = subprocess.Popen(_args(p, root, data, store, "-c", "4"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while (not log.exists() or len(log.read_text().splitlines()) < 60) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = _run(p, root, data, store, "-c", "4")
    assert done.returncode == 0, done.stderr[-1500:]
    results = _results(store)
    assert len(results) == 300 and all(r["error"] is None for r in results)
    _, seen = _billed(log, p.entry)
    assert len(seen) == 300
    # the calls in flight at the kill and the answers of the commit group not yet written (its interval grows with a
    # loaded machine's commit time: tests/test_resume.py allows the same)
    assert sum(n - 1 for n in seen.values()) <= 16 * 4


def test_openrouter_models_priced_in_costinfer_toml_cost_what_was_billed(tmp_path: Path) -> None:
    """OpenRouter's models are not in LiteLLM's map: a team prices the ones it uses in costinfer.toml."""
    config = tmp_path / "costinfer.toml"
    config.write_text(
        '[models."openrouter/deepseek/deepseek-chat"]\ninput_cost_per_token = 3e-7\noutput_cost_per_token = 8.8e-7\n'
        'litellm_provider = "openrouter"\n'
    )
    log, data = tmp_path / "sim.log", _data(tmp_path, 50)
    p = Provider("openrouter", "OPENROUTER_API_KEY", "openrouter/deepseek/deepseek-chat", "")
    with simulator(log) as root:
        env = {**os.environ, p.key_env: KEY, "COSTINFER_CONFIG": str(config)}
        done = subprocess.run(_args(p, root, data, tmp_path / "s.duckdb"), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-1500:]
    billed = Decimal(0)
    for line in log.read_text().splitlines():
        usage = json.loads(line)["usage"]
        billed += usage["prompt_tokens"] * Decimal("3e-7") + usage["completion_tokens"] * Decimal("8.8e-7")
    assert {json.loads(line)["model"] for line in log.read_text().splitlines()} == {"deepseek/deepseek-chat"}
    assert Decimal(json.loads(done.stdout)["run_cost_usd"]) == billed


def test_a_plan_prices_models_of_three_providers_and_routes_to_the_cheapest(tmp_path: Path) -> None:
    data = _data(tmp_path, 100)
    models = "gemini-2.5-flash-lite,gpt-4o-mini,claude-haiku-4-5"
    done = subprocess.run(
        [*CLI, "plan", str(data), "--store", str(tmp_path / "p.duckdb"), "--models", models, "--route", "cheapest",
         "--no-semantic", "--json"], capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    plan = json.loads(done.stdout)
    routing = plan["routing"]
    assert routing["requests_by_model"] == {"gemini-2.5-flash-lite": 100}
    alone = {m: Decimal(v) for m, v in routing["alone_usd"].items()}
    assert alone["gemini-2.5-flash-lite"] < alone["gpt-4o-mini"] < alone["claude-haiku-4-5"]
    # each at its own provider's list price: the same tokens, priced from the catalog entries
    line = next(m for m in plan["models"] if m["model"] == "gemini-2.5-flash-lite")
    for model, entry in (
        ("gemini-2.5-flash-lite", "gemini/gemini-2.5-flash-lite"),
        ("claude-haiku-4-5", "claude-haiku-4-5"),
    ):
        e = CATALOG.entry(entry)
        assert e is not None
        cost = (
            line["input_tokens"] * e["input_cost_per_token"]
            + line["expected_output_tokens"] * e["output_cost_per_token"]
        )
        assert alone[model] == cost, (model, alone[model], cost)
    assert Decimal(plan["expected_cost_usd"]) == alone["gemini-2.5-flash-lite"]


def test_bedrock_without_aws_credentials_stops_before_reading_naming_the_variables(tmp_path: Path) -> None:
    p = BY_NAME["bedrock"]
    env = {k: v for k, v in p.env(KEY).items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    args = _args(p, "http://127.0.0.1:9", _data(tmp_path, 5), tmp_path / "s.duckdb")
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "AWS_ACCESS_KEY_ID" in done.stderr and "Traceback" not in done.stderr
