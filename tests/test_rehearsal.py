"""No silent rehearsal: the provider comes from the model and needs its key; a rehearsal (``--provider simulate``)
says so everywhere a person or a pipeline reads a figure, and stays out of analyze's spent totals unless asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE, Cli, read_jsonl, write_jsonl

NO_KEYS = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


def real_cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a process with no provider named and no API key in its environment (as a new user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "costinfer", *map(str, args)],
        capture_output=True,
        text=True,
        env={**NO_KEYS, "NO_COLOR": "1", "COLUMNS": "120", **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("model", "variable"),
    [("gpt-4o-mini", "OPENAI_API_KEY"), ("o3-mini", "OPENAI_API_KEY"), ("claude-haiku-4-5", "ANTHROPIC_API_KEY")],
)
def test_the_headline_command_needs_the_models_key(tmp_path: Path, model: str, variable: str) -> None:
    done = real_cli("run", SAMPLE, "--budget", "5", "--model", model, "--store", tmp_path / "s.duckdb",
                    "-o", tmp_path / "o.jsonl")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert variable in done.stderr and "--provider simulate" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o.jsonl").exists()
    assert not (tmp_path / "s.duckdb").exists()  # refused before the dataset was read or the store opened


def test_a_model_no_provider_is_known_for_asks_for_one(tmp_path: Path) -> None:
    config = tmp_path / "costinfer.toml"
    config.write_text('[models."my-model"]\ninput_cost_per_token = 1e-7\noutput_cost_per_token = 2e-7\n')
    done = real_cli("plan", SAMPLE, "--model", "my-model", "--config", config, "--store", tmp_path / "s.duckdb")
    assert done.returncode == 2 and "pass --provider" in done.stderr and "my-model" in done.stderr


def test_plan_needs_no_key(tmp_path: Path) -> None:
    done = real_cli("plan", SAMPLE, "--budget", "5", "--store", tmp_path / "s.duckdb", "--json")
    assert done.returncode == 0, done.stderr
    assert "rehearsal" not in done.stdout + done.stderr


def test_a_rehearsal_says_so_everywhere(tmp_path: Path) -> None:
    store, out = tmp_path / "s.duckdb", tmp_path / "o.jsonl"
    done = real_cli("run", SAMPLE, "--provider", "simulate", "--budget", "5", "--store", store, "-o", out)
    assert done.returncode == 0, done.stderr
    assert "rehearsal: nothing was paid" in done.stderr  # the plan's note, before anything is sent
    assert "(rehearsal: nothing is paid)" in done.stderr and "would have cost (rehearsal)" in done.stderr  # progress
    assert "costinfer run (rehearsal: nothing was paid)" in done.stdout  # the summary
    assert all(r["rehearsal"] is True for r in read_jsonl(out))  # every result row
    report = json.loads((tmp_path / "o.report.json").read_text())
    assert report["rehearsal"] is True
    html = (tmp_path / "o.report.html").read_text()
    assert 'data-banner="rehearsal"' in html and "rehearsal: nothing was paid." in html
    runs = real_cli("runs", "--store", store)
    assert "rehearsal" in runs.stdout
    listed = json.loads(real_cli("runs", "--store", store, "--json").stdout)
    assert listed[0]["rehearsal"] is True and listed[0]["provider"] == "simulate"


def test_analyze_keeps_rehearsals_out_of_spent_totals(cli: Cli, tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": f"r{i}", "prompt": f"hello {i}"} for i in range(10)])
    assert cli("run", data, "--provider", "simulate", "--store", store, "-o", tmp_path / "o.jsonl").exit_code == 0
    default = json.loads(cli("analyze", "--json", "--store", store).stdout)
    assert default["totals"]["cost_usd"] == "0" and default["totals"]["rehearsals_left_out"] == 1
    included = json.loads(cli("analyze", "--json", "--store", store, "--include-rehearsals").stdout)
    assert included["totals"]["calls"] == 10 and float(included["totals"]["cost_usd"]) > 0
    assert included["totals"]["rehearsal_runs"] == 1 and included["totals"]["providers"] == "simulate"
    by_provider = json.loads(
        cli("analyze", "--json", "--store", store, "--include-rehearsals", "--by", "provider").stdout
    )
    assert [g["provider"] for g in by_provider["groups"]] == ["simulate"]
    table = cli("analyze", "--store", store).stdout
    assert "1 rehearsal run(s) (nothing paid) left out" in table
    shown = cli("analyze", "--store", store, "--include-rehearsals").stdout
    assert "1 of these runs are rehearsals" in shown and "simulate" in shown and "$0.000153" in shown
