"""A long run meets 429s, 5xx, timeouts, malformed bodies and dropped connections, and still ends well."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from costinfer.errors import ExitCode
from costinfer.simulator import Faults, SimulatorConfig, running_in_thread
from tests.conftest import PROTOCOLS, Cli, provider_args, read_jsonl, refusing_server, sim_log, write_jsonl

MIX = dict(rate_5xx=0.10, rate_429=0.05, rate_timeout=0.02, rate_malformed=0.01, rate_drop=0.01)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_thousand_rows_through_faults_end_answered_or_with_an_error(
    cli: Cli, tmp_path: Path, protocol: str
) -> None:
    rows = [{"id": f"r{i}", "prompt": f"Fault test question {i}", "max_tokens": 32} for i in range(2000)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "o.jsonl"
    faults = Faults(**MIX, retry_after_s=0.05, slow_s=3.0, seed=11)  # type: ignore[arg-type]
    cfg = SimulatorConfig(faults=faults, log_path=tmp_path / "log.jsonl")
    args = [
        "run",
        data,
        "--store",
        tmp_path / "s.duckdb",
        "--output",
        out,
        "--timeout",
        "1",
        "-c",
        "32",
        "--max-attempts",
        "3",
        "--json",
    ]
    with running_in_thread(cfg) as sim:
        target, env = provider_args(protocol, sim.url)
        first = cli(*args, *target, env=env)
        log = sim_log(sim)
        statuses = Counter(str(e["status"]) for e in log)
        # every fault kind really happened
        assert {"429", "500", "timeout", "malformed", "drop"} <= set(statuses)
        summary = json.loads(first.stdout)
        results = read_jsonl(out)
        assert len(results) == 2000
        assert all((r["response"] is None) != (r["error"] is None) for r in results)  # answered xor an error
        assert not any(r["error"] and r["error"].startswith("not_run") for r in results)
        failed = [r for r in results if r["error"]]
        assert len(failed) == summary["failed"]
        assert first.exit_code == (ExitCode.ROWS_FAILED if failed else ExitCode.OK)
        for r in failed:  # the error class and the provider's message are kept
            assert r["error"].split(":")[0] in {
                "server_error",
                "rate_limited",
                "timeout",
                "malformed_response",
                "connection_error",
            }
        # no good answer was paid twice
        paid = [e["digest"] for e in log if e["status"] == 200]
        assert len(paid) == len(set(paid)) == 2000 - len(failed)

        second = cli(*args, *target, env=env)  # the rerun retries only what failed
        again = json.loads(second.stdout)
        assert again["cache_hits"] == 2000 - len(failed)
        log2 = sim_log(sim)[len(log) :]
        assert {e["digest"] for e in log2 if e["status"] == 200}.isdisjoint(paid)
    assert again["calls"] == len(failed)  # exactly the failed rows were sent again
    final = read_jsonl(out)
    assert again["fresh"] + again["cache_hits"] + again["failed"] == 2000
    assert sum(r["response"] is not None for r in final) == 2000 - again["failed"]


def test_quota_exhausted_stops_the_run_instead_of_retrying(cli: Cli, tmp_path: Path) -> None:
    no_money = (
        b'{"error": {"message": "You exceeded your current quota, please check your plan and billing '
        b'details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}'
    )
    with refusing_server(429, no_money) as (url, received):
        data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}"} for i in range(200)])
        result = cli(
            "run",
            data,
            "--base-url",
            url,
            "--store",
            tmp_path / "s.duckdb",
            "--output",
            tmp_path / "o.jsonl",
            "-c",
            "4",
            "--quiet",
        )
    assert result.exit_code == ExitCode.BUDGET
    assert "quota is used up" in result.stderr
    assert len(received) <= 8
    assert all(r["error"] == "not_run: quota_exhausted" for r in read_jsonl(tmp_path / "o.jsonl"))


@pytest.mark.parametrize("rpm", [600])
def test_the_client_paces_under_an_enforced_limit(cli: Cli, tmp_path: Path, rpm: int) -> None:
    """A short version of benchmarks/rate_limits.py: 60 calls against a sliding minute of 600 earn no 429. (The
    server's headers report room for all 60: the client uses it rather than spacing them over 6 s.)"""
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}", "max_tokens": 8} for i in range(60)])
    with running_in_thread(SimulatorConfig(rpm=rpm, log_path=tmp_path / "log.jsonl")) as sim:
        result = cli(
            "run",
            data,
            "--base-url",
            sim.url,
            "--rpm",
            str(rpm),
            "--store",
            tmp_path / "s.duckdb",
            "--output",
            tmp_path / "o.jsonl",
            "-c",
            "16",
            "--json",
        )
        statuses = Counter(e["status"] for e in sim_log(sim))
    assert result.exit_code == 0
    assert statuses[429] == 0 and statuses[200] == 60
    # the upper bound only catches idling
    assert json.loads(result.stdout)["calls_elapsed_s"] < 15.0


def test_a_model_in_an_outage_falls_back_and_the_cache_stays_truthful(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": f"r{i}", "prompt": f"Outage question {i}"} for i in range(40)])
    store, out = tmp_path / "s.duckdb", tmp_path / "o.jsonl"
    args = ["run", data, "--model", "gpt-4o", "--store", store, "--output", out, "-c", "4", "--json"]
    with running_in_thread(SimulatorConfig(down_models=("gpt-4o",), log_path=tmp_path / "log.jsonl")) as sim:
        result = cli(*args, "--base-url", sim.url, "--fallback-model", "gpt-4o-mini", "--max-attempts", "20")
        statuses = Counter((e["model"], e["status"]) for e in sim_log(sim))
    summary = json.loads(result.stdout)
    rows = read_jsonl(out)
    assert result.exit_code == 0 and summary["failed"] == 0
    assert summary["fallback"] == 40 == sum(r["source"] == "fallback" for r in rows)
    assert {r["model"] for r in rows} == {"gpt-4o-mini"}  # each row says which model answered
    assert all(r["cost_usd"] > 0 for r in rows)  # the fallback calls were paid by this run
    assert statuses[("gpt-4o-mini", 200)] == 40 and statuses[("gpt-4o", 503)] >= 10
    # the outage is over: a new run asks gpt-4o itself; the fallback answers are not passed off as gpt-4o's
    with running_in_thread(SimulatorConfig()) as sim:
        again = json.loads(cli(*args, "--base-url", sim.url).stdout)
    assert again["calls"] == 40 and again["fallback"] == 0
    assert {r["model"] for r in read_jsonl(out)} == {"gpt-4o"}
