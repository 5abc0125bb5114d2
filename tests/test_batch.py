"""Batch mode against the simulator's Batch API, over real HTTP, with the client killed at the worst moments: one
batch on the server, every row answered once, batch prices in the ledger, only failed items resubmitted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from costinfer.backends.batch_api import server_time
from costinfer.pricing.catalog import Catalog
from tests.conftest import Cli, logged, read_jsonl, subprocess_cli, write_jsonl

ROWS = [{"id": f"b{i}", "prompt": f"Batch question number {i}"} for i in range(40)]
ENV = {"OPENAI_API_KEY": "sk-test"}


@contextmanager
def _simulator(log: Path, *extra: str) -> Iterator[str]:
    cmd = [sys.executable, "-m", "costinfer", "simulate", "serve", "--port", "0", "--log", str(log), *extra]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            yield server.stdout.readline().strip()
        finally:
            server.terminate()


def _target(url: str, protocol: str) -> list[str]:
    if protocol == "anthropic":
        return ["--provider", "anthropic", "--base-url", url.removesuffix("/v1"), "--model", "claude-haiku-4-5"]
    if protocol == "azure":  # Global Batch: OpenAI's Batch API under /openai, with an api-version
        return ["--provider", "azure", "--base-url", url.removesuffix("/v1"), "--model", "gpt-4o-mini"]
    if protocol == "gemini":  # Batch Mode: inline requests, an Operation polled
        return ["--provider", "gemini", "--base-url", url.removesuffix("/v1"), "--model", "gemini-2.5-flash"]
    return ["--provider", "openai", "--base-url", url]


def _args(data: Path, store: Path, url: str, out: Path, protocol: str = "openai") -> list[object]:
    return ["run", data, "--store", store, *_target(url, protocol), "--mode", "batch", "-o", out, "--batch-poll", "0.2"]


ENVS = {
    "openai": {"OPENAI_API_KEY": "sk-test"},
    "anthropic": {"ANTHROPIC_API_KEY": "sk-ant-test"},
    "azure": {"AZURE_OPENAI_API_KEY": "azure-test"},
    "gemini": {"GEMINI_API_KEY": "gemini-test"},
}
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "azure": "gpt-4o-mini",
    "gemini": "gemini-2.5-flash",
}


def _ledger(store: Path) -> tuple[Decimal, int, int, int, set[str]]:
    with duckdb.connect(str(store), read_only=True) as con:
        row = con.execute(
            "SELECT sum(cost_usd), sum(input_tokens), sum(output_tokens), count(*) FILTER (WHERE status = 'ok') "
            "FROM calls"
        ).fetchone()
        modes = {m for (m,) in con.execute("SELECT DISTINCT mode FROM calls").fetchall()}
    assert row is not None
    return Decimal(row[0]), int(row[1]), int(row[2]), int(row[3]), modes


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["openai", "anthropic", "azure", "gemini"])
def test_a_batch_run_killed_after_submission_reattaches_and_submits_nothing_twice(
    tmp_path: Path, protocol: str
) -> None:
    data, store, out, log = (
        write_jsonl(tmp_path / "d.jsonl", ROWS),
        tmp_path / "s.duckdb",
        tmp_path / "o.jsonl",
        tmp_path / "log.jsonl",
    )
    with _simulator(log, "--batch-delay", "3") as url:
        env = ENVS[protocol]
        proc = subprocess_cli(*_args(data, store, url, out, protocol), env=env)
        deadline = time.monotonic() + 60
        while not any(e.get("kind") == "batch_create" for e in logged(log)) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # right after the server created the batch
        proc.communicate(timeout=30)
        again = subprocess_cli(*_args(data, store, url, out, protocol), "--json", env=env)
        stdout, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert json.loads(stdout)["resumed"] is True
        # killed after the store learned the batch's id ("re-attached"), or before (found on the server)
        assert "re-attached" in err or "found on the server" in err, err
    entries = logged(log)
    assert sum(e.get("kind") == "batch_create" for e in entries) == 1  # exactly one batch on the server
    answered = Counter(e["digest"] for e in entries if e.get("kind") == "batch_item" and e["status"] == 200)
    assert len(answered) == 40 and set(answered.values()) == {1}  # every row answered once
    assert all(r["error"] is None and r["source"] == "fresh" for r in read_jsonl(out))
    plan = subprocess_cli("plan", data, "--store", tmp_path / "p.duckdb", "--json", *_target(url, protocol), env=env)
    planned = json.loads(plan.communicate(timeout=120)[0])  # the plan prices both modes
    assert Decimal(planned["expected_batch_cost_usd"]) * 2 == Decimal(planned["expected_cost_usd"])
    cost, tokens_in, tokens_out, ok, modes = _ledger(store)
    price = Catalog.load().lookup(MODELS[protocol], protocol)  # Azure's: the catalog's azure/ entry
    assert ok == 40 and modes == {"batch"}
    assert price.batch_input * 2 == price.input  # batch prices: half the online ones
    assert cost == tokens_in * price.batch_input + tokens_out * price.batch_output
    billed = [_tokens(e["usage"]) for e in entries if e.get("kind") == "batch_item" and e["status"] == 200]
    # the tokens the server billed, each once
    assert (tokens_in, tokens_out) == (sum(i for i, _ in billed), sum(o for _, o in billed))
    report = json.loads((tmp_path / "o.report.json").read_text())
    assert "batch" in {s["lever"] for s in report["waterfall"]["steps"]}


def _tokens(usage: dict) -> tuple[int, int]:
    """(input, output) tokens as each protocol's usage reports them: Gemini bills its thinking as output."""
    if "promptTokenCount" in usage:
        return usage["promptTokenCount"], usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0)
    if "input_tokens" in usage:
        return usage["input_tokens"], usage["output_tokens"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def test_a_gemini_batch_run_sends_one_batch_per_model(tmp_path: Path) -> None:
    """Gemini's Batch Mode names one model in its path: rows that name their own model go in a batch of their own."""
    rows = [{**r, "model": "gemini-2.5-flash-lite"} if i % 3 == 0 else r for i, r in enumerate(ROWS)]
    data, store, out, log = (
        write_jsonl(tmp_path / "d.jsonl", rows),
        tmp_path / "s.duckdb",
        tmp_path / "o.jsonl",
        tmp_path / "log.jsonl",
    )
    with _simulator(log, "--batch-delay", "0.3") as url:
        done = subprocess_cli(*_args(data, store, url, out, "gemini"), "--json", env=ENVS["gemini"])
        stdout, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    creates = [e for e in logged(log) if e.get("kind") == "batch_create"]
    assert len(creates) == 2
    results = read_jsonl(out)
    assert len(results) == 40 and all(r["error"] is None for r in results)
    assert Counter(r["model"] for r in results) == {"gemini-2.5-flash": 26, "gemini-2.5-flash-lite": 14}
    catalog = Catalog.load()
    with duckdb.connect(str(store), read_only=True) as con:
        by_model = con.execute(
            "SELECT model, sum(cost_usd), sum(input_tokens), sum(output_tokens) FROM calls GROUP BY model"
        ).fetchall()
    for model, cost, tokens_in, tokens_out in by_model:
        price = catalog.lookup(model, "gemini")
        assert Decimal(cost) == tokens_in * price.batch_input + tokens_out * price.batch_output
    assert Decimal(json.loads(stdout)["run_cost_usd"]) == sum(Decimal(c) for _, c, _, _ in by_model)


@pytest.mark.slow
def test_only_failed_or_expired_items_are_resubmitted(tmp_path: Path) -> None:
    data, store, out, log = (
        write_jsonl(tmp_path / "d.jsonl", ROWS),
        tmp_path / "s.duckdb",
        tmp_path / "o.jsonl",
        tmp_path / "log.jsonl",
    )
    with _simulator(log, "--batch-delay", "0.2", "--batch-fail-rate", "0.1", "--batch-expire-rate", "0.05",
                    "--seed", "7") as url:  # fmt: skip
        proc = subprocess_cli(*_args(data, store, url, out), env=ENV)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with duckdb.connect(str(store), read_only=True) as con:
        parts = con.execute("SELECT part, requests FROM batches ORDER BY part").fetchall()
        failed_first = con.execute(
            "SELECT count(*) FROM calls c JOIN batch_items i ON i.key = c.key "
            "JOIN batches b ON b.local_id = i.local_id WHERE b.part = 1 AND c.status = 'error'"
        ).fetchone()
    assert failed_first is not None and failed_first[0] > 0
    assert parts[0][1] == 40 and parts[1][1] == failed_first[0]  # the second batch holds exactly the failures
    answered = Counter(e["digest"] for e in logged(log) if e.get("kind") == "batch_item" and e["status"] == 200)
    assert len(answered) == 40 and set(answered.values()) == {1}
    assert all(r["error"] is None for r in read_jsonl(out))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["openai", "anthropic", "azure", "gemini"])
