"""A store made by an earlier costinfer opens with this one: each migration moves what was kept, and nothing is lost.
Migration 13 is checked value by value: runs.options, a JSON bag, became columns."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson

from costinfer.store import Store
from costinfer.store.schema import MIGRATIONS, SCHEMA_VERSION


def _store_at(path: Path, version: int) -> None:
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    for number, name, apply in MIGRATIONS:
        if number <= version:
            apply(con)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [number, name])
    options = {
        "models": ["gpt-4o-mini", "gpt-4o"], "fallback_model": None, "compare_with": "gpt-4o-mini", "rpm": 500,
        "results": "/data/out.jsonl", "server_batch": 48.0, "notes": ["estimate: 3 rows"],
        "reuse": {"semantic_note": "semantic tier off (--no-semantic or COSTINFER_SEMANTIC=0)"},
        "plan": {"rows": 3, "expected_cost_usd": "0.001"},
    }  # fmt: skip
    con.execute(
        "INSERT INTO runs (run_id, fingerprint, status, options) VALUES ('r1', 'f', 'completed', ?), "
        "('r2', 'g', 'planned', NULL)",
        [orjson.dumps(options).decode()],
    )
    con.close()


def test_runs_options_become_columns_with_every_value(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _store_at(path, 12)
    with Store.open(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        run = store.run("r1")
        empty = store.run("r2")
        columns = {str(r[0]) for r in store._con.execute("DESCRIBE runs").fetchall()}
        assert store.last_batch("") is None  # runs without an endpoint
    assert run is not None and empty is not None
    assert "options" not in columns
    assert run["models"] == ["gpt-4o-mini", "gpt-4o"] and run["fallback_model"] is None
    assert run["compare_with"] == "gpt-4o-mini" and run["rate_limit_rpm"] == 500.0
    assert run["results_path"] == "/data/out.jsonl" and run["server_batch"] == 48.0
    assert run["notes"] == ["estimate: 3 rows"]
    assert run["semantic_note"] == "semantic tier off (--no-semantic or COSTINFER_SEMANTIC=0)"
    assert run["plan"] == {"rows": 3, "expected_cost_usd": "0.001"}
    assert empty["models"] is None and empty["plan"] == {}


def test_a_memory_store_has_the_whole_schema() -> None:
    with Store.memory() as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.create_run("r", "f", {"models": ["a", "b"], "notes": ["n"]})
        store.keep_plan("r", {"rows": 1})
        run = store.run("r")
    assert run is not None and run["models"] == ["a", "b"] and run["plan"] == {"rows": 1}
