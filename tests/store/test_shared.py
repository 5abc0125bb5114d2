"""The store a team shares (``--store postgresql://...``), against a real PostgreSQL server the tests start
(``tests/pgserver.py``), and real ``costinfer run`` processes against one simulator whose log is what was billed.

Each distinct request is paid once across concurrent processes (claims), a killed process's claims are taken over,
a budget pool holds across concurrent runs, and the reading commands answer while runs write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costinfer.pricing.catalog import Catalog
from costinfer.pricing.config_file import Config
from tests import pgserver

WHY = pgserver.unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no PostgreSQL server can be started here: {WHY}")
CATALOG = Catalog.load(None, Config.load(None))
CLI = [sys.executable, "-m", "costinfer"]
ENV = {**os.environ, "COSTINFER_SEMANTIC": "0", "COSTINFER_CLAIM_LEASE_S": "3"}


@contextmanager
def simulator(log: Path, *extra: str) -> Iterator[str]:
    """``costinfer simulate serve`` in a process of its own (it outlives the runs); yields its URL."""
    serve = [*CLI, "simulate", "serve", "--port", "0", "--log", str(log), *extra]
    with subprocess.Popen(serve, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            yield server.stdout.readline().strip()
        finally:
            server.terminate()


def datasets(folder: Path, n: int = 4, rows: int = 1000, step: int = 500) -> list[Path]:
    """``n`` datasets of ``rows`` rows, each overlapping the next by ``rows - step``: with the defaults, 4 x 1,000
    rows over 2,500 distinct requests, each dataset sharing half of its rows with the next."""
    paths = []
    for d in range(n):
        path = folder / f"part{d}.jsonl"
        with path.open("w") as fh:
            for i in range(d * step, d * step + rows):
                fh.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: what is {i} squared?"}) + "\n")
        paths.append(path)
    return paths


def start_run(data: Path, store: str, url: str, *extra: object) -> subprocess.Popen[str]:
    args = [*CLI, "run", str(data), "--store", store, "--provider", "simulate", "--base-url", url, "--quiet"]
    args += ["-o", str(data.with_suffix(".results.jsonl")), "--json", *map(str, extra)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def billed(log: Path) -> tuple[Decimal, dict[str, int]]:
    """What the simulator billed (every answer delivered, at the catalog's prices) and how often each distinct
    request body was answered."""
    total, seen = Decimal(0), {}
    for line in log.read_text().splitlines() if log.exists() else []:
        entry = json.loads(line)
        usage = entry.get("usage")
        if entry.get("status") != 200 or usage is None:
            continue
        price = CATALOG.lookup(str(entry["model"]), "simulate")
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        total += price.cost(int(usage["prompt_tokens"]), int(usage["completion_tokens"]), cached)
        seen[entry["digest"]] = seen.get(entry["digest"], 0) + 1
    return total, seen


def results(data: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.with_suffix(".results.jsonl").read_text().splitlines()]


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=timeout)
    summary = json.loads(out) if out.strip().startswith("{") else {}
    return proc.returncode, summary, err


def _count(url: str, query: str) -> int:
    import psycopg

    with psycopg.connect(url) as con:
        row = con.execute(query).fetchone()
    return int(row[0]) if row else 0


def cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.mark.slow
def test_four_concurrent_runs_pay_each_distinct_request_once(tmp_path: Path, pg_url: str) -> None:
    parts, log = datasets(tmp_path), tmp_path / "sim.jsonl"
    with simulator(log, "--latency-ms", "20") as url:
        procs = [start_run(p, pg_url, url, "--concurrency", 32) for p in parts]
        outcomes = [finish(p) for p in procs]
    for code, _, err in outcomes:
        assert code == 0, err
    _, seen = billed(log)
    assert len(seen) == 2500
    assert max(seen.values()) == 1, "a distinct request was paid twice across the runs"
    summaries = [s for _, s, _ in outcomes]
    assert sum(s["calls"] for s in summaries) == 2500
    # what one run waited for and another answered is a cache hit in the waiting run's report
    assert sum(s["cache_hits"] for s in summaries) == 4000 - 2500
    for p in parts:
        rows = results(p)
        assert len(rows) == 1000 and all(r["response"] and not r.get("error") for r in rows)
    listed = cli("runs", "--store", pg_url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 4


@pytest.mark.slow
def test_a_killed_run_s_claims_are_taken_over_and_nothing_is_paid_twice_beyond_its_calls_in_flight(
    tmp_path: Path, pg_url: str
) -> None:
    parts, log = datasets(tmp_path), tmp_path / "sim.jsonl"
    concurrency = 16
    with simulator(log, "--latency-ms", "30") as url:
        procs = [start_run(p, pg_url, url, "--concurrency", concurrency) for p in parts]
        deadline = time.monotonic() + 120
        while len(billed(log)[1]) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(timeout=30)
        # paid and not yet durable at the kill (answers delivered, not in the shared cache): what may be paid twice
        stored = _count(pg_url, "SELECT count(*) FROM responses")
        not_durable = len(billed(log)[1]) - stored
        others = [finish(p) for i, p in enumerate(procs) if i != 1]
        for code, _, err in others:
            assert code == 0, err
        # the killed run's command again: it resumes, and what the others answered meanwhile is not paid again
        code, _, err = finish(start_run(parts[1], pg_url, url, "--concurrency", concurrency))
        assert code == 0, err
    _, seen = billed(log)
    assert len(seen) == 2500  # every distinct request answered
    twice = sum(n - 1 for n in seen.values())
    assert twice <= max(not_durable, 0) + concurrency, (
        f"{twice} requests paid twice; at most those paid and not yet saved at the kill ({not_durable})"
    )
    for p in parts:
        rows = results(p)
        assert len(rows) == 1000 and all(r["response"] for r in rows)


@pytest.mark.slow
def test_a_budget_pool_holds_across_four_concurrent_runs(tmp_path: Path, pg_url: str) -> None:
    parts, log = datasets(tmp_path, rows=500, step=500), tmp_path / "sim.jsonl"
    # the pool: a third of what the four runs' worst cases add up to
    # (answers as long as their cap: what a call costs is close to its worst case, and the pool runs out)
    plans = [cli("plan", p, "--store", pg_url, "--provider", "simulate", "--max-tokens", 16, "--json") for p in parts]
    worst = sum(Decimal(str(json.loads(p.stdout)["worst_cost_usd"])) for p in plans)
    pool = (worst / 3).quantize(Decimal("0.000001"))
    made = cli("budget", "set", "team", "--usd", pool, "--per", "month", "--store", pg_url)
    assert made.returncode == 0, made.stderr
    with simulator(log, "--latency-ms", "10") as url:
        pooled = ("--budget-pool", "team", "--on-over-budget", "partial", "--max-tokens", 16)
        procs = [start_run(p, pg_url, url, *pooled) for p in parts]
        outcomes = [finish(p) for p in procs]
    total, seen = billed(log)
    assert total <= pool, f"the pool ${pool} was passed: ${total} billed"
    assert total > pool / 2  # and it was used, not refused
    assert max(seen.values()) == 1
    not_run = 0
    for (code, summary, err), p in zip(outcomes, parts, strict=True):
        rows = results(p)
        unsent = [r for r in rows if str(r.get("error") or "").startswith("not_run")]
        not_run += len(unsent)
        if unsent:  # a run that could not send everything says so: its exit code and its summary
            assert code != 0 and summary.get("not_run") == len(unsent), (code, summary, err)
    assert not_run > 0
    shown = json.loads(cli("budget", "show", "--json", "--store", pg_url).stdout)
    assert Decimal(str(shown[0]["spent_usd"])) == total.quantize(Decimal("1e-12"))


@pytest.mark.slow
def test_runs_and_analyze_answer_while_a_run_writes(tmp_path: Path, pg_url: str) -> None:
    (data,) = datasets(tmp_path, n=1, rows=600)
    with simulator(tmp_path / "sim.jsonl", "--latency-ms", "100") as url:
        proc = start_run(data, pg_url, url, "--concurrency", 4)
        try:
            deadline = time.monotonic() + 60
            seen_running = False
            while time.monotonic() < deadline and not seen_running:
                listed = cli("runs", "--json", "--store", pg_url)
                assert listed.returncode == 0, listed.stderr
                seen_running = any(r["status"] == "running" for r in json.loads(listed.stdout))
                time.sleep(0.3)
            assert seen_running
            analyzed = cli("analyze", "--json", "--include-rehearsals", "--store", pg_url)
            assert analyzed.returncode == 0, analyzed.stderr
            assert json.loads(analyzed.stdout)["totals"]["runs"] == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)


def test_store_copy_moves_history_and_cache_both_ways_idempotently(tmp_path: Path, pg_url: str) -> None:
    (data,) = datasets(tmp_path, n=1, rows=50)
    local = tmp_path / "mine.duckdb"
    with simulator(tmp_path / "sim.jsonl") as url:
        code, _, err = finish(start_run(data, str(local), url))
        assert code == 0, err
        first = json.loads(cli("store", "copy", "--from", local, "--to", pg_url, "--json").stdout)
        assert first["responses"] == 50 and first["runs"] == 1
        again = cli("store", "copy", "--from", local, "--to", pg_url, "--json")
        assert again.returncode == 0
        cached = json.loads(cli("cache", "stats", "--json", "--store", pg_url).stdout)
        assert cached["answers"] == 50 and cached["runs"] == 1  # a second copy added nothing
        # the shared store answers the same dataset from what was copied: no call
        code, summary, err = finish(start_run(data, pg_url, url))
        assert code == 0 and summary["calls"] == 0 and summary["cache_hits"] == 50, err
        back = tmp_path / "back.duckdb"
        pulled = json.loads(cli("store", "copy", "--from", pg_url, "--to", back, "--json").stdout)
        assert pulled["runs"] == 2 and pulled["responses"] == 50
        assert json.loads(cli("store", "copy", "--from", pg_url, "--to", back, "--json").stdout)["runs"] == 0
    listed = json.loads(cli("runs", "--json", "--store", back).stdout)
    assert len(listed) == 2


def test_a_wrong_connection_string_is_one_line_naming_the_store_without_its_password(tmp_path: Path) -> None:
    (data,) = datasets(tmp_path, n=1, rows=3)
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    done = cli("run", data, "--store", url, "--provider", "simulate", "-o", tmp_path / "o.jsonl")
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "cannot connect to PostgreSQL" in lines[0], done.stderr
    assert "s3cret" not in done.stderr and "someone:***@127.0.0.1:1/nowhere" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_two_concurrent_batch_runs_pay_each_distinct_request_once(tmp_path: Path, pg_url: str) -> None:
    """A batch's requests are claimed before it is submitted and held while it is open: a second run in batch mode
    over overlapping data leaves them out of its own batches and waits for their answers."""
    parts, log = datasets(tmp_path, n=2, rows=300, step=150), tmp_path / "sim.jsonl"
    with simulator(log, "--batch-delay", "2") as url:
        procs = [start_run(p, pg_url, url, "--mode", "batch", "--batch-poll", "0.2") for p in parts]
        outcomes = [finish(p) for p in procs]
    for code, _, err in outcomes:
        assert code == 0, err
    served = [json.loads(line) for line in log.read_text().splitlines()]
    items = [e for e in served if e.get("kind") == "batch_item"]
    digests = [e["digest"] for e in items if e.get("status") == 200]  # each batch item the simulator answered
    assert len(set(digests)) == len(digests) == 450, (len(digests), len(set(digests)))
    summaries = [s for _, s, _ in outcomes]
    assert sum(s["calls"] for s in summaries) == 450
    assert sum(s["cache_hits"] for s in summaries) == 150
    for p in parts:
        rows = results(p)
        assert len(rows) == 300 and all(r["response"] for r in rows)