def test_no_wait_submits_and_a_later_run_collects_even_if_the_id_never_reached_the_store(
    tmp_path: Path, protocol: str
) -> None:
    data, store, out, log = (
        write_jsonl(tmp_path / "d.jsonl", ROWS),
        tmp_path / "s.duckdb",
        tmp_path / "o.jsonl",
        tmp_path / "log.jsonl",
    )
    with _simulator(log, "--batch-delay", "1") as url:
        first = subprocess_cli(*_args(data, store, url, out, protocol), "--no-wait", "--json", env=ENVS[protocol])
        stdout, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert json.loads(stdout)["stop_reason"] == "submitted"
        # as if the process had died after the server created the batch and before the store learned its id
        with duckdb.connect(str(store)) as con:
            con.execute("UPDATE batches SET state = 'preparing', server_id = NULL")
        time.sleep(1.2)
        second = subprocess_cli(*_args(data, store, url, out, protocol), "--json", env=ENVS[protocol])
        stdout, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert "found on the server" in err, err
        assert json.loads(stdout)["stop_reason"] is None
    assert sum(e.get("kind") == "batch_create" for e in logged(log)) == 1  # found by its metadata, not submitted again
    assert all(r["error"] is None for r in read_jsonl(out)) and len(read_jsonl(out)) == 40


