"""Issue 22's findings through the CLI, one class at a time: signals obeyed in every phase, no hang on a server that
never answers, no key leaked from a server's text, input read as people write it, a provider's refusals found before
any call, and the metrics file written on every exit. (The one-line mistakes are in tests/cli/test_mistakes.py.)"""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest

from costinfer.errors import ExitCode
from costinfer.simulator import Simulator
from tests.conftest import Cli, read_jsonl, refusing_server, sim_log, subprocess_cli, write_jsonl

# --- signals ------------------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    return [int(p) for p in found]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 12 MB of JSONL: read by two ingest workers (forced), several seconds of reading on this machine."""
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with path.open("w") as fh:
        for i in range(90_000):
            fh.write(json.dumps({"id": f"r{i}", "prompt": f"Question {i}: explain topic {i % 9973} with examples"}))
            fh.write("\n")
    return path


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc"), reason="reads processes from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_a_signal_while_the_dataset_is_read_stops_everything(
    sim: Simulator, tmp_path: Path, big_dataset: Path, sig: signal.Signals
) -> None:
    proc = subprocess_cli(
        "run", big_dataset, "--base-url", sim.url, "--store", tmp_path / "s.duckdb", "-o", tmp_path / "o.jsonl",
        "--budget", "10", env={"COSTINFER_INGEST_WORKERS": "2"}, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
        workers = [p for p in _children(proc.pid) if p != proc.pid]
        time.sleep(0.05)
    assert len(workers) >= 2, "the ingest workers never started"
    time.sleep(0.3)  # reading is under way
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    time.sleep(1.0)
    assert [p for p in workers if _alive(p)] == [], "ingest workers outlived the run"
    assert sim_log(sim) == []  # nothing was sent
    if sig != signal.SIGKILL:
        assert proc.returncode == ExitCode.INTERRUPTED, err
        assert "Traceback" not in err and "rerun the same command" in err


# --- a server that never answers -------------------------------------------------------------------------------------


@contextmanager
def black_hole() -> Iterator[str]:
    """A server that accepts connections and never answers: its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def test_a_server_that_never_answers_ends_the_run_within_one_timeout(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}"} for i in range(20)])
    with black_hole() as url:
        started = time.monotonic()
        result = cli(
            "run", data, "--provider", "openai", "--base-url", url, "--timeout", "2", "--store", tmp_path / "s.duckdb",
            "-o", tmp_path / "o.jsonl", env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        took = time.monotonic() - started
    assert took < 2 + 10, took
    assert result.exit_code == ExitCode.ROWS_FAILED and url in result.stderr and "does not answer" in result.stderr


def test_doctor_names_what_is_wrong_with_a_server_that_never_answers(cli: Cli) -> None:
    with black_hole() as url:
        result = cli("doctor", "--base-url", url, "--timeout", "2")
    assert result.exit_code != 0 and "internal error" not in result.output
    assert "timeout: no answer within 2s" in result.output and "does not answer" in result.output


def test_a_retry_goes_to_the_replica_that_answers(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}"} for i in range(24)])
    with black_hole() as url:
        result = cli(
            "run", data, "--base-url", sim.url, "--base-url", url, "--timeout", "3", "--store", tmp_path / "s.duckdb",
            "-o", tmp_path / "o.jsonl", "--json",
        )  # fmt: skip
    summary = json.loads(result.stdout)
    assert result.exit_code == 0, result.stderr
    assert summary["failed"] == 0 and all(r["response"] for r in read_jsonl(tmp_path / "o.jsonl"))


# --- secrets ----------------------------------------------------------------------------------------------------------

KEY = "sk-proj-EchoedBackKey0123456789abcdef"


@pytest.mark.parametrize("status", [401, 400, 500])
def test_a_server_echoing_the_key_leaks_it_nowhere(cli: Cli, tmp_path: Path, status: int) -> None:
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}. You passed Bearer {KEY}"}})
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}"} for i in range(3)])
    store, out = tmp_path / "s.duckdb", tmp_path / "o.jsonl"
    with refusing_server(status, body.encode()) as (url, _):
        result = cli(
            "run", data, "--provider", "openai", "--base-url", url, "--store", store, "-o", out, "--max-attempts", "1",
            "--metrics-file", tmp_path / "m.prom", env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
    assert result.exit_code in (ExitCode.USAGE, ExitCode.ROWS_FAILED), result.output
    assert KEY not in result.stdout + result.stderr
    assert "***" in result.stderr or "***" in (out.read_text() if out.exists() else "")
    for path in tmp_path.iterdir():
        if path.is_file() and path.suffix in (".jsonl", ".json", ".html", ".prom"):
            assert KEY not in path.read_text(errors="replace"), path.name
    with duckdb.connect(str(store), read_only=True) as db:
        for table, column in db.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE data_type IN ('VARCHAR', 'JSON') AND table_schema = 'main'"
        ).fetchall():
            hits = db.execute(f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS VARCHAR) LIKE ?', [f"%{KEY}%"])
            assert hits.fetchone() == (0,), f"{table}.{column}"


# --- input as people write it -------------------------------------------------------------------------------------


def test_a_byte_order_mark_is_read_not_rejected(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    (tmp_path / "excel.jsonl").write_bytes(bom + b'{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": "yo"}\n')
    (tmp_path / "excel.csv").write_bytes(bom + b"id,prompt\na,hi\nb,yo\n")
    for name in ("excel.jsonl", "excel.csv"):
        out = tmp_path / f"{name}.out.jsonl"
        result = cli("run", tmp_path / name, "--base-url", sim.url, "--store", tmp_path / "s.duckdb", "-o", out)
        assert result.exit_code == 0, result.output
        assert [r["id"] for r in read_jsonl(out)] == ["a", "b"]


def test_gzip_on_standard_input_is_read_as_gzip(sim: Simulator, tmp_path: Path) -> None:
    rows = "".join(json.dumps({"id": f"r{i}", "prompt": f"hello {i}"}) + "\n" for i in range(5))
    argv = ["run", "-", "--provider", "simulate", "--base-url", sim.url, "--store", str(tmp_path / "s.duckdb"),
            "-o", str(tmp_path / "o.jsonl"), "--json"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "costinfer", *argv], input=gzip.compress(rows.encode()), capture_output=True,
        timeout=120, check=False, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    out, err = done.stdout.decode(), done.stderr.decode()
    proc = done
    assert proc.returncode == 0, err
    assert json.loads(out)["rows"] == 5 and json.loads(out)["rejects"] == 0


# --- a provider's refusals before any call ------------------------------------------------------------------------


def test_what_anthropic_cannot_take_is_a_bad_row_before_any_call(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    rows = [
        {"id": "ok", "prompt": "hello", "frequency_penalty": 0.5},
        {"id": "fmt", "prompt": "hello", "response_format": {"type": "json_object"}},
        {"id": "asst", "messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "hello"}]},
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    args = ["run", data, "--provider", "anthropic", "--base-url", sim.url.removesuffix("/v1"), "--model",
            "claude-haiku-4-5", "--store", tmp_path / "s.duckdb", "-o", tmp_path / "o.jsonl"]  # fmt: skip
    strict = cli(*args, env={"ANTHROPIC_API_KEY": "sk-ant-test"})
    assert strict.exit_code == ExitCode.BAD_INPUT and "field 'response_format'" in strict.stderr
    assert sim_log(sim) == []
    skip = cli(*args, "--on-bad-row", "skip", env={"ANTHROPIC_API_KEY": "sk-ant-test"})
    assert skip.exit_code == 0, skip.output
    rejects = {r["id"]: r for r in read_jsonl(tmp_path / "o.rejects.jsonl")}
    assert set(rejects) == {"fmt", "asst"} and rejects["asst"]["field"] == "messages"
    assert "frequency_penalty: not sent" in skip.stderr


# --- the metrics file on every exit ---------------------------------------------------------------------------------


def test_the_metrics_file_is_written_on_every_exit(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    metrics = tmp_path / "m.prom"
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}", "max_tokens": 800} for i in range(20)])
    common = ["--base-url", sim.url, "--store", tmp_path / "s.duckdb", "-o", tmp_path / "o.jsonl"]
    assert cli("run", data, *common, "--metrics-file", metrics).exit_code == 0
    assert 'costinfer_run_exit_code{dataset="d.jsonl"} 0.0' in metrics.read_text()
    more = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"another {i}", "max_tokens": 800} for i in range(20)])
    over = cli("run", more, *common, "--metrics-file", metrics, "--budget", "0.000001")
    assert over.exit_code == ExitCode.BUDGET
    text = metrics.read_text()
    assert 'costinfer_run_exit_code{dataset="d.jsonl"} 4.0' in text
    assert "costinfer_last_success_timestamp_seconds" in text  # the last success is kept, not renewed


# --- more calls in flight than open files -----------------------------------------------------------------------------


def test_concurrency_beyond_the_open_file_limit_is_capped_with_a_note(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}"} for i in range(600)])

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = subprocess_cli(
        "run", data, "--concurrency", "1000", "--sim-latency-ms", "50", "--store", tmp_path / "s.duckdb",
        "-o", tmp_path / "o.jsonl", "--json", preexec_fn=low_limit,
    )  # fmt: skip
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["failed"] == 0 and "Too many open files" not in err
    assert "needs more open files than this process may hold (256" in err


# --- a vLLM server without /tokenize ----------------------------------------------------------------------------------


class _NoTokenize(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that lists its model and answers chats, and has no /tokenize (404)."""

    def _send(self, status: int, payload: Any) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        if self.path.endswith("/tokenize"):
            self._send(404, {"detail": "Not Found"})
            return
        self._send(200, {
            "id": "x", "object": "chat.completion", "model": "tiny",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        })  # fmt: skip

    def log_message(self, *args: object) -> None:
        pass


def test_a_vllm_server_without_tokenize_leaves_the_estimates(cli: Cli, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoTokenize)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"row {i}"} for i in range(3)])
        result = cli(
            "run", data, "--provider", "vllm", "--base-url", f"http://127.0.0.1:{server.server_port}/v1",
            "--model", "tiny", "--store", tmp_path / "s.duckdb", "-o", tmp_path / "o.jsonl", "--fixed-concurrency",
        )  # fmt: skip
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    assert "could not count the prompts" in result.stderr and "internal error" not in result.output


