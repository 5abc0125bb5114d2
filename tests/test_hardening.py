"""Issue 9's bugs, each through the real CLI: nothing lost or silently not kept, no request other than the one asked
for, reasoning models as OpenAI treats them, a dead server, progress in a pipe, stdin and compressed input."""

from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from costinfer.errors import ExitCode
from costinfer.simulator import Simulator
from tests.conftest import SAMPLE, Cli, read_jsonl, sim_log, subprocess_cli, write_jsonl

SERVE = [sys.executable, "-m", "costinfer", "simulate", "serve", "--port", "0"]
ROWS = [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(20)]


def run(cli: Cli, data: Path | str, tmp: Path, *extra: object, env: dict[str, str] | None = None) -> object:
    return cli("run", data, "--store", tmp / "store.duckdb", "--quiet", *extra, env=env)


# --- nothing lost ---------------------------------------------------------------------------------------------------


def test_output_onto_the_input_is_refused_and_the_input_kept(cli: Cli, tmp_path: Path, sim: Simulator) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    before = data.read_bytes()
    result = run(cli, data, tmp_path, "-o", data, "--base-url", sim.url)
    assert result.exit_code == ExitCode.USAGE
    assert "same file as the input" in result.stderr and "Nothing was read or sent" in result.stderr
    assert data.read_bytes() == before
    assert sim_log(sim) == []
    # the same file by another name (a symlink) is refused too
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    assert run(cli, data, tmp_path, "-o", link).exit_code == ExitCode.USAGE
    assert data.read_bytes() == before