@pytest.mark.slow
def test_batches_wait_collects_and_cancel_returns_requests_to_pending(tmp_path: Path) -> None:
    data, store, out = write_jsonl(tmp_path / "d.jsonl", ROWS), tmp_path / "s.duckdb", tmp_path / "o.jsonl"
    log = tmp_path / "log.jsonl"
    with _simulator(log, "--batch-delay", "1") as url:
        first = subprocess_cli(*_args(data, store, url, out), "--no-wait", "--json", env=ENV)
        stdout, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        run_id = json.loads(stdout)["run_id"]
        wait = subprocess_cli("batches", "wait", run_id[:10], "--store", store, "--poll", "0.2", env=ENV)
        _, err = wait.communicate(timeout=120)
        assert wait.returncode == 0 and "40 answers collected" in err, err
        again = subprocess_cli(*_args(data, store, url, out), "--json", env=ENV)
        stdout, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert json.loads(stdout)["calls"] == 0 and all(r["error"] is None for r in read_jsonl(out))
    assert sum(e.get("kind") == "batch_create" for e in logged(log)) == 1
    # cancel: a slow batch is cancelled on the server and its requests go in the next batch
    other, log2 = write_jsonl(tmp_path / "e.jsonl", ROWS[:10]), tmp_path / "log2.jsonl"
    with _simulator(log2, "--batch-delay", "30") as url:
        first = subprocess_cli(*_args(other, store, url, tmp_path / "e.out.jsonl"), "--no-wait", "--json", env=ENV)
        stdout, err = first.communicate(timeout=120)
        run_id = json.loads(stdout)["run_id"]
        cancel = subprocess_cli("batches", "cancel", run_id, "--store", store, env=ENV)
        out_text, err = cancel.communicate(timeout=120)
        assert cancel.returncode == 0 and "1 batches cancelled" in out_text, err
    listed = json.loads(subprocess_cli("batches", "list", "--json", "--store", store).communicate(timeout=60)[0])
    assert [b["state"] for b in listed if b["run_id"] == run_id] == ["cancelled"]


def test_auto_mode_takes_the_batch_api_when_the_deadline_allows(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:10])
    args = ["run", data, "--store", tmp_path / "s.duckdb", "-o", tmp_path / "o.jsonl", "--mode", "auto"]
    result = cli(*args, "--batch-poll", "0.2", "--json")
    assert result.exit_code == 0, result.stderr
    assert "mode auto: batch" in result.stderr
    _, _, _, ok, modes = _ledger(tmp_path / "s.duckdb")
    assert ok == 10 and modes == {"batch"}
    args = ["run", data, "--store", tmp_path / "t.duckdb", "-o", tmp_path / "p.jsonl", "--mode", "auto"]
    online = cli(*args, "--deadline", "1", "--json")
    assert online.exit_code == 0 and "mode auto: online" in online.stderr
    assert _ledger(tmp_path / "t.duckdb")[4] == {"online"}


