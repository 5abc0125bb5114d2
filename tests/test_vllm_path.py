"""The vLLM path against the simulator speaking vLLM's extra endpoints (/tokenize, /metrics, max_model_len) over real
HTTP: prompts counted by the server, calls in flight that follow its queue, several replicas surviving one's death,
and `costinfer doctor`. The same code runs against a real vLLM server in tests/test_vllm.py (opt-in)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from costinfer.simulator import SimulatorConfig, running_in_thread
from tests.conftest import Cli, read_jsonl, write_jsonl

ROWS = [{"id": f"v{i}", "prompt": f"Tell me about item {i} of the catalog", "max_tokens": 24} for i in range(300)]


def _run(cli: Cli, data: Path, store: Path, urls: list[str], *extra: str) -> dict:
    args: list[object] = ["run", data, "--store", store, "--provider", "vllm", "--model", "tiny", "--json"]
    for url in urls:
        args += ["--base-url", url]
    result = cli(*args, "-o", store.with_suffix(".out.jsonl"), *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_prompts_are_counted_by_the_server_and_equal_what_it_bills(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:40])
    store = tmp_path / "s.duckdb"
    with running_in_thread(SimulatorConfig(max_model_len=4096)) as sim:
        summary = _run(cli, data, store, [sim.url])
    assert not any(n.startswith("estimate:") for n in summary["notes"])
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute(
            "SELECT q.counted_by, q.input_tokens, c.input_tokens FROM calls c JOIN requests q USING (key)"
        ).fetchall()
    assert len(rows) == 40
    assert all(by == "server" and counted == billed for by, counted, billed in rows)


def test_the_plan_warns_of_requests_longer_than_the_servers_context(cli: Cli, tmp_path: Path) -> None:
    rows = [{"id": "long", "prompt": "word " * 300, "max_tokens": 64}, {"id": "short", "prompt": "hi"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    with running_in_thread(SimulatorConfig(max_model_len=256)) as sim:
        result = cli("plan", data, "--store", tmp_path / "s.duckdb", "--provider", "vllm", "--base-url", sim.url,
                     "--model", "gpt-4o-mini", "--max-tokens", "32")  # fmt: skip
    assert result.exit_code == 0, result.output  # the simulator serves gpt-4o-mini with the context it is given
    assert "1 requests need more than gpt-4o-mini's context of 256 tokens on the server" in result.output


def test_calls_in_flight_fill_the_running_batch_without_a_long_queue(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with running_in_thread(SimulatorConfig(max_running=8, latency_ms=30)) as sim:
        _run(cli, data, tmp_path / "a.duckdb", [sim.url])
        followed = (sim.peak_running, sim.peak_waiting)
    with running_in_thread(SimulatorConfig(max_running=8, latency_ms=30)) as sim:
        _run(cli, data, tmp_path / "b.duckdb", [sim.url], "--concurrency", "64", "--fixed-concurrency")
        fixed = (sim.peak_running, sim.peak_waiting)
    assert followed[0] == 8  # the batch was full
    assert followed[1] <= 16  # a short queue behind it (a fixed 64 queues about 56)
    assert fixed[1] >= 40


@contextmanager
def _server(log: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    cmd = [sys.executable, "-m", "costinfer", "simulate", "serve", "--port", "0", "--log", str(log),
           "--max-running", "4", "--latency-ms", "40"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            yield proc, proc.stdout.readline().strip()
        finally:
            proc.kill()


def test_two_replicas_share_the_load_and_a_run_survives_one_dying(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    store = tmp_path / "s.duckdb"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with _server(log_a) as (a, url_a), _server(log_b) as (_, url_b):
        argv = [sys.executable, "-m", "costinfer", "run", str(data), "--store", str(store), "--provider", "vllm",
                "--model", "tiny", "--base-url", url_a, "--base-url", url_b, "--json", "--quiet",
                "-o", str(tmp_path / "out.jsonl")]  # fmt: skip
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # let both replicas answer some calls first
                answered = [p.read_text().count('"status":200') if p.exists() else 0 for p in (log_a, log_b)]
                if min(answered) >= 20:
                    break
                time.sleep(0.05)
            a.send_signal(signal.SIGKILL)  # replica A dies mid-run
            out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    summary = json.loads(out)
    assert summary["failed"] == 0 and summary["not_run"] == 0
    results = read_jsonl(tmp_path / "out.jsonl")
    assert len(results) == len(ROWS) and all(r["response"] for r in results)
    with duckdb.connect(str(store), read_only=True) as con:
        per_key = con.execute("SELECT count(*) FROM calls WHERE status = 'ok' GROUP BY key").fetchall()
    assert len(per_key) == len(ROWS) and all(n == 1 for (n,) in per_key)  # every row answered once
    lines = [n for n in summary["notes"] if n.startswith("replica ")]
    assert len(lines) == 2 and "connection failures" in lines[0]
    assert all(int(line.split(": ")[1].split(" calls")[0]) >= 20 for line in lines)


def test_doctor_checks_a_server_in_one_command(cli: Cli) -> None:
    with running_in_thread(SimulatorConfig(max_model_len=2048)) as sim:
        result = cli("doctor", "--base-url", sim.url, "--model", "gpt-4o-mini")
        assert result.exit_code == 0, result.output
        for name in ("reachable", "model served", "context", "tokenizer", "metrics", "one call"):
            assert f"ok   {name}:" in result.output
        missing = cli("doctor", "--base-url", sim.url, "--model", "no-such-model")
        assert missing.exit_code == 2 and "'no-such-model' is not served" in missing.output
    gone = cli("doctor", "--base-url", "http://127.0.0.1:9/v1")
    assert gone.exit_code == 5 and "start the server, or fix --base-url" in gone.output


def test_a_self_hosted_run_is_priced_from_its_measured_gpu_time(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "costinfer.toml"
    config.write_text('[self_hosted."tiny"]\ngpu_hour_usd = 3.6\ngpus = 2\noutput_tokens_per_second = 500\n')
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:60])
    store = tmp_path / "s.duckdb"
    with running_in_thread(SimulatorConfig(latency_ms=20, max_running=8)) as sim:
        plan = cli("plan", data, "--store", store, "--provider", "vllm", "--base-url", sim.url, "--model", "tiny",
                   "--config", config, "--compare-with", "gpt-4o-mini", "--json")  # fmt: skip
        assert plan.exit_code == 0, plan.output
        assert json.loads(plan.stdout)["compare"]["model"] == "gpt-4o-mini"
        summary = _run(cli, data, store, [sim.url], "--config", config, "--compare-with", "gpt-4o-mini")
    with duckdb.connect(str(store), read_only=True) as con:
        calls = con.execute("SELECT input_tokens + output_tokens, cost_usd FROM calls WHERE status = 'ok'").fetchall()
    total = sum(float(c) for _, c in calls)
    expected = 3.6 * 2 * summary["calls_elapsed_s"] / 3600  # $3.60 per GPU-hour, two GPUs, the calls' wall time
    assert abs(total - expected) <= expected * 0.01
    per_token = {round(float(c) / t, 12) for t, c in calls}
    assert max(per_token) - min(per_token) < 1e-9  # spread by tokens: the same price per token for every call
    assert any(n.startswith("GPU time: ") for n in summary["notes"])
    from costinfer.pricing.catalog import Catalog

    mini = Catalog.load().lookup("gpt-4o-mini", "openai")
    compare = summary["compare_with"]
    assert compare["model"] == "gpt-4o-mini"
    assert float(compare["cost_usd"]) == float(mini.cost(summary["input_tokens"], summary["output_tokens"]))


def test_a_run_remembers_the_servers_batch_and_the_next_run_starts_there(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:200])
    store = tmp_path / "s.duckdb"
    with running_in_thread(SimulatorConfig(max_running=8, latency_ms=30)) as sim:
        _run(cli, data, store, [sim.url])
        again = write_jsonl(tmp_path / "e.jsonl", [{**r, "prompt": r["prompt"] + "?"} for r in ROWS[:200]])
        sim.peak_waiting = 0
        _run(cli, again, store, [sim.url])
        assert sim.peak_waiting <= 4  # started at the batch of 8 plus its queue of 4: no burst of 16
    with duckdb.connect(str(store), read_only=True) as con:
        batches = con.execute("SELECT server_batch FROM runs ORDER BY started_at").fetchall()
    first, second = (float(b) for (b,) in batches)
    assert first == 8.0  # the server's batch, seen running
    # the second run starts at 8 (above); what it saw running at once depends on how fast this machine fed it
    assert 4.0 <= second <= 8.0
