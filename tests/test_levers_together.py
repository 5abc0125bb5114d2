"""Issue 21's findings, each through the CLI: the levers together leave no row silently unanswered, the budget spends
what it has, every lever's account agrees across summary, report and analyze, and a check that cannot run stops the
run before it escalates on its word."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costinfer.accounting.summary import RunSummary
from costinfer.simulator import Simulator
from tests.conftest import SHARED_DATA, Cli, read_jsonl, sim_log, write_jsonl

CHAIN = [
    {"id": "a", "prompt": "Tell me about the team seats. Thanks!"},
    {"id": "b", "prompt": "Tell me about the team seats."},
    {"id": "c", "prompt": "TELL ME ABOUT THE TEAM SEATS."},
]


def run_json(cli: Cli, data: Path, tmp: Path, *extra: Any, name: str = "out") -> tuple[int, dict[str, Any], str]:
    result = cli("run", data, "--store", tmp / "s.duckdb", "-o", tmp / f"{name}.jsonl", "--json", *extra)
    summary = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, summary, result.stderr


def test_a_normalized_copy_of_a_semantic_borrower_gets_the_answer(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chain.jsonl", CHAIN)
    code, summary, _ = run_json(cli, data, tmp_path, "--base-url", sim.url, "--semantic")
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert code == 0 and summary["calls"] == 1 and summary["not_run"] == 0
    # the row that paid, not another borrower
    assert rows["b"]["reused_from"] == "a" and rows["c"]["reused_from"] == "a"
    assert rows["c"]["source"] == "semantic" and rows["c"]["response"] == rows["a"]["response"]
    code, again, _ = run_json(cli, data, tmp_path, "--base-url", sim.url, "--semantic", name="again")
    assert code == 0 and again["calls"] == 0 and again["not_run"] == 0
    assert len(sim_log(sim)) == 1


def test_any_row_without_an_answer_makes_the_exit_code_non_zero() -> None:
    base: dict[str, Any] = {
        "run_id": "r", "resumed": False, "rows": 3, "rejects": 0, "distinct": 3, "calls": 1, "fresh": 1,
        "duplicates": 0, "cache_hits": 0, "normalized": 0, "semantic": 1, "fallback": 0, "routed": 0, "escalated": 0,
        "embeddings_computed": 0, "failed": 0, "not_run": 1, "saved_usd": {}, "input_tokens": 0, "output_tokens": 0,
        "reasoning_tokens": 0, "cost_usd": Decimal(0), "run_cost_usd": Decimal(0), "budget_usd": None,
        "stop_reason": None, "output": "o.jsonl", "rejects_file": None, "elapsed_s": 0.0, "calls_elapsed_s": 0.0,
    }  # fmt: skip
    assert RunSummary(**base).exit_code == 5  # not run for no stated reason: never a silent 0
    assert RunSummary(**{**base, "stop_reason": "interrupted"}).exit_code == 130
    assert RunSummary(**{**base, "stop_reason": "budget"}).exit_code == 4
    assert RunSummary(**{**base, "stop_reason": "submitted"}).exit_code == 0  # --no-wait: collected by a rerun
    assert RunSummary(**{**base, "not_run": 0}).exit_code == 0


def test_the_budget_waits_for_calls_in_flight_instead_of_stopping(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": f"Write story {i} about topic {i * 7}", "max_tokens": 800} for i in range(200)]
    data = write_jsonl(tmp_path / "big_mt.jsonl", rows)
    ran = {}
    for c in ("16", "1"):
        _, summary, _ = run_json(
            cli, data, tmp_path, "--base-url", sim.url, "--budget", "0.005", "--on-over-budget", "partial", "-c", c,
            "--store", tmp_path / f"s{c}.duckdb", name=f"c{c}",
        )  # fmt: skip
        assert Decimal(summary["run_cost_usd"]) <= Decimal("0.005")
        ran[c] = summary["calls"]
    assert ran["1"] > 100  # a worst case is ~$0.00048: a call at a time, the money runs far
    assert abs(ran["16"] - ran["1"]) <= 16, ran


def test_a_small_request_still_runs_when_a_large_one_does_not_fit(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    rows = [{"id": "big", "prompt": "Write a novel", "max_tokens": 16000}]
    rows += [{"id": f"s{i}", "prompt": f"Say hi {i}", "max_tokens": 8} for i in range(5)]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    code, summary, err = run_json(
        cli, data, tmp_path, "--base-url", sim.url, "--budget", "0.002", "--on-over-budget", "partial", "-c", "1"
    )
    results = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert code == 4 and summary["not_run"] == 1 and summary["calls"] == 5
    assert results["big"]["error"] == "not_run: budget" and all(results[f"s{i}"]["response"] for i in range(5))
    assert "budget: 1 rows were not run" in err


def test_route_budget_has_one_account_in_summary_report_and_analyze(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": f"Question number {i}: what is {i} plus {i}?"} for i in range(30)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    store = tmp_path / "s.duckdb"
    code, summary, _ = run_json(
        cli, data, tmp_path, "--base-url", sim.url, "--models", "gpt-4o-mini,gpt-4o", "--route", "budget",
        "--budget", "0.02",
    )  # fmt: skip
    assert code == 0 and summary["routed"] > 0
    saved = Decimal(summary["saved_usd"]["routing"])
    assert saved > 0
    report_path = tmp_path / "out.report.json"
    for rebuilt in (False, True):
        if rebuilt:  # `costinfer report` prices the run from the store alone
            report_path.unlink()
            assert cli("report", summary["run_id"][:12], "--store", store).exit_code == 0
        report = json.loads(report_path.read_text())
        steps = {s["lever"]: Decimal(s["saved_usd"]) for s in report["waterfall"]["steps"]}
        assert steps["routing"] == saved and Decimal(report["waterfall"]["naive_usd"]) > 0
        analyzed = json.loads(cli("analyze", "--json", "--store", store, "--include-rehearsals").stdout)
        assert Decimal(analyzed["totals"]["saved_usd"]) == saved


def _cascade(cli: Cli, sim: Simulator, tmp: Path, cmd: str) -> tuple[int, str]:
    rows = [{"id": f"r{i}", "prompt": f"Name a colour, number {i}", "max_tokens": 64} for i in range(40)]
    data = write_jsonl(tmp / "d.jsonl", rows)
    code, _, err = run_json(
        cli, data, tmp, "--base-url", sim.url, "--models", "gpt-4o-mini,gpt-4o", "--route", "cascade",
        "--accept-cmd", cmd,
    )  # fmt: skip
    return code, err


def test_a_missing_check_program_is_found_before_any_call(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    code, err = _cascade(cli, sim, tmp_path, str(tmp_path / "missing-check"))
    assert code == 2 and "missing-check: command not found" in err and "nothing was read or sent" in err
    assert sim_log(sim) == []


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("import sys, json\njson.load(sys.stdin)\nraise KeyError('label')\n", "failed to run"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "killed by signal 9"),
        ("import sys\nsys.exit(3)\n", "exit 3"),
        ("import sys\nsys.exit(1)\n", "rejected all of the first"),
    ],
    ids=["traceback", "crash", "odd-exit", "rejects-everything"],
)
def test_a_check_that_cannot_decide_stops_before_escalating(
    cli: Cli, sim: Simulator, tmp_path: Path, script: str, why: str
) -> None:
    check = tmp_path / "check.py"
    check.write_text(script)
    code, err = _cascade(cli, sim, tmp_path, f"python3 {check}")
    assert code == 2 and why in err, err
    models = [e["model"] for e in sim_log(sim)]
    assert models and "gpt-4o" not in models  # the cheap calls were made; nothing was escalated on the check's word


def test_a_check_that_accepts_some_and_rejects_others_escalates_them(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    check = tmp_path / "check.py"
    check.write_text(
        "import sys, json\nrow = json.load(sys.stdin)\n"
        "sys.exit(0 if int(row['id'][1:]) % 4 else 1)\n"  # every fourth row fails the check
    )
    code, err = _cascade(cli, sim, tmp_path, f"python3 {check}")
    assert code == 0, err
    results = read_jsonl(tmp_path / "out.jsonl")
    assert sum(r["source"] == "escalated" for r in results) == 10
    assert all(r["response"] for r in results)


@pytest.mark.skipif(not (SHARED_DATA / "banking77").exists(), reason="needs ../shared/data/banking77")
def test_utterances_with_case_spacing_and_suffix_variants_are_all_answered(
    cli: Cli, sim: Simulator, tmp_path: Path
) -> None:
    """The hidden class of issue 21: short utterances (CLINC-like) with case, spacing and suffix variants."""
    with (SHARED_DATA / "banking77" / "test.csv").open(newline="", encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)][:100]
    variants = [
        lambda t: t,
        lambda t: t.upper(),
        lambda t: t.lower(),
        lambda t: "  " + t.replace(" ", "  "),
        lambda t: t.rstrip("?.!") + ", thanks!",
        lambda t: t.rstrip("?.!") + "? Thank you.",
        lambda t: (t.rstrip("?.!") + ". Thanks!").upper(),
    ]
    rows = [{"id": f"u{i}-{j}", "prompt": v(t)} for i, t in enumerate(texts) for j, v in enumerate(variants)]
    data = write_jsonl(tmp_path / "clinc-like.jsonl", rows)
    code, summary, err = run_json(cli, data, tmp_path, "--base-url", sim.url, "--semantic")
    results = read_jsonl(tmp_path / "out.jsonl")
    assert code == 0, err
    assert summary["not_run"] == 0 and summary["failed"] == 0 and all(r["response"] for r in results)
    by_id = {r["id"]: r for r in results}
    for r in results:
        if r["reused_from"] is not None:
            assert by_id[r["reused_from"]]["response"] == r["response"]