# --- the store on a full disk -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_store_on_a_full_disk_is_one_line_and_exit_7(sim: Simulator, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk is rehearsed on a small tmpfs, which needs root to mount: {mounted.stderr.decode()}")
    try:
        data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"question {i}"} for i in range(5)])
        args = ["--base-url", sim.url, "--store", disk / "s.duckdb"]
        first = subprocess_cli("run", data, *args, "-o", tmp_path / "o.jsonl")
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        try:  # the disk is full now
            with (disk / "filler").open("wb", buffering=0) as fh:
                while True:
                    fh.write(b"x" * 4096)
        except OSError:
            pass
        more = write_jsonl(tmp_path / "e.jsonl", [{"prompt": f"another question {i}"} for i in range(50)])
        filled = subprocess_cli("run", more, *args, "-o", tmp_path / "p.jsonl")
        _, err = filled.communicate(timeout=120)
        assert filled.returncode == ExitCode.WRITE_FAILED, err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "No space left on device" in lines[0], err
        assert "internal error" not in err and "Traceback" not in err
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# --- what a user reads ------------------------------------------------------------------------------------------------


def test_what_a_user_reads(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "prompt": "Hello there."}, {"id": "b", "prompt": "Bye."}])
    args = ["run", data, "--base-url", sim.url, "--store", tmp_path / "s.duckdb", "-o", tmp_path / "o.jsonl"]
    semantic = cli(*args, "--semantic", "--json")
    assert semantic.exit_code == 0 and "Loading weights" not in semantic.stderr  # no third-party bar
    table = cli(*args, "--no-semantic", env={"COLUMNS": "100"}).stdout
    assert "retries" in table and "elapsed" in table and "cost now (this command's calls)" in table
    assert "normalized-text reuses" not in table and "answered by the fallback model" not in table  # no zero lines
    plan = cli("plan", write_jsonl(tmp_path / "one.jsonl", [{"prompt": "x"}]), "--store", tmp_path / "p.duckdb")
    caption = " ".join((plan.stdout + plan.stderr).split())
    assert "1 row (0 rejected) ask 1 distinct request" in caption and "1 request to call" in caption
    assert "1 rows" not in caption
    assert "no summary table" in cli("run", "--help").stdout
    assert "<script" not in (tmp_path / "o.report.html").read_text()
    tagged = cli(*args, "--tag", "team=a,b")
    assert tagged.exit_code == ExitCode.USAGE and "cannot hold ','" in tagged.stderr


def test_no_color_means_no_escape_codes(tmp_path: Path, sim: Simulator) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hello"}])
    env = {"NO_COLOR": "1", "FORCE_COLOR": "1", "COLUMNS": "100"}  # a terminal, as far as rich can tell
    run = subprocess_cli("run", data, "--base-url", sim.url, "--store", tmp_path / "s.duckdb", "-o",
                         tmp_path / "o.jsonl", env=env)  # fmt: skip
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    runs = subprocess_cli("runs", "--store", tmp_path / "s.duckdb", env=env)
    listed, _ = runs.communicate(timeout=60)
    assert "\x1b[" not in out + listed, repr((out + listed)[:300])
