"""Self-hosted servers started on Ray for a run (``--engine ray --ray-serve CMD``, issue 16). The servers here are
costinfer's own simulator speaking vLLM's API (a stand-in for ``vllm serve``, which needs a model this test cannot
load quickly), started by Ray actors on a local Ray: calls spread over them, a rerun on new servers (new ports) finds
its cached answers, and a server killed mid-run loses no row."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, logged, read_jsonl, subprocess_cli, write_jsonl

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the ray extra is not installed (pip install 'costinfer[ray]')"
)


def server_command(logs: Path, *extra: str) -> str:
    serve = [sys.executable, "-m", "costinfer", "simulate", "serve", "--port", "{port}"]
    return " ".join([*serve, "--log", f"{logs}/sim-{{port}}.jsonl", *extra])


def answered(logs: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in logs.glob("sim-*.jsonl"):
        for entry in logged(path):  # polled while the servers write: whole lines only
            if entry.get("status") == 200 and "kind" not in entry:
                found[entry["digest"]] += 1
    return found


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "prompt": f"Summarize ticket number {i} in one line.", "max_tokens": 16} for i in range(n)]


def test_calls_go_to_servers_started_on_ray_and_a_rerun_on_new_servers_is_answered_from_the_cache(
    cli: Cli, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows(300))
    store, logs = tmp_path / "s.duckdb", tmp_path / "logs"
    logs.mkdir()
    base = ["run", data, "--provider", "vllm", "--model", "tiny", "--engine", "ray", "--ray-servers", "2"]
    seen: set[Path] = set()
    for attempt in ("first", "again"):
        out = tmp_path / f"{attempt}.jsonl"
        result = cli(*base, "--ray-serve", server_command(logs), "--store", store, "--output", out, "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        servers = set(logs.glob("sim-*.jsonl")) - seen  # this run's servers (each logs to a file named by its port)
        seen |= servers
        assert len(servers) == 2
        per_server = [sum(1 for _ in p.open()) for p in servers]
        if attempt == "first":
            assert summary["calls"] == 300 and sorted(answered(logs).values()) == [1] * 300
            assert min(per_server) > 0, per_server  # both servers took calls
        else:  # other ports: the key names the command that starts the servers, not their addresses
            assert summary["calls"] == 0 and summary["cache_hits"] == 300
            assert sum(per_server) == 0
        assert all(r["error"] is None for r in read_jsonl(out))


def test_ray_serve_is_refused_without_the_ray_engine_or_with_a_base_url(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows(1))
    for extra, message in (
        ([], "needs --engine ray"),
        (["--engine", "ray", "--base-url", "http://127.0.0.1:9/v1"], "leave --base-url out"),
        (["--engine", "ray", "--ray-serve", "vllm serve tiny"], "{port}"),
        (["--engine", "ray", "--provider", "anthropic"], "--provider vllm"),
    ):
        args = ["--ray-serve", "serve --port {port}", *extra] if "--ray-serve" not in extra else extra
        provider = [] if "--provider" in extra else ["--provider", "vllm"]
        result = cli("plan", data, *provider, "--store", tmp_path / "s.duckdb", *args)
        assert result.exit_code == 2 and message in result.output, (extra, result.output)


def test_a_server_killed_mid_run_loses_no_row(tmp_path: Path) -> None:
    """Two servers answering slowly; one is killed (SIGKILL) while the run calls. Its calls go to the other; the run
    ends normally with every row answered."""
    n = 600
    data = write_jsonl(tmp_path / "d.jsonl", rows(n))
    logs = tmp_path / "logs"
    logs.mkdir()
    command = server_command(logs, "--latency-ms", "40")
    proc = subprocess_cli(
        "run", data, "--provider", "vllm", "--model", "tiny", "--engine", "ray", "--ray-servers", "2", "--ray-serve",
        command, "--store", tmp_path / "s.duckdb", "--output", tmp_path / "out.jsonl", "--json", "--concurrency", "8",
    )  # fmt: skip
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        done = sum(answered(logs).values())
        if done >= n // 5:  # both servers up and calling: kill one now
            found = subprocess.run(
                ["pgrep", "-f", "--", f"serve --port [0-9]+ --log {logs}/sim-"], capture_output=True, text=True
            ).stdout
            killed = int(found.split()[0])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None, f"the run ended before a server could be killed: {stderr[-2000:]}"
    assert proc.returncode == 0, stderr[-2000:]
    results = read_jsonl(tmp_path / "out.jsonl")
    assert len(results) == n and all(r["error"] is None for r in results)
    counts = answered(logs)
    assert len(counts) == n
    again = sum(c - 1 for c in counts.values())
    print(f"server {killed} killed; rows answered twice (in flight when it died): {again}")
    assert again <= 8  # at most the calls in flight on the killed server
    assert json.loads(stdout)["calls"] == n


def test_on_a_cluster_with_gpus_each_server_holds_the_gpus_its_model_needs(tmp_path: Path) -> None:
    """A local Ray that declares 4 GPUs (Ray counts them; nothing here uses them): servers of a model that needs 2
    GPUs each are 2 by default, each reserving 2, so the GPU time billed (gpus x servers) is what Ray reserved."""
    import ray

    from costinfer.engines.ray_serve import ray_servers

    logs = tmp_path / "logs"
    logs.mkdir()
    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False)
    with ray_servers(server_command(logs), None, None, gpus_per_server=2) as servers:
        assert len(servers.urls) == 2 and servers.gpus == 4
        assert ray.available_resources().get("GPU", 0) == 0  # all four held by the two servers
    assert not ray.is_initialized()  # left when the servers stopped


@pytest.mark.timeout(300)
def test_with_every_gpu_held_by_the_servers_the_semantic_tier_embeds_on_cpus(cli: Cli, tmp_path: Path) -> None:
    """Servers take the cluster's GPUs first; the embedding workers then take CPUs instead of waiting for a GPU that
    never comes (a local Ray declaring 2 GPUs, as above)."""
    import ray

    logs = tmp_path / "logs"
    logs.mkdir()
    near = {"id": "near", "prompt": "Summarize ticket number 7 in a line."}
    data = write_jsonl(tmp_path / "d.jsonl", [*rows(40), near])
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    result = cli(
        "run", data, "--provider", "vllm", "--model", "tiny", "--engine", "ray", "--ray-serve", server_command(logs),
        "--semantic", "--store", tmp_path / "s.duckdb", "--output", tmp_path / "out.jsonl", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embeddings_computed"] == 41 and summary["calls"] + summary["semantic"] == 41
    assert not ray.is_initialized()
