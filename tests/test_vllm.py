"""The vllm backend against a real vLLM server (opt-in: it takes minutes to start on a CPU).

Set COSTINFER_VLLM_URL (e.g. http://127.0.0.1:8011/v1) to a server started with ../shared/vllm-cpu/serve.sh, or run
CI with COSTINFER_CI_VLLM=1 to have .ci/run start one. Without it these tests are skipped, and say why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from costinfer.core.errors import ExitCode
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
