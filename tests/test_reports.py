"""Reports people read: the run report (JSON and self-contained HTML), `analyze` over the store's history, `runs`,
`report RUN_ID`, and the Prometheus metrics file. Real runs through the CLI against the simulator."""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import subprocess
import time
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Cli, subprocess_cli, write_jsonl

ROWS = [{"id": f"r{i}", "prompt": f"What is the capital of country number {i % 30}?"} for i in range(60)]
NEAR = [{"id": "n1", "prompt": "Hello   World"}, {"id": "n2", "prompt": "hello world"}]


def _run(cli: Cli, data: Path, store: Path, out: Path, *extra: object) -> dict:
    result = cli("run", data, "--store", store, "-o", out, "--json", *extra)
    assert result.exit_code in (0, 4), result.stderr
    return json.loads(result.stdout)


def _money(value: str) -> Decimal:
    return Decimal(value)


def test_the_waterfall_adds_up_exactly_to_naive_minus_actual(cli: Cli, tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    first = write_jsonl(tmp_path / "a.jsonl", [*ROWS, *NEAR])
    _run(cli, first, store, tmp_path / "a.out.jsonl")
    # a second dataset: some rows the cache answers, some duplicates, some the normalized tier answers
    new = [{"id": f"new{i}", "prompt": "A question no run asked before"} for i in range(3)]
    second = write_jsonl(tmp_path / "b.jsonl", [*ROWS[:10], *new, {"id": "x", "prompt": "HELLO world"}])
    summary = _run(cli, second, store, tmp_path / "b.out.jsonl")
    assert summary["reports"] == [str(tmp_path / "b.out.report.json"), str(tmp_path / "b.out.report.html")]
    report = json.loads((tmp_path / "b.out.report.json").read_text())
    w = report["waterfall"]
    steps = {s["lever"]: _money(s["saved_usd"]) for s in w["steps"]}
    assert set(steps) == {"cache", "duplicate", "normalized"}, steps  # no unexplained "other" step
    assert _money(w["naive_usd"]) - _money(w["actual_usd"]) == sum(steps.values())
    assert _money(w["actual_usd"]) == Decimal(summary["run_cost_usd"]) > 0  # one new question was paid for
    # the first run: fresh rows at list price are exactly what was paid; duplicates are the only lever
    first_report = json.loads((tmp_path / "a.out.report.json").read_text())
    fw = first_report["waterfall"]
    assert _money(fw["naive_usd"]) - sum(_money(s["saved_usd"]) for s in fw["steps"]) == _money(fw["actual_usd"])
    with duckdb.connect(str(store), read_only=True) as con:
        paid = con.execute("SELECT sum(cost_usd) FROM calls WHERE run_id = ?", [first_report["run_id"]]).fetchone()
    assert paid is not None and _money(fw["actual_usd"]) == paid[0]


class _Charts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, int] = {}  # chart id -> drawn shapes inside it
        self._current: str | None = None
        self.scripts = 0  # scripts with a src
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "div" and values.get("data-chart"):
            self._current = values["data-chart"]
            self.charts[self._current] = 0
        elif tag in ("rect", "path", "polyline") and self._current is not None:
            self.charts[self._current] += 1
        elif tag == "script" and values.get("src"):
            self.scripts += 1  # a script to fetch: the page would not open offline
        for name in ("src", "href"):
            link = values.get(name) or ""
            if link.startswith(("http:", "https:", "//")):
                self.external.append(link)


