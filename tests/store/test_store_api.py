"""The store through its named methods alone, on a real DuckDB file: ingestion, what is pending, outcomes, results."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from costinfer.pricing.catalog import Catalog
from costinfer.reading.chunks import ChunkJob, ChunkProcessor
from costinfer.reading.formats import RawRow
from costinfer.reading.rows import RowSpec
from costinfer.store import Outcome, Store
from tests.conftest import read_jsonl


def test_a_run_through_the_store_api(tmp_path: Path) -> None:
    job = ChunkJob(RowSpec(model="gpt-4o-mini", max_tokens=16), "simulate", "simulate", Catalog.load())
    chunk = ChunkProcessor(job).process([RawRow(i + 1, {"prompt": p}) for i, p in enumerate("abac")])
    assert chunk.requests is not None
    with Store.open(tmp_path / "s.duckdb") as store:
        store.create_run("r1", "fingerprint", {"model": "gpt-4o-mini"})
        store.add_chunk("r1", chunk.items, chunk.requests, None)
        store.add_chunk("r1", chunk.items.slice(0, 0), chunk.requests, None)  # the same bodies again: kept once
        assert store.finish_ingest("r1") == {"rows": 4, "rejects": 0, "distinct": 3}
        assert store.plan_counts("r1")["pending_keys"] == 3
        assert [(m, n) for m, _, n, _, _, _ in store.pending_groups("r1")] == [("gpt-4o-mini", 3)]
        keys = [p.key for page in store.pending("r1") for p in page]
        assert len(keys) == 3  # in input order: a, b, c
        paid = Outcome(keys[0], "simulate", "gpt-4o-mini", 1, response="A", input_tokens=5, output_tokens=2)
        paid.cost_usd = Decimal("0.001")
        failed = Outcome(keys[1], "simulate", "gpt-4o-mini", 4, error_class="server_error", error_message="HTTP 503")
        store.record("r1", [paid, failed])
        assert store.plan_counts("r1")["pending_keys"] == 2  # the failed request is still to send
        store.write_results("r1", tmp_path / "o.jsonl", "jsonl", "not_run: test")
        rows = read_jsonl(tmp_path / "o.jsonl")
        assert [r["source"] for r in rows] == ["fresh", None, "duplicate", None]
        assert [r["error"] for r in rows] == [None, "server_error: HTTP 503", None, "not_run: test"]
        assert [Decimal(str(r["cost_usd"])) if r["cost_usd"] is not None else None for r in rows] == [
            Decimal("0.001"),
            None,
            Decimal(0),
            None,
        ]
        summary = store.summary("r1")
        assert (summary["fresh"], summary["duplicates"], summary["failed"], summary["not_run"]) == (1, 1, 1, 1)
        assert store.run_spend("r1") == Decimal("0.001")
        assert store.cache_stats()["answers"] == 1
        assert store.run_models("r1") == ["gpt-4o-mini"]


def test_a_batch_stores_each_new_request_once(tmp_path: Path) -> None:
    """A batch of chunks may list a key twice (two chunks share it) and may hold keys an earlier batch stored: each
    key is stored once, with its own body and counts, and the rest of the batch is stored whole."""
    import pyarrow as pa

    job = ChunkJob(RowSpec(model="gpt-4o-mini", max_tokens=16), "simulate", "simulate", Catalog.load())
    processor = ChunkProcessor(job)
    first = processor.process([RawRow(i + 1, {"prompt": p}) for i, p in enumerate(["a", "b"])])
    second = processor.process([RawRow(i + 1, {"prompt": p}) for i, p in enumerate(["b", "c", "d"])])
    third = processor.process([RawRow(i + 1, {"prompt": p}) for i, p in enumerate(["a", "d", "e"])])
    assert first.requests is not None and second.requests is not None and third.requests is not None
    with Store.open(tmp_path / "s.duckdb") as store:
        store.create_run("r1", "fingerprint", {"model": "gpt-4o-mini"})
        store.add_chunk("r1", first.items.slice(0, 0), first.requests, None)  # a and b stored by an earlier batch
        batch = pa.concat_tables([second.requests, third.requests])  # b and a stored; d twice; c and e new
        store.add_chunk("r1", first.items.slice(0, 0), batch, None)
        stored = store._con.execute("SELECT key, body, input_tokens, norm_key FROM requests").fetchall()
    given = {}
    for table in (first.requests, batch):
        for row in table.select(["key", "body", "input_tokens", "norm_key"]).to_pylist():
            given.setdefault(row["key"], tuple(row.values()))
    assert len(stored) == len(given) == 5
    assert sorted(stored) == sorted(given.values())


def test_a_writer_commits_from_its_own_cursor(tmp_path: Path) -> None:
    import threading

    job = ChunkJob(RowSpec(model="gpt-4o-mini", max_tokens=16), "simulate", "simulate", Catalog.load())
    chunk = ChunkProcessor(job).process([RawRow(1, {"prompt": "x"})])
    with Store.open(tmp_path / "s.duckdb") as store:
        store.create_run("r", "fp", {})
        store.add_chunk("r", chunk.items, chunk.requests, None)
        store.finish_ingest("r")
        key = next(iter(store.pending("r")))[0].key
        writer = store.writer()
        thread = threading.Thread(target=writer.record, args=("r", [Outcome(key, "simulate", "m", 1, response="y")]))
        thread.start()
        thread.join()
        writer.close()
        assert store.plan_counts("r")["pending_keys"] == 0


def test_duckdb_memory_is_bounded_while_reading_and_wider_after(tmp_path: Path, monkeypatch: Any) -> None:
    """1 GB, but 512 MB while a dataset is read (ingestion's workers share the machine); a bound the user set holds
    throughout. Strings are written zstd-compressed while reading, and as DuckDB chooses after; DuckDB leaves a core to
    each ingest worker while they read, and has every core again after."""
    job = ChunkJob(RowSpec(model="gpt-4o-mini", max_tokens=16), "simulate", "simulate", Catalog.load())
    chunk = ChunkProcessor(job).process([RawRow(1, {"prompt": "a"})])

    def bound(store: Store) -> str:
        row = store._con.execute("SELECT current_setting('memory_limit')").fetchone()
        assert row is not None
        return str(row[0])

    def setting(store: Store, name: str) -> int:
        row = store._con.execute(f"SELECT current_setting('{name}')").fetchone()
        assert row is not None
        return int(row[0])

    monkeypatch.delenv("COSTINFER_DUCKDB_MEMORY", raising=False)
    with Store.open(tmp_path / "s.duckdb") as store:
        store.create_run("r1", "fingerprint", {"model": "gpt-4o-mini"})
        opened = bound(store)
        store.reset_ingest("r1")
        reading = bound(store)
        store.add_chunk("r1", chunk.items, chunk.requests, None)
        assert store._con.execute("SELECT current_setting('force_compression')").fetchone() == ("zstd",)
        all_cores = setting(store, "threads")
        store.share_cores(1)  # one ingest worker beside this process: DuckDB leaves it a core (and keeps one)
        assert setting(store, "threads") == max(1, all_cores - 1)
        store.finish_ingest("r1")
        assert (opened, reading, bound(store)) == ("953.6 MiB", "488.2 MiB", "953.6 MiB")  # 1GB, 512MB as DuckDB says
        assert store._con.execute("SELECT current_setting('force_compression')").fetchone() == ("auto",)
        assert setting(store, "threads") == all_cores
    monkeypatch.setenv("COSTINFER_DUCKDB_MEMORY", "300MB")
    with Store.open(tmp_path / "s.duckdb") as store:
        store.create_run("r2", "fingerprint", {"model": "gpt-4o-mini"})
        store.reset_ingest("r2")
        assert bound(store) == "286.1 MiB"
        store.add_chunk("r2", chunk.items, chunk.requests, None)
        store.finish_ingest("r2")
        assert bound(store) == "286.1 MiB"


def test_the_live_copy_gives_way_on_a_nearly_full_disk(tmp_path: Path, monkeypatch: Any) -> None:
    """The copy a run keeps beside the store is written only while the disk has room for it and more: on a nearly
    full disk it must not take the room the run's own answers need."""
    from costinfer.store import live as live_module

    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        live = live_module.LiveStatus(store._con, path)
        try:
            live.write()
            assert live.path.exists()  # room enough: written
            live.path.unlink()
            # the disk's free space, faked (a full disk cannot be made without root): less than the store again
            monkeypatch.setattr(live_module.shutil, "disk_usage", lambda _: SimpleNamespace(free=path.stat().st_size))
            store.create_run("r1", "fingerprint", {"model": "gpt-4o-mini"})  # something new to copy
            live.write()
            assert not live.path.exists() and not list(tmp_path.glob(".*tmp"))
        finally:
            live.close()


def test_the_models_of_a_run_are_found_by_hash_joins_not_a_nested_loop(tmp_path: Path) -> None:
    """Picking up a planned run of a million requests asks for its models: joined ``ON key = a OR key = b``, DuckDB
    planned a nested-loop join that had not finished after ten minutes."""
    from costinfer.store.dataset import RUN_MODELS

    with Store.open(tmp_path / "s.duckdb") as store:
        store.create_run("r1", "fingerprint", {"model": "gpt-4o-mini"})
        plan = "\n".join(str(row[1]) for row in store._con.execute(f"EXPLAIN {RUN_MODELS}", ["r1"]).fetchall())
    assert "Hash Join" in plan or "HASH_JOIN" in plan, plan
    assert not any(loop in plan.upper() for loop in ("NL JOIN", "NESTED_LOOP", "NESTED LOOP", "PIECEWISE")), plan
