"""The vllm backend against a real vLLM server (opt-in: it takes minutes to start on a CPU).

Set COSTINFER_VLLM_URL (e.g. http://127.0.0.1:8011/v1) to a server started with ../shared/vllm-cpu/serve.sh, or run
CI with COSTINFER_CI_VLLM=1 to have .ci/run start one. Without it these tests are skipped, and say why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from costinfer.errors import ExitCode
from tests.conftest import Cli, read_jsonl, write_jsonl

URL = os.environ.get("COSTINFER_VLLM_URL")
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not URL, reason="no real vLLM server: set COSTINFER_VLLM_URL (../shared/vllm-cpu/README.md)"),
]


def test_run_against_real_vllm(cli: Cli, tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "prompt": f"Say something about the number {i}.", "max_tokens": 16} for i in range(40)]
    rows += [{**rows[0], "id": "dup"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "o.jsonl"
    store = tmp_path / "s.duckdb"
    args = [
        "run",
        data,
        "--provider",
        "vllm",
        "--base-url",
        URL,
        "--model",
        "tiny",
        "--output",
        out,
        "--store",
        store,
        "--concurrency",
        "8",
        "--json",
    ]
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["calls"] == 40 and summary["duplicates"] == 1
    results = read_jsonl(out)
    assert all(r["error"] is None and r["input_tokens"] > 0 and 0 < r["output_tokens"] <= 16 for r in results)
    assert summary["cost_usd"] == "0"  # a self-hosted model the catalog does not price costs nothing per token
    again = json.loads(cli(*args).stdout)
    assert again["calls"] == 0 and again["cache_hits"] == 41


def test_real_vllm_refuses_a_prompt_longer_than_its_context(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "long", "prompt": "word " * 2000, "max_tokens": 16}])
    out = tmp_path / "o.jsonl"
    result = cli(
        "run",
        data,
        "--provider",
        "vllm",
        "--base-url",
        URL,
        "--model",
        "tiny",
        "--output",
        out,
        "--store",
        tmp_path / "s.duckdb",
        "--quiet",
    )
    assert result.exit_code == ExitCode.ROWS_FAILED
    error = read_jsonl(out)[0]["error"]
    assert error.startswith("bad_request: HTTP 400:") and "context" in error.lower()


def test_prompt_counts_from_tokenize_equal_what_vllm_bills(cli: Cli, tmp_path: Path) -> None:
    import duckdb

    rows = [{"id": f"t{i}", "prompt": f"Count the words of sentence {i}: " + "lorem ipsum " * (i % 9), "max_tokens": 8}
            for i in range(30)]  # fmt: skip
    rows += [{"id": "sys", "system": "You are terse.", "prompt": "Hello there, how are you?", "max_tokens": 8}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    store = tmp_path / "s.duckdb"
    result = cli("run", data, "--provider", "vllm", "--base-url", URL, "--model", "tiny", "--store", store,
                 "-o", tmp_path / "o.jsonl", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(store), read_only=True) as con:
        pairs = con.execute(
            "SELECT q.counted_by, q.input_tokens, c.input_tokens FROM calls c JOIN requests q USING (key) "
            "WHERE c.status = 'ok'"
        ).fetchall()
    assert len(pairs) == len(rows)
    assert all(by == "server" and counted == billed for by, counted, billed in pairs), pairs[:5]


REPLICA = os.environ.get("COSTINFER_VLLM_REPLICA_URL")
REPLICA_PID = os.environ.get("COSTINFER_VLLM_REPLICA_PID")


@pytest.mark.skipif(
    not (REPLICA and REPLICA_PID),
    reason="no second vLLM server this test may kill: set COSTINFER_VLLM_REPLICA_URL and COSTINFER_VLLM_REPLICA_PID",
)
def test_two_real_replicas_share_the_load_and_a_run_survives_killing_one(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    import duckdb

    rows = [{"id": f"k{i}", "prompt": f"Write about topic {i}", "max_tokens": 32} for i in range(600)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    store = tmp_path / "s.duckdb"
    argv = [sys.executable, "-m", "costinfer", "run", str(data), "--provider", "vllm", "--model", "tiny",
            "--base-url", str(URL), "--base-url", str(REPLICA), "--store", str(store), "-o", str(tmp_path / "o.jsonl"),
            "--json", "--quiet", "--no-report"]  # fmt: skip
    before = _finished(str(REPLICA))
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline and _finished(str(REPLICA)) - before < 100:
            time.sleep(0.2)  # kill the replica once it has answered a hundred of the run's calls
        os.kill(int(str(REPLICA_PID)), signal.SIGKILL)
        out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    summary = json.loads(out)
    print("\n".join(n for n in summary["notes"] if n.startswith("replica ")))
    assert summary["failed"] == 0 and summary["not_run"] == 0
    with duckdb.connect(str(store), read_only=True) as con:
        per_key = con.execute("SELECT count(*) FROM calls WHERE status = 'ok' GROUP BY key").fetchall()
    assert len(per_key) == len(rows) and all(n == 1 for (n,) in per_key)  # every row answered once
    lines = [n for n in summary["notes"] if n.startswith("replica ")]
    assert len(lines) == 2 and all(" 0 calls" not in line for line in lines)  # both shared the load


def _finished(url: str) -> float:
    """Requests a vLLM server has finished (vllm:request_success_total), from its /metrics."""
    import urllib.request

    root = url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total")
    )
