"""costinfer cache stats|export|prune|clear on a real store, and the plan's word on the semantic tier."""

from __future__ import annotations

import json
from pathlib import Path

from costinfer.simulator import Simulator
from tests.conftest import Cli, read_jsonl, write_jsonl


def test_cache_commands(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"question {i}"} for i in range(5)])
    assert cli("run", data, "--base-url", sim.url, "--store", store, "--output", tmp_path / "o.jsonl").exit_code == 0
    stats = json.loads(cli("cache", "stats", "--store", store, "--json").stdout)
    assert stats["answers"] == 5 and stats["requests"] == 5 and float(stats["paid_usd"]) > 0
    export = tmp_path / "cache.jsonl"
    assert cli("cache", "export", export, "--store", store).exit_code == 0
    exported = read_jsonl(export)
    assert len(exported) == 5 and {"key", "request", "response", "cost_usd"} <= set(exported[0])
    assert "0 cached answers older than 1 days" in cli("cache", "prune", "--older-than", "1", "--store", store).stdout
    assert "5 cached answers older than 0 days" in cli("cache", "prune", "--older-than", "0", "--store", store).stdout
    again = json.loads(
        cli("run", data, "--base-url", sim.url, "--store", store, "--output", tmp_path / "o.jsonl", "--json").stdout
    )
    assert again["calls"] == 5  # pruned answers are paid for again
    result = cli("cache", "clear", "--store", store, "--yes")
    assert "5 cached answers forgotten; the ledger is kept" in result.stdout
    stats = json.loads(cli("cache", "stats", "--store", store, "--json").stdout)
    assert stats["answers"] == 0 and stats["runs"] == 2


def test_the_plan_says_when_the_semantic_tier_is_off(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hello"}])
    result = cli("plan", data, "--store", tmp_path / "s.duckdb", "--no-semantic")
    assert "semantic tier off (--no-semantic or COSTINFER_SEMANTIC=0)" in result.stderr
