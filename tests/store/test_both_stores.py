"""What a run, its rerun, a budget pool and the reading commands do is the same on both stores: the embedded DuckDB
file and the shared PostgreSQL store (``any_store`` runs each test on each)."""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from costinfer.errors import ExitCode
from costinfer.simulator import Simulator, SimulatorConfig, running_in_thread
from tests.conftest import Cli, read_jsonl, sim_log, subprocess_cli, write_jsonl


def _data(tmp_path: Path, n: int = 40) -> Path:
    rows = [{"id": f"r{i}", "prompt": f"Question {i % 30}: name a colour"} for i in range(n)]  # 30 distinct
    return write_jsonl(tmp_path / "data.jsonl", rows)


def test_a_rerun_is_answered_from_the_store_and_the_history_reads_back(
    cli: Cli, tmp_path: Path, sim: Simulator, any_store: str
) -> None:
    data = _data(tmp_path)
    args = ["run", data, "--store", any_store, "--base-url", sim.url, "--json", "--quiet"]
    first = cli(*args, "-o", tmp_path / "one.jsonl")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["calls"] == 30
    second = cli(*args, "-o", tmp_path / "two.jsonl")
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["calls"] == 0 and summary["cache_hits"] == 40
    assert len(sim_log(sim)) == 30  # paid once in all
    assert [r["response"] for r in read_jsonl(tmp_path / "one.jsonl")] == [
        r["response"] for r in read_jsonl(tmp_path / "two.jsonl")
    ]
    runs = json.loads(cli("runs", "--json", "--store", any_store).stdout)
    assert [r["rows"] for r in runs] == [40, 40]
    analyzed = json.loads(cli("analyze", "--json", "--include-rehearsals", "--store", any_store).stdout)
    assert analyzed["totals"]["runs"] == 2 and analyzed["totals"]["calls"] == 30
    stats = json.loads(cli("cache", "stats", "--json", "--store", any_store).stdout)
    assert stats["answers"] == 30
    report = cli("report", runs[1]["run_id"], "--store", any_store, "-o", tmp_path / "rebuilt.jsonl")
    assert report.exit_code == 0, report.output
    rebuilt = json.loads((tmp_path / "rebuilt.report.json").read_text())
    assert rebuilt["rows"] == 40 if "rows" in rebuilt else True


def test_a_budget_pool_stops_its_runs_at_its_limit_and_stays_spent(
    cli: Cli, tmp_path: Path, sim: Simulator, any_store: str
) -> None:
    data = _data(tmp_path)
    made = cli("budget", "set", "team", "--usd", "0.0001", "--per", "month", "--store", any_store)
    assert made.exit_code == 0, made.output
    args = ["run", data, "--store", any_store, "--base-url", sim.url, "--json", "--quiet", "--max-tokens", "8"]
    pooled = [*args, "--budget-pool", "team", "--on-over-budget", "partial"]
    first = cli(*pooled, "-o", tmp_path / "one.jsonl")
    assert first.exit_code == ExitCode.BUDGET, first.output
    summary = json.loads(first.stdout)
    assert summary["not_run"] > 0 and summary["stop_reason"] == "budget"
    shown = json.loads(cli("budget", "show", "--json", "--store", any_store).stdout)[0]
    assert Decimal(shown["spent_usd"]) == Decimal(summary["cost_usd"]) <= Decimal("0.0001")
    assert Decimal(shown["left_usd"]) == Decimal("0.0001") - Decimal(shown["spent_usd"])
    # a second run on the spent pool: what is left covers nothing more than the first left
    calls_before = len(sim_log(sim))
    second = cli(*pooled, "-o", tmp_path / "two.jsonl")
    assert second.exit_code == ExitCode.BUDGET, second.output
    assert len(sim_log(sim)) - calls_before <= 1
    # without partial, a pool that cannot hold the expected cost refuses the run before anything is sent
    refused = cli(*args, "--budget-pool", "team", "-o", tmp_path / "four.jsonl")
    assert refused.exit_code == ExitCode.BUDGET and "budget pool team" in refused.output
    unknown = cli(*args, "--budget-pool", "nobody", "-o", tmp_path / "three.jsonl")
    assert unknown.exit_code == ExitCode.USAGE and "budget set nobody" in unknown.output


@pytest.mark.slow
def test_the_reading_commands_answer_while_a_run_holds_the_store(tmp_path: Path, any_store: str) -> None:
    """On PostgreSQL by its own concurrency; on the DuckDB file from the live copy the running process keeps beside
    it (at most 5 s old, and the answer says so), and a report from the run's rows the holder hands over when asked.
    Never exit 6 for runs, analyze, report or cache stats."""
    rows = [{"id": f"r{i}", "prompt": f"Question {i}: name a colour"} for i in range(400)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    with running_in_thread(SimulatorConfig(latency_ms=150)) as server:
        proc = subprocess_cli(
            "run", data, "--store", any_store, "--base-url", server.url, "--concurrency", "4", "--quiet",
            "-o", tmp_path / "out.jsonl",
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            running: list[dict[str, object]] = []
            while time.monotonic() < deadline and not running:
                listed = subprocess_cli("runs", "--json", "--store", any_store)
                out, err = listed.communicate(timeout=60)
                if "no store there" in err:  # the run has not made its store yet
                    continue
                assert listed.returncode == 0, err
                running = [r for r in json.loads(out) if r["status"] == "running"]
                time.sleep(0.3)
            assert running, "the run never showed as running"
            if any_store.endswith(".duckdb"):
                assert "live status" in err and "s ago" in err, err
            for args in (["analyze", "--json", "--include-rehearsals"], ["cache", "stats", "--json"]):
                reader = subprocess_cli(*args, "--store", any_store)
                out, err = reader.communicate(timeout=60)
                assert reader.returncode == 0, err
                json.loads(out)
            # the running run's report, from its rows so far
            reader = subprocess_cli("report", str(running[0]["run_id"]), "--store", any_store)
            out, err = reader.communicate(timeout=90)
            assert reader.returncode == 0, err
            report = json.loads((tmp_path / "out.report.json").read_text())
            assert report["run_id"] == running[0]["run_id"]
            # the run's rows handed over for the report, and the request for them, are removed (the status copy
            # the holder rewrites every few seconds, ``.store.duckdb.live.PID.tmp`` while it writes, is not theirs)
            handed = [*tmp_path.glob("*.live.run-*"), *tmp_path.glob("*.live.want-*")]
            assert not handed, "the rows handed over for the report are removed"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    # the copy goes with the run that kept it
    assert not Path(any_store + ".live").exists()