@pytest.mark.slow
def test_the_html_report_renders_every_chart_offline_in_chromium(cli: Cli, tmp_path: Path) -> None:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    data = write_jsonl(tmp_path / "d.jsonl", [*ROWS, *NEAR])
    _run(cli, data, tmp_path / "s.duckdb", tmp_path / "o.jsonl", "--sim-faults", "5xx=0.1", "--sim-seed", "2")
    page = tmp_path / "o.report.html"
    assert page.stat().st_size < 5_000_000
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [*flags, "--enable-logging=stderr", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    charts = _Charts()
    charts.feed(dom.stdout)
    expected = {"waterfall", "cost-by-model", "tokens-by-model", "plan-vs-outcome", "latency", "errors",
                "calls-over-time"}  # fmt: skip
    assert set(charts.charts) == expected
    assert all(n > 3 for n in charts.charts.values()), charts.charts  # each drew its axes and its data
    assert charts.scripts == 0 and charts.external == []  # nothing to fetch: it opens offline
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()], timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def _interrupted_then_resumed(tmp_path: Path, store: Path) -> None:
    """A run stopped by SIGTERM part way, then the same command again: one run, two invocations."""
    data = write_jsonl(tmp_path / "slow.jsonl", [{"prompt": f"slow question {i}"} for i in range(300)])
    args = ["run", data, "--store", store, "-o", tmp_path / "slow.out.jsonl", "--sim-latency-ms", "60", "-c", "2"]
    proc = subprocess_cli(*args)
    # stopped once it is calling (its status, read from the live copy beside the store): at any machine's speed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        runs = subprocess_cli("runs", "--json", "--store", store)
        out, _ = runs.communicate(timeout=60)
        if runs.returncode == 0 and any(r["status"] == "running" for r in json.loads(out)):
            break
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    again = subprocess_cli(*args, "--json")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert json.loads(out)["resumed"] is True


@pytest.mark.slow
def test_analyze_totals_equal_the_ledger_and_csv_parses(cli: Cli, tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    _run(cli, write_jsonl(tmp_path / "a.jsonl", ROWS), store, tmp_path / "a.out.jsonl")
    _run(cli, write_jsonl(tmp_path / "b.jsonl", [*ROWS[:20], *NEAR]), store, tmp_path / "b.out.jsonl")
    budget = write_jsonl(tmp_path / "c.jsonl", [{"prompt": f"budget row {i}"} for i in range(50)])
    stopped = _run(cli, budget, store, tmp_path / "c.out.jsonl", "--budget", "0.0005", "--on-over-budget", "partial")
    assert stopped["stop_reason"] == "budget" and stopped["not_run"] > 0
    _interrupted_then_resumed(tmp_path, store)
    with duckdb.connect(str(store), read_only=True) as con:
        ledger_cost, ledger_calls = con.execute("SELECT sum(cost_usd), count(*) FROM calls").fetchone()  # type: ignore[misc]
        runs = con.execute("SELECT count(*), sum(rows) FROM runs").fetchone()
    assert runs is not None
    result = cli("analyze", "--include-rehearsals", "--since", "30d", "--by", "day", "--json", "--store", store)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    totals = data["totals"]
    assert Decimal(totals["cost_usd"]) == ledger_cost and totals["calls"] == ledger_calls
    assert totals["runs"] == runs[0] == 4 and totals["rows"] == runs[1]
    assert Decimal(totals["saved_usd"]) > 0 and totals["cache_hit_rate"] > 0
    assert len(data["groups"]) == 1 and Decimal(data["groups"][0]["cost_usd"]) == ledger_cost
    by_run = json.loads(cli("analyze", "--include-rehearsals", "--by", "run", "--json", "--store", store).stdout)
    assert len(by_run["groups"]) == 4
    assert sum(Decimal(g["cost_usd"]) for g in by_run["groups"]) == ledger_cost
    text = cli("analyze", "--include-rehearsals", "--by", "model", "--csv", "--store", store).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["model"] for r in rows] == ["gpt-4o-mini"] and Decimal(rows[0]["cost_usd"]) == ledger_cost
    table = cli("analyze", "--include-rehearsals", "--store", store, env={"COLUMNS": "80"})
    assert table.exit_code == 0 and max(len(line) for line in table.stdout.splitlines()) <= 80
    listed = json.loads(cli("runs", "--json", "--store", store).stdout)
    assert len(listed) == 4 and {r["stop_reason"] for r in listed} >= {"budget"}


