"""Shared fixtures: a real simulator on loopback, a temp store, the CLI through Typer's runner and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costinfer.cli.app import load_commands
from costinfer.simulator import Simulator, SimulatorConfig, running_in_thread

# The semantic tier (on by default) loads an embedding model and embeds every new text: tests about the main job turn
# it off through its documented variable; the semantic tests turn it on with --semantic.
os.environ.setdefault("COSTINFER_SEMANTIC", "0")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "prompts.jsonl"
SHARED_DATA = ROOT.parent / "shared" / "data"

app = load_commands()

# The longest tests first (their files, longest first): with two workers (scripts/test.sh), a long test that starts last
# is the suite's tail, while started first it runs beside the many short ones.
LONGEST_FIRST = (
    "tests/test_ray_engine.py",
    "tests/routing/test_learned.py",
    "tests/test_invariants.py",
    "tests/reuse/test_encoders.py",
    "tests/store/test_shared.py",
    "tests/test_ray_serve.py",
    "tests/cli/test_mistakes.py",
    "tests/test_semantic.py",
    "tests/backends/test_providers_e2e.py",
    "tests/test_reports.py",
    "tests/test_hardening.py",
    "tests/test_faults.py",
    "tests/execution/test_rate_limits.py",
    "tests/test_batch.py",
    "tests/test_resume.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    """A simulator in a background thread of the test process, logging every answered request."""
    with running_in_thread(SimulatorConfig(log_path=tmp_path / "sim-requests.jsonl")) as server:
        yield server


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.duckdb"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (tests/pgserver.py); skipped, with the reason, only where no
    server can be started (scripts/setup.sh and .ci/run install Debian's postgresql package)."""
    from tests import pgserver

    why = pgserver.unavailable()
    if why is not None:
        pytest.skip(f"no PostgreSQL server can be started here: {why}")
    with pgserver.cluster() as url:
        yield url


@pytest.fixture
def pg_url(pg_cluster: str) -> str:
    """A fresh shared store: a database of its own on the session's cluster."""
    import uuid

    from tests import pgserver

    return pgserver.new_database(pg_cluster, f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["duckdb", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both stores: the embedded DuckDB file and the shared PostgreSQL store."""
    if request.param == "duckdb":
        return str(tmp_path / "store.duckdb")
    return str(request.getfixturevalue("pg_url"))


def logged(path: Path) -> list[dict[str, Any]]:
    """The entries of a JSON-lines log a server may be writing at this moment: only whole lines. Each entry is one
    write, but a reader can see a write half done (a test once read '{"t":...,"digest":"1a82' and failed)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def sim_log(server: Simulator) -> list[dict[str, Any]]:
    path = server.cfg.log_path
    assert path is not None
    return logged(path)


def billed_tokens(usage: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, cached prompt, output) tokens an answer was billed for, from the usage as its protocol reports it:
    OpenAI's (and the hosts'), Gemini's (thinking billed as output) or Bedrock Converse's (whose inputTokens leave out
    the prompt cache's reads and writes)."""
    if "inputTokens" in usage:
        cached, written = int(usage.get("cacheReadInputTokens") or 0), int(usage.get("cacheWriteInputTokens") or 0)
        return int(usage["inputTokens"]) + cached + written, cached, int(usage["outputTokens"])
    if "promptTokenCount" in usage:
        output = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
        return int(usage["promptTokenCount"]), int(usage.get("cachedContentTokenCount") or 0), output
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return int(usage["prompt_tokens"]), cached, int(usage["completion_tokens"])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rehearsing(args: tuple[Any, ...]) -> list[str]:
    """A test's ``run`` or ``plan`` that names no provider rehearses on the simulator: the commands' own default is
    the model's provider, which needs a key (tests/test_rehearsal.py tests that default itself)."""
    out = [str(a) for a in args]
    if out and out[0] in ("run", "plan") and not any(a == "--provider" or a.startswith("--provider=") for a in out):
        return [out[0], "--provider", "simulate", *out[1:]]
    return out


class Cli:
    """The real CLI in-process, through Typer's runner. ``.run`` returns the click Result."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return self.runner.invoke(app, rehearsing(args), env=env, catch_exceptions=False)


@pytest.fixture
def cli() -> Cli:
    return Cli()


def subprocess_cli(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    """The CLI as a separate process (``python -m costinfer``), for signals and locks."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "costinfer", *rehearsing(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        **kw,
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


PROTOCOLS = ["openai", "anthropic"]


def provider_args(protocol: str, sim_url: str) -> tuple[list[str], dict[str, str]]:
    """CLI arguments and environment that point a run at the simulator through one protocol's backend."""
    if protocol == "anthropic":
        return (
            ["--provider", "anthropic", "--base-url", sim_url.removesuffix("/v1"), "--model", "claude-haiku-4-5"],
            {"ANTHROPIC_API_KEY": "sk-ant-test"},
        )
    return ["--provider", "openai", "--base-url", sim_url], {"OPENAI_API_KEY": "sk-test"}


@contextmanager
def refusing_server(status: int, body: bytes) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A plain HTTP server on loopback that answers every POST with ``status`` and ``body`` (a provider refusing:
    bad request, bad key, no quota). Yields its base URL and the list of requests it received."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, Any]] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", received
    finally:
        server.shutdown()
