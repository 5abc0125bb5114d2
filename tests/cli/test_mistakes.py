"""A corpus of user mistakes through the real CLI (a subprocess each): every one is a single line with its own
documented exit code and the fix named; none is an "internal error" (exit 1, which the docs call a bug) and none
shows a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from costinfer.errors import ExitCode
from costinfer.store import Store
from tests.conftest import Cli, subprocess_cli, write_jsonl


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def _cases(tmp: Path, busy_port: int) -> list[tuple[str, list[str], int, str]]:
    """(name, argv, expected exit code, a phrase the one line must hold)."""
    data = write_jsonl(tmp / "data.jsonl", [{"prompt": "hello"}, {"prompt": "world"}])
    folder = tmp / "a-folder.jsonl"
    folder.mkdir()
    not_duckdb = tmp / "results.jsonl"
    not_duckdb.write_text('{"id": 1}\n')
    store = tmp / "store.duckdb"
    run = ["run", "--store", str(store), "--quiet"]
    report_named = tmp / "rr.report.json"  # a dataset whose name is its report's: writing the report would destroy it
    report_named.write_text(data.read_text())
    made = tmp / "made.duckdb"  # a store with one run in it: an empty run id would have matched that run
    with Store.open(made) as st:
        st.create_run("0123456789abcdef", "fp", {"input_path": "x.jsonl"})
    bad_prices = tmp / "prices.json"
    bad_prices.write_text('{"gpt-4o-mini": {"input_cost_per_token": "abc", "output_cost_per_token": 1e-6}}')
    return [
        ("input is a folder", [*run, str(folder)], ExitCode.BAD_INPUT, "is a directory"),
        ("input does not exist", [*run, str(tmp / "nope.jsonl")], ExitCode.BAD_INPUT, "no such file"),
        ("budget too large", [*run, str(data), "--budget", "1e27"], ExitCode.USAGE, "--budget must be at most"),
        ("budget not a number", [*run, str(data), "--budget", "lots"], ExitCode.USAGE, "--budget must be a number"),
        ("template unclosed", [*run, str(data), "--template", "{prompt"], ExitCode.USAGE, "--template"),
        ("template without a column", [*run, str(data), "--template", "hi"], ExitCode.USAGE, "names no column"),
        ("output is the input", [*run, str(data), "-o", str(data)], ExitCode.USAGE, "same file as the input"),
        ("rejects is the input", [*run, str(data), "--rejects", str(data)], ExitCode.USAGE, "same file"),
        (
            "store is a JSON file",
            ["run", str(data), "--store", str(not_duckdb), "--quiet"],
            ExitCode.USAGE,
            "is not a DuckDB database",
        ),
        ("store is a folder", ["run", str(data), "--store", str(tmp), "--quiet"], ExitCode.USAGE, "is a folder"),
        ("base url not a url", [*run, str(data), "--base-url", "not a url"], ExitCode.USAGE, "is not a URL"),
        ("base url bad port", [*run, str(data), "--base-url", "http://h:port/v1"], ExitCode.USAGE, "is not a URL"),
        ("misspelled model", [*run, str(data), "--model", "gpt-4o-mni"], ExitCode.USAGE, "did you mean 'gpt-4o-mini'"),
        ("threshold out of range", [*run, str(data), "--semantic-threshold", "5"], ExitCode.USAGE, "(0, 1]"),
        ("plan threshold", ["plan", str(data), "--semantic-threshold", "5"], ExitCode.USAGE, "(0, 1]"),
        ("zero timeout", [*run, str(data), "--timeout", "0"], ExitCode.USAGE, "--timeout"),
        ("nothing on stdin", [*run, "-"], ExitCode.BAD_INPUT, "no rows arrived"),
        ("cache clear, no terminal", ["cache", "clear", "--store", str(store)], ExitCode.USAGE, "pass --yes"),
        (
            "cache export into a missing folder",
            ["cache", "export", str(tmp / "no" / "x.jsonl"), "--store", str(store)],
            ExitCode.USAGE,
            "does not exist",
        ),
        (
            "cache export to an unknown format",
            ["cache", "export", str(tmp / "x.txt"), "--store", str(store)],
            ExitCode.USAGE,
            ".jsonl, .csv or .parquet",
        ),
        (
            "cache stats on a typo",
            ["cache", "stats", "--store", str(tmp / "typo.duckdb")],
            ExitCode.USAGE,
            "no store there",
        ),
        (
            "simulate serve on a busy port",
            ["simulate", "serve", "--port", str(busy_port)],
            ExitCode.USAGE,
            "cannot listen on",
        ),
        (
            "simulate serve logging into a missing folder",
            ["simulate", "serve", "--port", "0", "--log", str(tmp / "no" / "log.jsonl")],
            ExitCode.USAGE,
            "does not exist",
        ),
        ("unknown command", ["frobnicate"], ExitCode.USAGE, "No such command"),
        # the second probe (issue 22)
        ("metrics file is the input", [*run, str(data), "--metrics-file", str(data)], ExitCode.USAGE, "same file"),
        ("metrics file is the store", [*run, str(data), "--metrics-file", str(store)], ExitCode.USAGE, "same file"),
        (
            "metrics file in no folder",
            [*run, str(data), "--metrics-file", str(tmp / "no" / "m.prom")],
            ExitCode.USAGE,
            "does not exist",
        ),
        ("metrics file is a folder", [*run, str(data), "--metrics-file", str(tmp)], ExitCode.USAGE, "is a folder"),
        (
            "the report would be the input",
            [*run, str(report_named), "-o", str(tmp / "rr.jsonl")],
            ExitCode.USAGE,
            "same file as the input",
        ),
        (
            "template attribute",
            [*run, str(data), "--template", "T: {prompt.upper}"],
            ExitCode.USAGE,
            "not a column name",
        ),
        ("template index", [*run, str(data), "--template", "T: {prompt[0]}"], ExitCode.USAGE, "not a column name"),
        (
            "password in base url",
            [*run, str(data), "--base-url", "http://user:PASS@127.0.0.1:9/v1"],
            ExitCode.USAGE,
            "carries credentials",
        ),
        (
            "key in base url",
            [*run, str(data), "--base-url", "http://127.0.0.1:9/v1?api-key=SECRET"],
            ExitCode.USAGE,
            "carries a credential",
        ),
        (
            "since too far back",
            ["analyze", "--since", "99999999d", "--store", str(store)],
            ExitCode.USAGE,
            "no store there",
        ),
        ("calibrate a folder", ["cache", "calibrate", str(tmp)], ExitCode.BAD_INPUT, "is a folder"),
        (
            "a price that is not a number",
            [*run, str(data), "--prices", str(bad_prices)],
            ExitCode.USAGE,
            "must be a number of dollars",
        ),
        (
            "prices update from a bad file",
            ["prices", "update", "--from", str(bad_prices)],
            ExitCode.USAGE,
            "must be a number of dollars",
        ),
        (
            "runs with a negative limit",
            ["runs", "--limit", "-1", "--store", str(store)],
            ExitCode.USAGE,
            "greater than or equal to 1",
        ),
        (
            "simulator on port 99999",
            ["simulate", "serve", "--port", "99999"],
            ExitCode.USAGE,
            "less than or equal to 65535",
        ),
        ("timeout nan", [*run, str(data), "--timeout", "nan"], ExitCode.USAGE, "--timeout must be a finite number"),
        ("deadline nan", [*run, str(data), "--deadline", "nan"], ExitCode.USAGE, "--deadline must be a finite"),
        ("rpm nan", [*run, str(data), "--rpm", "nan"], ExitCode.USAGE, "--rpm must be a finite number"),
        ("unknown format", [*run, str(data), "--format", "xml"], ExitCode.USAGE, "--format must be one of"),
        (
            "batch output as parquet",
            [*run, str(data), "--output-format", "openai-batch", "-o", str(tmp / "x.parquet")],
            ExitCode.USAGE,
            "writes JSONL",
        ),
        ("report of an empty run id", ["report", "", "--store", str(made)], ExitCode.USAGE, "4 characters"),
        ("cancel an empty run id", ["batches", "cancel", "", "--store", str(made)], ExitCode.USAGE, "4 characters"),
        ("wait for an empty run id", ["batches", "wait", "", "--store", str(made)], ExitCode.USAGE, "4 characters"),
    ]


@pytest.mark.slow
def test_no_user_mistake_is_an_internal_error(tmp_path: Path) -> None:
    sock, busy = _busy_port()
    try:
        cases = _cases(tmp_path, busy)
        procs = []
        for _, argv, _, _ in cases:
            proc = subprocess_cli(*argv, stdin=subprocess.DEVNULL)  # no terminal, as in CI and cron
            procs.append(proc)
        failures = []
        for (name, _, code, phrase), proc in zip(cases, procs, strict=True):
            out, err = proc.communicate(timeout=120)
            text = out + err
            problems = []
            if proc.returncode != code:
                problems.append(f"exit {proc.returncode}, expected {int(code)}")
            if "internal error" in text or "Traceback" in text:
                problems.append("internal error or traceback")
            if phrase not in text:
                problems.append(f"no {phrase!r}")
            if problems:
                failures.append(f"{name}: {'; '.join(problems)}\n    {text.strip()[:400]}")
        assert not failures, "\n".join(failures)
    finally:
        sock.close()
    assert not (tmp_path / "typo.duckdb").exists(), "a read-only command created a store"


def test_cache_export_writes_the_format_its_name_says(cli: Cli, tmp_path: Path, sim: object) -> None:
    import csv

    import pyarrow.parquet as pq

    store = tmp_path / "s.duckdb"
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"question {i}"} for i in range(5)])
    assert cli("run", data, "--store", store, "-o", tmp_path / "o.jsonl", "--quiet").exit_code == 0
    for name in ("x.csv", "x.jsonl", "x.parquet"):
        result = cli("cache", "export", tmp_path / name, "--store", store)
        assert result.exit_code == 0, result.output
    with (tmp_path / "x.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and {"key", "request", "response", "cost_usd"} <= set(rows[0])
    assert pq.read_table(tmp_path / "x.parquet").num_rows == 5
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 5
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


def test_version_and_help_examples(cli: Cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and result.output.startswith("costinfer ")
    for command in ("run", "plan"):
        text = cli(command, "--help").output
        assert "Examples:" in text and f"costinfer {command} " in text
    top = subprocess.run(
        [sys.executable, "-m", "costinfer", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "80", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    ).stdout
    commands = top.split("Commands")[1]  # a panel: the lines wrap inside its box
    assert "..." not in commands, top  # no command's line is cut off
    flat = " ".join(commands.replace("│", " ").split())
    assert "without touching the network" in flat and "model_prices_and_context_window.json format" in flat