def test_report_rebuilds_from_the_store(cli: Cli, tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    summary = _run(cli, write_jsonl(tmp_path / "d.jsonl", ROWS), store, tmp_path / "o.jsonl", "--no-report")
    assert summary["reports"] == [] and not (tmp_path / "o.report.html").exists()
    result = cli("report", summary["run_id"][:10], "--store", store)
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "o.report.json").read_text())
    assert report["run_id"] == summary["run_id"] and report["rows"] == 60
    assert Decimal(report["cost_usd"]) == Decimal(summary["run_cost_usd"])
    assert Decimal(report["plan_vs_outcome"]["expected_cost_usd"]) > 0
    missing = cli("report", "nope", "--store", store)
    assert missing.exit_code == 2 and "no run 'nope'" in missing.stderr


def test_the_metrics_file_parses_and_keeps_the_last_success(cli: Cli, tmp_path: Path) -> None:
    store, metrics = tmp_path / "s.duckdb", tmp_path / "costinfer.prom"
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    _run(cli, data, store, tmp_path / "o.jsonl", "--metrics-file", metrics, "--budget", "1")

    def samples() -> dict[tuple[str, str], float]:
        out = {}
        for family in text_string_to_metric_families(metrics.read_text()):
            for s in family.samples:
                out[(s.name, s.labels.get("source", ""))] = s.value
        return out

    first = samples()
    assert first[("costinfer_run_rows", "fresh")] == 30 and first[("costinfer_run_rows", "duplicates")] == 30
    assert first[("costinfer_run_calls", "")] == 30 and first[("costinfer_run_exit_code", "")] == 0
    assert first[("costinfer_run_budget_left_usd", "")] == pytest.approx(1 - first[("costinfer_run_cost_usd", "")])
    success = first[("costinfer_last_success_timestamp_seconds", "")]
    # a failing run of the same dataset keeps the time of the last success
    bad = cli("run", data, "--store", store, "-o", tmp_path / "o2.jsonl", "--metrics-file", metrics, "--quiet",
              "--model", "gpt-4o", "--sim-faults", "5xx=1", "--max-attempts", "1")  # fmt: skip
    assert bad.exit_code == 5, bad.stderr
    second = samples()
    assert second[("costinfer_run_exit_code", "")] == 5
    assert second[("costinfer_last_success_timestamp_seconds", "")] == success


def test_readme_shows_what_it_cost() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "## What did it cost?" in readme and "costinfer analyze" in readme
    assert readme.index("## Two commands") < readme.index("## What did it cost?")


def test_tags_attribute_cost_in_the_ledger_analyze_and_the_report(cli: Cli, tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    rows = [{"prompt": f"search question {i}", "metadata": {"team": "search", "project": "faq"}} for i in range(6)] + [
        {"prompt": f"billing question {i}", "metadata": {"team": "billing"}} for i in range(4)
    ]
    rows.append({"prompt": "search question 0", "metadata": {"team": "billing"}})  # a duplicate: search paid for it
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    _run(cli, data, store, tmp_path / "o.jsonl", "--tag-by", "team,project", "--tag", "env=ci")
    with duckdb.connect(str(store), read_only=True) as con:
        ledger = dict(con.execute("SELECT tag, sum(cost_usd) FROM calls GROUP BY 1").fetchall())
        calls = dict(con.execute("SELECT tag, count(*) FROM calls GROUP BY 1").fetchall())
    assert calls == {"env=ci,project=faq,team=search": 6, "env=ci,project=-,team=billing": 4}
    result = cli("analyze", "--include-rehearsals", "--by", "tag", "--json", "--store", store)
    assert result.exit_code == 0, result.stderr
    groups = {g["tag"]: g for g in json.loads(result.stdout)["groups"]}
    assert {t: Decimal(g["cost_usd"]) for t, g in groups.items()} == ledger
    assert groups["env=ci,project=-,team=billing"]["rows"] == 5  # its duplicate row is attributed to it, at no cost
    report = json.loads((tmp_path / "o.report.json").read_text())
    assert {t["tag"] for t in report["tags"]} == set(ledger)
    assert "cost-by-tag" in (tmp_path / "o.report.html").read_text()
    bad = cli("run", data, "--store", store, "--tag", "nokey", "--quiet")
    assert bad.exit_code == 2 and "--tag must be KEY=VALUE" in bad.stderr
