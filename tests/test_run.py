"""The main job end to end through the real CLI, against the simulator over real HTTP, on a real DuckDB file."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from costinfer.errors import ExitCode
from costinfer.simulator import Simulator
from costinfer.store import SCHEMA_VERSION, Store
from tests.conftest import (
    PROTOCOLS,
    SAMPLE,
    Cli,
    provider_args,
    read_jsonl,
    refusing_server,
    sim_log,
    subprocess_cli,
    write_jsonl,
)


def run_json(cli: Cli, *args: object, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    result = cli("run", *map(str, args), "--json", env=env)
    return result.exit_code, (json.loads(result.stdout) if result.stdout.strip() else {}), result.stderr


def distinct_sample_keys() -> int:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    return len({json.dumps({k: v for k, v in r.items() if k not in ("id", "metadata")}, sort_keys=True) for r in rows})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sample_run_pays_once_per_distinct_request_and_rerun_is_free(
    cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path, protocol: str
) -> None:
    out = tmp_path / "out.jsonl"
    target, env = provider_args(protocol, sim.url)
    code, summary, _ = run_json(cli, SAMPLE, *target, "--budget", "1", "--output", out, "--store", store_path, env=env)
    assert code == 0
    rows = read_jsonl(out)
    inputs = read_jsonl(SAMPLE)
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]  # one per input row, in input order
    distinct = distinct_sample_keys()
    assert distinct < len(inputs)  # the sample has exact duplicates
    assert summary["calls"] == distinct == summary["distinct"] == len(sim_log(sim)) == sim.requests
    assert summary["duplicates"] == len(inputs) - distinct
    assert {r["source"] for r in rows} == {"fresh", "duplicate"}
    assert all(r["response"] and r["error"] is None for r in rows)
    paid = sum(Decimal(str(r["cost_usd"])) for r in rows)
    assert paid == Decimal(summary["cost_usd"]) > 0
    assert Decimal(summary["cost_usd"]) <= 1
    # per key: the first row pays ("fresh"), the later ones share its answer at no cost ("duplicate")
    by_key: dict[str, list[dict]] = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r)
    for group in by_key.values():
        assert [r["source"] for r in group] == ["fresh"] + ["duplicate"] * (len(group) - 1)
        assert {r["response"] for r in group} == {group[0]["response"]}
        assert all(r["cost_usd"] == 0 for r in group[1:])
    # the same command again: zero calls, zero dollars, every row from the cache
    before = sim.requests
    code, again, _ = run_json(cli, SAMPLE, *target, "--budget", "1", "--output", out, "--store", store_path, env=env)
    assert code == 0
    assert again["calls"] == 0 and Decimal(again["cost_usd"]) == 0 and sim.requests == before
    assert again["cache_hits"] == len(inputs)
    assert [r["response"] for r in read_jsonl(out)] == [r["response"] for r in rows]


def test_in_process_simulator_and_parquet_in_and_out(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    out = tmp_path / "out.parquet"
    code, summary, _ = run_json(
        cli, SAMPLE.with_suffix(".parquet"), "--provider", "simulate", "--output", out, "--store", store_path
    )
    assert code == 0
    table = pq.read_table(out)
    assert table.num_rows == summary["rows"] == 500
    for column in (
        "id",
        "response",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "source",
        "error",
        "latency_ms",
    ):
        assert column in table.column_names
    assert str(table.schema.field("cost_usd").type) == "decimal128(38, 12)"


def test_csv_with_template_and_id_field(cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path) -> None:
    data = tmp_path / "tickets.csv"
    data.write_text("ticket,text,lang\nT1,my card is lost,en\nT2,refund please,en\nT3,my card is lost,en\n")
    out = tmp_path / "out.jsonl"
    code, summary, _ = run_json(
        cli,
        data,
        "--base-url",
        sim.url,
        "--template",
        "Classify ({lang}): {text}",
        "--id-field",
        "ticket",
        "--output",
        out,
        "--store",
        store_path,
    )
    assert code == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["T1", "T2", "T3"]
    assert [r["source"] for r in rows] == ["fresh", "fresh", "duplicate"]
    assert summary["calls"] == 2
    with duckdb.connect(str(store_path), read_only=True) as con:
        bodies = [json.loads(b) for (b,) in con.execute("SELECT body FROM requests ORDER BY created_at").fetchall()]
    assert {b["messages"][0]["content"] for b in bodies} == {
        "Classify (en): my card is lost",
        "Classify (en): refund please",
    }


def test_prompt_field_maps_another_column(cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "why?", "uid": 7}])
    out = tmp_path / "o.jsonl"
    code, _, _ = run_json(
        cli,
        data,
        "--base-url",
        sim.url,
        "--prompt-field",
        "question",
        "--id-field",
        "uid",
        "--output",
        out,
        "--store",
        store_path,
    )
    assert code == 0
    assert read_jsonl(out)[0]["id"] == "7"


def test_rows_without_id_are_identified_by_position(cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    out = tmp_path / "o.jsonl"
    assert run_json(cli, data, "--base-url", sim.url, "--output", out, "--store", store_path)[0] == 0
    assert [r["id"] for r in read_jsonl(out)] == ["0", "1"]


def test_budget_stops_dispatch_and_says_so(cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"question number {i}"} for i in range(200)])
    out = tmp_path / "o.jsonl"
    # each call reserves ~20 input + 512 output tokens of gpt-4o-mini ($0.00031) and settles at ~$0.00002:
    # the whole file would cost ~$0.0036, so $0.001 stops it part way
    code, summary, err = run_json(
        cli,
        data,
        "--base-url",
        sim.url,
        "--budget",
        "0.001",
        "--output",
        out,
        "--store",
        store_path,
        "-c",
        "4",
        "--on-over-budget",
        "partial",
    )
    assert code == ExitCode.BUDGET
    assert summary["stop_reason"] == "budget"
    assert 0 < summary["calls"] < 200
    assert summary["not_run"] == 200 - summary["calls"]
    assert Decimal(summary["run_cost_usd"]) <= Decimal("0.001")
    rows = read_jsonl(out)
    assert len(rows) == 200
    assert sum(r["error"] == "not_run: budget" for r in rows) == summary["not_run"]
    assert "rows were not run" in err


def test_server_errors_become_row_errors(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    refusal = b'{"error": {"message": "Invalid value for temperature", "type": "invalid_request_error"}}'
    with refusing_server(400, refusal) as (url, received):
        data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
        out = tmp_path / "o.jsonl"
        code, summary, err = run_json(cli, data, "--base-url", url, "--output", out, "--store", store_path)
    assert code == ExitCode.ROWS_FAILED
    assert summary["failed"] == 2 and summary["calls"] == 2
    assert len(received) == 2  # a 400 is not retried
    rows = read_jsonl(out)
    assert all(r["error"] == "bad_request: HTTP 400: Invalid value for temperature" for r in rows)
    assert "2 rows failed; rerun the same command to retry them" in err


def test_auth_failure_stops_the_run_early(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    refusal = b'{"error": {"message": "Incorrect API key provided: sk-xx", "type": "invalid_request_error"}}'
    with refusing_server(401, refusal) as (url, received):
        data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}"} for i in range(300)])
        result = cli(
            "run",
            data,
            "--provider",
            "openai",
            "--base-url",
            url,
            "--output",
            tmp_path / "o.jsonl",
            "--store",
            store_path,
            "-c",
            "4",
            "--quiet",
            env={"OPENAI_API_KEY": "sk-wrong"},
        )
    assert result.exit_code == ExitCode.USAGE
    assert "Incorrect API key provided" in result.stderr and "check OPENAI_API_KEY" in result.stderr
    assert len(received) <= 8  # stopped after the calls already in flight, not after 300


def test_store_schema_is_versioned(store_path: Path) -> None:
    with Store.open(store_path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        names = {n for (n,) in store._con.execute("SELECT name FROM schema_migrations").fetchall()}
        assert names and all(names)
    with Store.open(store_path) as store:  # opening again applies nothing twice
        assert store._con.execute("SELECT count(*) FROM schema_migrations").fetchone() == (SCHEMA_VERSION,)


def test_a_second_process_on_the_same_store_stops_clearly(tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    with Store.open(store_path):
        proc = subprocess_cli("run", data, "--store", store_path, "--output", tmp_path / "o.jsonl", "--quiet")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.STORE_BUSY
    assert err.strip().startswith("error: ")
    assert "the store is in use by another process" in err and "--store-wait" in err
    assert "Traceback" not in err


def test_store_wait_waits_for_the_other_process(tmp_path: Path, store_path: Path) -> None:
    import time

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    store = Store.open(store_path)
    proc = subprocess_cli("run", data, "--store", store_path, "--output", tmp_path / "o.jsonl", "--store-wait", "60")
    assert proc.stderr is not None
    # the child says when it finds the store held: proof that it met the lock (a child that started after the
    # store was released, or that gave up at once, would not say it)
    first = proc.stderr.readline()
    assert first.startswith("waiting up to 60s for the store"), first
    time.sleep(1)
    assert proc.poll() is None  # still waiting
    store.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_store_from_environment_variable(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    env_store = tmp_path / "env-store.duckdb"
    result = cli("run", data, "--output", tmp_path / "o.jsonl", "--quiet", env={"COSTINFER_STORE": str(env_store)})
    assert result.exit_code == 0, result.stderr
    assert env_store.exists()


def test_plain_progress_lines_when_not_a_terminal(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}"} for i in range(20)])
    result = cli("run", data, "--output", tmp_path / "o.jsonl", "--store", store_path)
    assert result.exit_code == 0
    assert "calling: 20 distinct requests to send" in result.stderr
    assert "calling: 20/20 calls" in result.stderr
    assert "distinct requests" in result.stdout  # the summary table


def test_json_summary_is_alone_on_stdout(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    result = cli("run", data, "--output", tmp_path / "o.jsonl", "--store", store_path, "--json")
    summary = json.loads(result.stdout)
    assert {"rows", "calls", "cost_usd"} <= set(summary)
    assert "calling:" in result.stderr


def test_result_rows_built_a_slice_at_a_time_are_the_rows_built_at_once(
    cli: Cli, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big run's result rows are built a slice of rows at a time (one statement ran out of DuckDB's memory at a
    million rows): duplicates, reuses and the budget's unsent rows come out the same, row for row, in input order,
    whatever slice their first row fell in."""
    from costinfer.store import results

    rows = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "a", "prompt": "What is the capital of France?"},
            {"id": "b", "prompt": "Name a prime number."},
            {"id": "c", "prompt": "what is the capital of  FRANCE?"},  # the normalized tier, from a's answer
            {"id": "d", "prompt": "Name a prime number."},  # a duplicate of b, in another slice
            {"id": "e", "prompt": "Spell 'cat' backwards."},
            {"id": "f", "prompt": "What is the capital of France?"},
            {"id": "g", "prompt": "Write a very long essay about everything. " * 40, "max_tokens": 4000},
        ],
    )

    def results_of(store: str, slice_rows: int) -> tuple[int, list[dict]]:
        monkeypatch.setattr(results, "RESULT_SLICE_ROWS", slice_rows)
        out = tmp_path / f"{store}.jsonl"
        code, _, _ = run_json(
            cli, rows, "--base-url", sim.url, "--store", tmp_path / f"{store}.duckdb", "-o", out, "--no-semantic",
            "--budget", "0.001", "--on-over-budget", "partial",
        )  # fmt: skip
        return code, [{k: v for k, v in r.items() if k != "latency_ms"} for r in read_jsonl(out)]

    code_whole, whole = results_of("whole", 1_000)
    code_sliced, sliced = results_of("sliced", 2)
    assert code_whole == code_sliced == ExitCode.BUDGET  # g's worst case does not fit
    assert sliced == whole and [r["id"] for r in sliced] == list("abcdefg")
    assert [r["source"] for r in sliced] == ["fresh", "fresh", "normalized", "duplicate", "fresh", "duplicate", None]
    assert sliced[2]["reused_from"] == "a" and sliced[6]["error"] is not None