def test_provider_batch_files_are_datasets_and_results_can_be_written_as_batch_output(cli: Cli, tmp_path: Path) -> None:
    openai_lines = [
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"file question {i}"}],
                  "max_tokens": 20}}
        for i in range(4)
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "openai.jsonl", openai_lines)  # detected from its first line
    out = tmp_path / "o.jsonl"
    result = cli("run", data, "--store", tmp_path / "s.duckdb", "-o", out, "--output-format", "openai-batch", "--json")
    assert result.exit_code == 0, result.stderr
    assert "does not know" not in result.stderr  # custom_id, method, url and body are understood
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(4)]
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in lines)
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"]
    anthropic_lines = [
        {"custom_id": f"a-{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 20, "system": "Be brief.",
         "messages": [{"role": "user", "content": [{"type": "text", "text": f"file question {i}"}]}]}}
        for i in range(3)
    ]  # fmt: skip
    anthropic_lines.append({"custom_id": "bad", "params": {"model": "claude-haiku-4-5", "max_tokens": 5}})
    data = write_jsonl(tmp_path / "anthropic.jsonl", anthropic_lines)
    out = tmp_path / "a.jsonl"
    result = cli("run", data, "--store", tmp_path / "s.duckdb", "-o", out, "--format", "anthropic-batch",
                 "--output-format", "anthropic-batch", "--on-bad-row", "skip", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rejects"] == 1
    rejected = read_jsonl(tmp_path / "a.rejects.jsonl")
    assert rejected[0]["line"] == 4 and rejected[0]["field"] == "params.messages"
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == ["a-0", "a-1", "a-2"]
    assert all(line["result"]["type"] == "succeeded" for line in lines)
    assert lines[0]["result"]["message"]["content"][0]["text"]


@pytest.mark.slow
def test_past_the_deadline_or_after_every_round_failed_the_rest_goes_online(tmp_path: Path) -> None:
    data, store, log = write_jsonl(tmp_path / "d.jsonl", ROWS[:12]), tmp_path / "s.duckdb", tmp_path / "log.jsonl"
    with _simulator(log, "--batch-delay", "60") as url:  # a batch that would take a minute
        args = _args(data, store, url, tmp_path / "o.jsonl")
        proc = subprocess_cli(*args, "--deadline", "0.0005", "--json", env=ENV)  # 1.8 seconds
        stdout, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "past --deadline, cancelled" in err and json.loads(stdout)["calls"] == 12
    entries = logged(log)
    assert sum(e.get("kind") == "batch_create" for e in entries) == 1
    assert len({e["digest"] for e in entries if "kind" not in e and e["status"] == 200}) == 12  # answered online
    assert all(r["error"] is None for r in read_jsonl(tmp_path / "o.jsonl"))
    assert _ledger(store)[4] == {"online"}
    # auto mode: items that failed in every batch round are sent online
    store2, log2 = tmp_path / "t.duckdb", tmp_path / "log2.jsonl"
    with _simulator(log2, "--batch-delay", "0.1", "--batch-fail-rate", "1") as url:
        args = ["run", data, "--store", store2, "--provider", "openai", "--base-url", url, "--mode", "auto",
                "-o", tmp_path / "p.jsonl", "--batch-poll", "0.1"]  # fmt: skip
        proc = subprocess_cli(*args, env=ENV)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert sum(e.get("kind") == "batch_create" for e in logged(log2)) == 3  # the first batch and two resubmissions
    assert all(r["error"] is None for r in read_jsonl(tmp_path / "p.jsonl"))


def test_provider_times_with_nanoseconds_keep_their_zone() -> None:
    """Google writes RFC 3339 with 9 fractional digits and a Z: read as UTC, comparable with the store's times."""
    utc = UTC
    assert server_time("2026-12-07T21:00:00.123456789Z") == datetime(2026, 12, 7, 21, 0, 0, 123456, tzinfo=utc)
    assert server_time("2026-12-07T23:00:00.5+02:00") == datetime(2026, 12, 7, 21, 0, 0, 500000, tzinfo=utc)
    assert server_time("2026-12-07T21:00:00Z") == datetime(2026, 12, 7, 21, tzinfo=utc)
    assert server_time("") is None