def test_a_store_path_that_is_not_duckdb_is_refused_before_anything_is_sent(
    cli: Cli, tmp_path: Path, sim: Simulator
) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    other = tmp_path / "results.jsonl"
    other.write_text('{"id": "x", "response": "kept"}\n')
    result = cli("run", data, "--store", other, "--quiet", "--base-url", sim.url, "-o", tmp_path / "o.jsonl")
    assert result.exit_code == ExitCode.USAGE and "is not a DuckDB database" in result.stderr
    assert other.read_text() == '{"id": "x", "response": "kept"}\n'
    assert sim_log(sim) == []
    # a new path, or an existing store, is fine: the rerun is answered from it
    store = tmp_path / "new.duckdb"
    for _ in range(2):
        assert cli("run", data, "--store", store, "--quiet", "-o", tmp_path / "o.jsonl").exit_code == 0
    with duckdb.connect(str(store), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM calls").fetchone() == (20,)


def test_stale_outputs_are_replaced_or_removed(cli: Cli, tmp_path: Path) -> None:
    out, rejects = tmp_path / "out.jsonl", tmp_path / "out.rejects.jsonl"
    bad = write_jsonl(tmp_path / "bad.jsonl", [*ROWS, {"id": "b", "prompt": 5}])
    # 1. a run that fails on a bad row leaves its rejects and no results file from an earlier run
    out.write_text('{"id": "from an earlier run"}\n')
    assert run(cli, bad, tmp_path, "-o", out).exit_code == ExitCode.BAD_INPUT
    assert not out.exists() and len(read_jsonl(rejects)) == 1
    # 2. a clean run beside a stale rejects file removes it
    good = write_jsonl(tmp_path / "good.jsonl", ROWS)
    assert run(cli, good, tmp_path, "-o", out).exit_code == 0
    assert not rejects.exists() and len(read_jsonl(out)) == 20
    # 3. a run stopped by its plan (over budget) leaves no earlier results behind either
    out.write_text('{"id": "from an earlier run"}\n')
    other = write_jsonl(tmp_path / "other.jsonl", [{"prompt": f"other {i}"} for i in range(5)])
    assert run(cli, other, tmp_path, "-o", out, "--budget", "0.0000001").exit_code == ExitCode.BUDGET
    assert not out.exists()
    assert not list(tmp_path.glob(".*.tmp"))


@contextmanager
def _small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A folder on a tmpfs of ``size``: a disk that fills up, for real."""
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"a full disk is rehearsed on a small tmpfs, which needs root to mount: {proc.stderr.decode()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextmanager
def _simulator(log: Path, *extra: str) -> Iterator[str]:
    """``costinfer simulate serve`` in a process of its own (it must outlive the runs); yields its URL."""
    with subprocess.Popen([*SERVE, "--log", str(log), *extra], stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            yield server.stdout.readline().strip()
        finally:
            server.terminate()


OPENAI_ENV = {"OPENAI_API_KEY": "sk-test"}


@pytest.mark.slow
def test_a_full_disk_for_the_results_loses_no_answer(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": f"a long enough question {i} " * 20} for i in range(300)])
    store, log = tmp_path / "s.duckdb", tmp_path / "sim.jsonl"
    with _small_disk(tmp_path / "full", "64k") as full, _simulator(log) as url:
        (full / "filler").write_bytes(b"x" * 60_000)
        args = ["run", data, "--store", store, "--base-url", url, "--provider", "openai", "--quiet"]
        proc = subprocess_cli(*args, "-o", full / "out.jsonl", env=OPENAI_ENV)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == ExitCode.WRITE_FAILED, err
        assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
        assert "Traceback" not in err and "internal error" not in err
        assert "No space left on device" in err and str(store) in err and "without paying again" in err
        assert not [p for p in full.iterdir() if p.name != "filler"], "a partial results file was left"
        paid = len(read_jsonl(log))
        assert paid == 300
        # the rerun writes the results elsewhere without a single call
        proc = subprocess_cli(*args, "-o", tmp_path / "out.jsonl", env=OPENAI_ENV)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert len(read_jsonl(log)) == paid
        assert len(read_jsonl(tmp_path / "out.jsonl")) == 300


@pytest.mark.slow
def test_a_full_disk_for_the_store_stops_the_run_and_the_rerun_resumes(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": f"question {i} " + "pad " * 200} for i in range(400)])
    log = tmp_path / "sim.jsonl"
    with _small_disk(tmp_path / "disk", "24m") as disk, _simulator(log, "--latency-ms", "20") as url:
        store = disk / "s.duckdb"
        args = ["run", data, "--store", store, "--base-url", url, "--provider", "openai", "--quiet"]
        args += ["-c", "4", "-o", tmp_path / "out.jsonl"]
        proc = subprocess_cli(*args, env=OPENAI_ENV)
        deadline = time.monotonic() + 60
        while (not log.exists() or len(log.read_text().splitlines()) < 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        filler = disk / "filler"
        with filler.open("wb") as fh:  # fill the disk while answers are being committed
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            pytest.fail(f"the run finished before the disk filled; make the dataset larger: {err}")
        assert proc.returncode == ExitCode.WRITE_FAILED, err
        assert "Traceback" not in err and "internal error" not in err
        assert f"cannot write to the store {store}" in err and "not paid again" in err
        first_err = err
        filler.unlink()
        proc = subprocess_cli(*args, env=OPENAI_ENV)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        answered = [json.loads(line) for line in log.read_text().splitlines()]
        digests = [a["digest"] for a in answered if a["status"] == 200]
        assert len(set(digests)) == 400
        # paid twice: only the answers the message counted as paid and not saved
        found = re.search(r"\((\d+) paid answers could not be saved", first_err)
        assert found is not None, first_err
        assert len(digests) - 400 == int(found.group(1))
        assert len(read_jsonl(tmp_path / "out.jsonl")) == 400


# --- the request sent is the one asked for ------------------------------------------------------------------------


def test_max_tokens_zero_is_a_bad_row_never_resized(cli: Cli, tmp_path: Path, sim: Simulator) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hi"}, {"prompt": "there", "max_tokens": 0}])
    result = run(cli, data, tmp_path, "--base-url", sim.url, "-o", tmp_path / "o.jsonl")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert f"{data}:line 2: field 'max_tokens': must be at least 1, got 0" in result.stderr
    assert sim_log(sim) == []


def test_unknown_fields_warn_once_with_a_suggestion_and_strict_refuses(
    cli: Cli, tmp_path: Path, sim: Simulator
) -> None:
    rows = [
        {"prompt": "a", "max_token": 5},
        {"prompt": "b", "temprature": 0.2, "metadata": {"k": "kept"}},
        {"prompt": "c", "max_token": 7},
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "o.jsonl"
    result = cli("run", data, "--store", tmp_path / "s.duckdb", "-o", out, "--base-url", sim.url)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "does not know" in line]
    assert len(warnings) == 1, result.stderr  # once per run, however many rows carry them
    assert "'max_token' (line 1) (did you mean 'max_tokens'?)" in warnings[0]
    assert "'temprature' (line 2) (did you mean 'temperature'?)" in warnings[0]
    assert [r["metadata"] for r in read_jsonl(out)] == [None, {"k": "kept"}, None]
    strict = cli("run", data, "--store", tmp_path / "s2.duckdb", "-o", out, "--strict-fields", "--quiet")
    assert strict.exit_code == ExitCode.BAD_INPUT
    assert "line 1: field 'max_token': unknown field (did you mean 'max_tokens'?)" in strict.stderr
    plan = cli("plan", data, "--store", tmp_path / "s3.duckdb", "--strict-fields")
    assert plan.exit_code == ExitCode.BAD_INPUT


def test_a_misspelled_model_in_a_row_names_the_nearest(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "model": "gpt-4o-mni"}])
    result = run(cli, data, tmp_path, "-o", tmp_path / "o.jsonl")
    assert result.exit_code == ExitCode.BAD_INPUT and "did you mean 'gpt-4o-mini'?" in result.stderr


# --- reasoning models -------------------------------------------------------------------------------------------


def test_a_reasoning_model_gets_the_request_openai_accepts_and_its_reasoning_is_billed(
    cli: Cli, tmp_path: Path, sim: Simulator
) -> None:
    rows = [{"id": f"g{i}", "prompt": f"think about {i}", "max_tokens": 200} for i in range(30)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "o.jsonl"
    env = {"OPENAI_API_KEY": "sk-test"}
    args = ["--provider", "openai", "--base-url", sim.url, "--model", "gpt-5-mini", "-o", out, "--json"]
    result = cli("run", data, "--store", tmp_path / "s.duckdb", "--budget", "1", *args, env=env)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["calls"] == 30 and summary["failed"] == 0
    results = read_jsonl(out)
    assert all(r["error"] is None and r["reasoning_tokens"] > 0 for r in results)
    assert all(r["output_tokens"] > r["reasoning_tokens"] for r in results if r["finish_reason"] == "stop")
    with duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True) as con:
        billed_in, billed_out, reasoning, cost = con.execute(
            "SELECT sum(input_tokens), sum(output_tokens), sum(reasoning_tokens), sum(cost_usd) FROM calls"
        ).fetchone()
    # gpt-5-mini: $0.25 in, $2.00 out per million; reasoning tokens are output tokens
    assert cost == Decimal(billed_in) * Decimal("0.00000025") + Decimal(billed_out) * Decimal("0.000002")
    assert reasoning == summary["reasoning_tokens"] > 0 and billed_out == summary["output_tokens"]
    # what the simulator saw: max_completion_tokens, never max_tokens (which OpenAI refuses for these models)
    assert all(entry["status"] == 200 for entry in sim_log(sim))


def test_a_reasoning_model_row_with_a_temperature_is_a_clear_reject(cli: Cli, tmp_path: Path, sim: Simulator) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}, {"prompt": "b", "temperature": 0.2}])
    result = run(cli, data, tmp_path, "--model", "o4-mini", "--base-url", sim.url, "-o", tmp_path / "o.jsonl")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "line 2: field 'temperature': o4-mini is a reasoning model" in result.stderr
    assert sim_log(sim) == []


def test_the_simulator_refuses_what_openai_refuses_for_reasoning_models(sim: Simulator) -> None:
    import httpx

    def post(body: dict[str, object]) -> httpx.Response:
        return httpx.post(f"{sim.url}/chat/completions", json=body, timeout=10)

    msgs = [{"role": "user", "content": "hi"}]
    refused = post({"model": "gpt-5-mini", "messages": msgs, "max_tokens": 10})
    assert refused.status_code == 400
    assert "Use 'max_completion_tokens' instead" in refused.json()["error"]["message"]
    hot = post({"model": "gpt-5-mini", "messages": msgs, "max_completion_tokens": 50, "temperature": 0.3})
    assert hot.status_code == 400 and "Only the default (1) value is supported" in hot.json()["error"]["message"]
    ok = post({"model": "gpt-5-mini", "messages": msgs, "max_completion_tokens": 500}).json()
    assert ok["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    assert post({"model": "gpt-4o-mini", "messages": msgs, "max_tokens": 10}).status_code == 200


# --- a dead or wrong server -------------------------------------------------------------------------------------------


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def test_nothing_listening_stops_the_run_within_seconds(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}"} for i in range(300)])
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    started = time.monotonic()
    proc = subprocess_cli(
        "run", data, "--store", tmp_path / "s.duckdb", "--base-url", url, "--provider", "openai", "-o",
        tmp_path / "o.jsonl", env={"OPENAI_API_KEY": "sk-test"},
    )  # fmt: skip
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == ExitCode.ROWS_FAILED, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot connect to {url}" in errors[0] and "refused" in errors[0].lower()
    assert took < 30, f"took {took:.1f}s"  # seconds, not one backoff series per row
    assert all(r["error"].startswith("not_run") for r in read_jsonl(tmp_path / "o.jsonl"))


# --- progress in a pipe ---------------------------------------------------------------------------------------------


def test_plain_progress_shows_retries_as_they_happen_and_no_early_eta() -> None:
    import io

    from rich.console import Console

    from costinfer.cli.render import PlainProgress

    buffer = io.StringIO()
    progress = PlainProgress(Console(file=buffer, width=200), every_s=0.05)
    progress.phase("calling", 1000)
    progress.advance(1, Decimal("0.01"))  # too early for a line, and far too early for an ETA
    progress.problem("retry", "server_error: HTTP 503: busy")
    progress.problem("retry", "server_error: HTTP 503: busy")
    progress.problem("failed", "bad_request: HTTP 400: no")
    time.sleep(0.06)
    progress.advance(5, Decimal("0.05"))
    time.sleep(0.06)
    progress.advance(20, Decimal("0.2"))
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "calling: 1000 distinct requests to send"
    assert lines[1].startswith("retrying: server_error: HTTP 503") and lines[2].startswith("failed: bad_request")
    assert len([line for line in lines if line.startswith("retrying")]) == 1  # the second is only counted
    assert lines[3].startswith("calling: 5/1000") and "ETA" not in lines[3] and "1 failed, 2 retries" in lines[3]
    assert "ETA" in lines[4]


def test_progress_in_a_pipe_reports_failures_during_the_run(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}"} for i in range(100)])
    result = cli(
        "run", data, "--store", tmp_path / "s.duckdb", "-o", tmp_path / "o.jsonl", "--sim-faults", "5xx=0.2",
        "--sim-seed", "3",
    )  # fmt: skip
    lines = result.stderr.splitlines()
    retry = next(i for i, line in enumerate(lines) if line.startswith("retrying: server_error"))
    last = max(i for i, line in enumerate(lines) if line.startswith("calling: 100/100"))
    assert retry < last and "retries" in lines[last]


# --- input from stdin, compressed input, long CSV cells ------------------------------------------------------------


def test_stdin_is_a_dataset_and_the_same_data_again_is_the_same_run(tmp_path: Path) -> None:
    payload = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    args = ["run", "-", "--store", tmp_path / "s.duckdb", "-o", tmp_path / "o.jsonl", "--json"]
    for calls in (20, 0):
        proc = subprocess_cli(*args, stdin=subprocess.PIPE)
        out, err = proc.communicate(payload.decode(), timeout=120)
        assert proc.returncode == 0, err
        summary = json.loads(out)
        assert summary["rows"] == 20 and summary["calls"] == calls
    bad = subprocess_cli(*args, stdin=subprocess.PIPE)
    _, err = bad.communicate('{"prompt": "ok"}\n{"prompt": 3}\n', timeout=120)
    assert bad.returncode == ExitCode.BAD_INPUT and "<stdin>:line 2: field 'prompt'" in err


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_compressed_jsonl_is_read_as_it_streams(
    cli: Cli, tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zstandard

    raw = "".join(json.dumps(r) + "\n" for r in [*ROWS, {"id": "bad", "prompt": 1}]).encode()
    packed = gzip.compress(raw) if suffix == ".jsonl.gz" else zstandard.ZstdCompressor().compress(raw)
    data = tmp_path / f"data{suffix}"
    data.write_bytes(packed)
    monkeypatch.chdir(tmp_path)  # the results go to the current folder by default
    result = cli("run", data, "--store", tmp_path / "s.duckdb", "--quiet", "--on-bad-row", "skip", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 20
    # the default names drop both extensions
    assert len(read_jsonl(tmp_path / "data.results.jsonl")) == 20
    assert len(read_jsonl(tmp_path / "data.results.rejects.jsonl")) == 1


def test_a_csv_prompt_as_long_as_a_jsonl_one_is_read(cli: Cli, tmp_path: Path) -> None:
    long = "word " * 40_000  # 200,000 characters: over the csv module's default field limit
    data = tmp_path / "d.csv"
    data.write_text(f"id,prompt\n1,{long}\n", encoding="utf-8")
    result = run(cli, data, tmp_path, "-o", tmp_path / "o.jsonl", "--model", "gpt-4.1-mini", "--max-tokens", "8")
    assert result.exit_code == 0, result.stderr
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 1


# --- what people read ---------------------------------------------------------------------------------------------


def test_tables_fit_80_columns_when_piped_and_the_budget_shows_its_cents(tmp_path: Path) -> None:
    env = {"COLUMNS": "80"}
    plan = subprocess_cli(
        "plan", SAMPLE, "--store", tmp_path / "s.duckdb", "--budget", "1", "--model", "gpt-4.1-mini", env=env
    )
    out, err = plan.communicate(timeout=120)
    assert plan.returncode == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "gpt-4.1-mini " in out and "$" in out  # the model name whole, the prices shown
    prices = subprocess_cli("prices", "list", env=env)
    out, _ = prices.communicate(timeout=120)
    assert max(len(line) for line in out.splitlines()) <= 80
    line = next(line for line in out.splitlines() if line.startswith("gpt-4o-mini "))
    assert line.split()[1:3] == ["0.15", "0.6"]  # $ per 1M input and output tokens
    run_proc = subprocess_cli(
        "run", SAMPLE, "--store", tmp_path / "s.duckdb", "--budget", "0.05", "-o", tmp_path / "o.jsonl", env=env
    )
    out, err = run_proc.communicate(timeout=120)
    assert run_proc.returncode == 0, err
    budget = next(line for line in out.splitlines() if line.startswith("budget"))
    assert budget.split()[-1] == "$0.05"
    cost = next(line for line in out.splitlines() if line.startswith("cost now"))
    assert len(cost.split()[-1].split(".")[1]) >= 4  # costs with the precision they need, budget alike
