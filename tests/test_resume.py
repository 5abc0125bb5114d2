"""Kill a real `costinfer run` process midway and resume it: nothing durable is paid twice, the output completes."""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from costinfer.errors import ExitCode
from costinfer.simulator import SimulatorConfig, body_digest, running_in_thread
from tests.conftest import logged, provider_args, read_jsonl, subprocess_cli, write_jsonl

N = 400
OPENAI_ENV = {"OPENAI_API_KEY": "sk-test"}
CONCURRENCY = 8


def dataset(tmp_path: Path) -> Path:
    rows = [{"id": f"r{i}", "prompt": f"Summarize ticket {i % 360} in one line."} for i in range(N)]
    return write_jsonl(tmp_path / "tickets.jsonl", rows)  # rows 360..399 repeat earlier prompts


def log_digests(path: Path) -> list[str]:
    return [entry["digest"] for entry in logged(path)]  # read while the simulator writes: whole lines only


def wait_for_log(path: Path, n: int, proc: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(log_digests(path)) < n:
        assert proc.poll() is None, proc.communicate()  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the run made too few calls"
        time.sleep(0.02)


def durable_digests(store: Path | str, protocol: str = "openai") -> set[str]:
    """Digests, as the simulator logs them, of the requests whose answers are durable in the store (a shared store
    is copied into a DuckDB file to be read)."""
    from costinfer.backends.anthropic import to_messages_request

    if isinstance(store, str):
        from costinfer.store.copying import copy_store

        copy = Path(tempfile.mkdtemp()) / "copy.duckdb"
        copy_store(store, copy)
        store = copy
    with duckdb.connect(str(store), read_only=True) as con:
        bodies = [
            json.loads(b)
            for (b,) in con.execute("SELECT q.body FROM responses r JOIN requests q ON q.key = r.key").fetchall()
        ]
    if protocol == "anthropic":
        bodies = [to_messages_request(b) for b in bodies]
    return {body_digest(b) for b in bodies}


def args(
    data: Path, url: str, tmp_path: Path, protocol: str = "openai", store: Path | str | None = None
) -> list[object]:
    target, _ = provider_args(protocol, url)
    out = tmp_path / "out.jsonl"
    store = store or tmp_path / "store.duckdb"
    return ["run", data, *target, "--store", store, "--output", out, "-c", CONCURRENCY, "--json"]


@pytest.mark.parametrize(
    ("kill_after", "protocol", "kind"),
    [(60, "openai", "duckdb"), (150, "openai", "duckdb"), (100, "anthropic", "duckdb"), (100, "openai", "postgresql")],
)
def test_sigkill_then_rerun_pays_nothing_twice(
    tmp_path: Path, kill_after: int, protocol: str, kind: str, request: pytest.FixtureRequest
) -> None:
    """On both stores: on the shared one, the rerun on the same machine sees that the killed process is gone and
    resumes its run at once (its lease need not lapse first), taking over its claims."""
    log = tmp_path / "requests.jsonl"
    data = dataset(tmp_path)
    store: Path | str = tmp_path / "store.duckdb" if kind == "duckdb" else str(request.getfixturevalue("pg_url"))
    env = provider_args(protocol, "x")[1]
    with running_in_thread(SimulatorConfig(latency_ms=15, jitter_ms=10, log_path=log)) as sim:
        proc = subprocess_cli(*args(data, sim.url, tmp_path, protocol, store), env=env)
        wait_for_log(log, kill_after, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        time.sleep(0.3)  # calls the server was still answering finish and are logged
        before = log_digests(log)
        saved = durable_digests(store, protocol)
        assert 0 < len(saved) <= len(set(before))

        rerun = subprocess_cli(*args(data, sim.url, tmp_path, protocol, store), env=env)
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        after = log_digests(log)[len(before) :]

    # no call whose answer was durable before the kill is made again
    assert not saved & set(after)
    # the repeats are exactly the calls that were in flight or answered but not yet committed at the kill
    repeated = set(before) & set(after)
    assert repeated == set(before) - saved
    assert len(repeated) <= 16 * CONCURRENCY  # in flight, plus a few commit groups (more on a loaded machine)
    # every distinct request was answered, and the output is complete
    assert set(before) | set(after) == durable_digests(store, protocol)
    assert len(set(before) | set(after)) == 360
    summary = json.loads(out)
    assert summary["resumed"] is True
    assert summary["calls"] == len(after)
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(N)]
    assert all(r["error"] is None and r["response"] for r in rows)
    assert {r["source"] for r in rows} == {"fresh", "duplicate"}  # paid by this run, before or after the kill
    assert "resuming run" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_cleanly_and_resume(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "requests.jsonl"
    data = dataset(tmp_path)
    with running_in_thread(SimulatorConfig(latency_ms=30, log_path=log)) as sim:
        proc = subprocess_cli(*args(data, sim.url, tmp_path), env=OPENAI_ENV)
        wait_for_log(log, 50, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == ExitCode.INTERRUPTED, err
        assert "rerun the same command to resume" in err
        assert "Traceback" not in err
        time.sleep(0.2)
        before = log_digests(log)
        saved = durable_digests(tmp_path / "store.duckdb")
        # calls in flight at the signal were allowed to finish and were saved: nothing answered was lost
        assert saved == set(before)
        summary = json.loads(out)
        assert summary["stop_reason"] == "interrupted" and summary["not_run"] > 0
        rows = read_jsonl(tmp_path / "out.jsonl")
        assert len(rows) == N
        assert sum(r["error"] == "not_run: interrupted" for r in rows) == summary["not_run"]
        answered = [r for r in rows if r["response"]]
        assert len({r["key"] for r in answered}) == len(saved)

        rerun = subprocess_cli(*args(data, sim.url, tmp_path), env=OPENAI_ENV)
        _, err2 = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err2
        after = log_digests(log)[len(before) :]
    assert not set(before) & set(after)
    assert all(r["error"] is None for r in read_jsonl(tmp_path / "out.jsonl"))


@pytest.mark.parametrize("seed", [3, 17, 29, 41])
def test_random_signals_at_random_moments(tmp_path: Path, seed: int) -> None:
    """SIGTERM or SIGKILL at a random point of the run, then a rerun: no lost results, no double payment."""
    import random

    rng = random.Random(seed)
    sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
    kill_after = rng.randint(10, 300)
    log = tmp_path / "requests.jsonl"
    data = dataset(tmp_path)
    with running_in_thread(SimulatorConfig(latency_ms=10, jitter_ms=8, log_path=log)) as sim:
        proc = subprocess_cli(*args(data, sim.url, tmp_path), env=OPENAI_ENV)
        wait_for_log(log, kill_after, proc)
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        assert proc.returncode in (ExitCode.INTERRUPTED, -signal.SIGKILL)
        time.sleep(0.3)
        before = log_digests(log)
        saved = durable_digests(tmp_path / "store.duckdb")
        if sig == signal.SIGTERM:
            assert saved == set(before)  # a clean stop saves every answer it received
        rerun = subprocess_cli(*args(data, sim.url, tmp_path), env=OPENAI_ENV)
        _, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        after = log_digests(log)[len(before) :]
    assert not saved & set(after)  # nothing durable was paid again
    assert len(after) == len(set(after))
    assert set(before) | set(after) == durable_digests(tmp_path / "store.duckdb")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == N and all(r["response"] and r["error"] is None for r in rows)
