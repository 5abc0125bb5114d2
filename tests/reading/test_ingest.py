"""Ingestion in worker processes stores exactly what inline ingestion stores: items, requests, rejects, the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import costinfer.reading.ingest as ingest_module
from costinfer.errors import InputError
from costinfer.pipeline.build import run_spec
from costinfer.pipeline.run import plan
from costinfer.reading.formats import jsonl_spans, read_span
from costinfer.store import Store
from tests.conftest import SAMPLE, Cli, read_jsonl


def _dataset(path: Path) -> None:
    """Sample rows repeated (duplicates across blocks), with every kind of row that spans chunks or is bad."""
    rows = read_jsonl(SAMPLE)
    lines: list[str] = []
    for i, row in enumerate(rows * 3):
        out: dict[str, Any] = {"prompt": row["prompt"]}
        if i % 7:
            out["id"] = f"r{i}"  # every 7th row has no id: its position is its id
        if i % 50 == 3:
            out["id"] = "r1"  # a repeated id, in another block than the first
        if i % 97 == 5:
            out["model"] = "no-such-model"
        if i % 89 == 0:
            out["max_tokens"] = 10**7  # more than the model can write
        if i % 61 == 0:
            out["semantic"] = False
        lines.append(json.dumps(out))
        if i % 113 == 0:
            lines.append("")  # blank lines are not rows
        if i % 151 == 0:
            lines.append('{"prompt": "cut')  # malformed JSON
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with path.open("ab") as fh:
        fh.write(b'{"prompt": "bad \xff byte"}\n{"id": "last"}\n')


def _stored(store_path: Path, run_id: str) -> dict[str, Any]:
    with Store.open(store_path) as store:
        con = store._con

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return con.execute(sql, [run_id]).fetchall()

        return {
            "items": rows(
                "SELECT row_idx, line, row_id, key, metadata, priority FROM items WHERE run_id = ? ORDER BY 1"
            ),
            "rejects": rows("SELECT row_idx, line, row_id, field, reason FROM rejects WHERE run_id = ? ORDER BY 1"),
            "run_keys": rows("SELECT key, first_idx, n_rows FROM run_keys WHERE run_id = ? ORDER BY 1"),
            "requests": rows(
                "SELECT q.key, q.body, q.input_tokens, q.input_bound, q.norm_key, q.group_key FROM requests q "
                "WHERE q.key IN (SELECT key FROM run_keys WHERE run_id = ?) ORDER BY 1"
            ),
        }


def test_worker_processes_store_what_inline_ingestion_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "rows.jsonl"
    _dataset(data)
    monkeypatch.setattr(ingest_module, "BLOCK_BYTES", 8192)  # many blocks from a small file
    monkeypatch.setattr(ingest_module, "WRITE_ROWS", 300)  # and many batches: repeats span batches too
    outcomes = {}
    for workers in ("0", "2"):
        monkeypatch.setenv("COSTINFER_INGEST_WORKERS", workers)
        store_path = tmp_path / f"store-{workers}.duckdb"
        spec = run_spec(data, store=store_path, output=tmp_path / "out.jsonl", semantic=False)
        prepared = plan(spec)
        rejects_file = (tmp_path / "out.rejects.jsonl").read_text()
        outcomes[workers] = (prepared.plan.as_dict(), _stored(store_path, prepared.run_id), rejects_file)
        with Store.open(store_path) as store:  # each request stored once, whatever batches its rows fell in
            assert store._con.execute("SELECT count(*) = count(DISTINCT key) FROM requests").fetchone() == (True,)
    inline, pooled = outcomes["0"], outcomes["2"]
    assert pooled[1] == inline[1]
    assert pooled[0] == inline[0]
    assert pooled[2] == inline[2]
    stored = inline[1]
    # what the dataset holds, so that the comparison is not of two empty runs
    reasons = {r[3] for r in stored["rejects"]}
    assert {"(line)", "model", "max_tokens", "id"} <= reasons
    assert any(r[4] == "duplicate id 'r1'" for r in stored["rejects"])
    assert any(r[2] == str(r[0]) for r in stored["items"])  # rows without an id are known by their position
    assert len(stored["items"]) > len(stored["run_keys"]) > 400
    assert [r[0] for r in stored["items"]] == sorted(r[0] for r in stored["items"])
    n_lines = sum(1 for line in data.read_bytes().split(b"\n") if line.strip())
    assert len(stored["items"]) + len(stored["rejects"]) == n_lines


def test_blocks_of_lines_read_the_rows_the_line_reader_reads(tmp_path: Path) -> None:
    from costinfer.reading.formats import _jsonl_rows, jsonl_block_rows, jsonl_blocks

    data = tmp_path / "rows.jsonl"
    _dataset(data)
    with data.open("ab") as fh:
        fh.write(b"\n\n   \n" + b'{"prompt": "' + b"x" * 20000 + b'"}')  # blank lines, a long last line, no newline
    by_line = list(_jsonl_rows(data))
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + data.read_bytes())  # as Excel and PowerShell write it
    for block_bytes in (64, 1000, 8192, 1 << 20):
        by_block = [row for first, block in jsonl_blocks(data, block_bytes) for row in jsonl_block_rows(first, block)]
        assert by_block == by_line, block_bytes
        for path in (data, with_bom):  # a worker reads its block from the file: the same bytes
            spans = [(first, read_span(str(path), offset, n)) for first, offset, n in jsonl_spans(path, block_bytes)]
            assert spans == list(jsonl_blocks(path, block_bytes)), (path.name, block_bytes)
    assert list(_jsonl_rows(with_bom)) == by_line


def test_a_file_cut_while_workers_read_it_is_an_input_error(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    _dataset(data)
    spans = list(jsonl_spans(data, 8192))
    _, offset, n = spans[-1]
    with data.open("r+b") as fh:
        fh.truncate(offset + n // 2)
    with pytest.raises(InputError, match="changed while it was read"):
        read_span(str(data), offset, n)


def test_a_bad_worker_count_is_a_configuration_error(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "hi"}\n')
    monkeypatch.setenv("COSTINFER_INGEST_WORKERS", "two")
    result = cli("plan", data, "--store", tmp_path / "s.duckdb")
    assert result.exit_code == 2
    assert "COSTINFER_INGEST_WORKERS must be a whole number of processes, got 'two'" in result.stderr


_HELD = """
import signal
from costinfer.reading.ingest import signals_held
try:
    with signals_held():
        signal.raise_signal(signal.SIG{name})
        print("the end of the held block", flush=True)  # not cut short by the signal
except KeyboardInterrupt:
    print("KeyboardInterrupt after the block", flush=True)
print("usual handler back:", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
"""


@pytest.mark.parametrize("name", ["INT", "TERM"])
def test_a_signal_while_a_worker_is_spawned_is_handled_right_after_not_during(name: str) -> None:
    """In a process of its own: a signal raised in a test's own process once took pytest-xdist's worker down with it
    (CI), and the default action of SIGTERM is to end the process, which is what this checks."""
    import signal
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _HELD.format(name=name)], capture_output=True, text=True, timeout=120, check=False
    )
    lines = done.stdout.splitlines()
    assert lines[:1] == ["the end of the held block"], done.stderr[-2000:]
    if name == "INT":  # Python's handler, run once the block is over: KeyboardInterrupt, then the usual handler
        assert done.returncode == 0, done.stderr[-2000:]
        assert lines[1:] == ["KeyboardInterrupt after the block", "usual handler back: True"]
    else:  # the default action, taken once the block is over: the process ends, killed by SIGTERM
        assert done.returncode == -signal.SIGTERM, done.stderr[-2000:]
        assert lines[1:] == []


# A worker process as the pool starts one: the job unpickled, ``start_worker``, then a block of lines. It prints the
# block's result (pickled, hex) and whether pandas or aiohttp were imported on the way.
_WORKER = """
import pickle, sys
from costinfer.reading.chunks import start_worker, worker_jsonl_block
job, block = pickle.loads(bytes.fromhex(sys.stdin.read()))
start_worker(job)
result = worker_jsonl_block(1, block)
print(pickle.dumps(result).hex())
print("pandas" in sys.modules, "aiohttp" in sys.modules)
"""


def test_a_worker_applies_the_providers_protocol_without_loading_what_it_does_not_use() -> None:
    """The worker gets the provider's protocol with its job (what the Messages API refuses, what it does not send),
    so it rejects the rows the inline reader rejects; and it loads neither pandas nor aiohttp, which a worker that
    only reads never uses (0.3 s of each worker's start)."""
    import pickle
    import subprocess
    import sys

    from costinfer.pricing.catalog import Catalog
    from costinfer.reading.chunks import ChunkJob, ChunkProcessor
    from costinfer.reading.rows import RowSpec

    job = ChunkJob(RowSpec(model="claude-haiku-4-5", max_tokens=16), "anthropic", "anthropic", Catalog.load())
    rows = [
        {"id": "a", "prompt": "Which card should I order?"},
        {"id": "b", "prompt": "Reply in JSON", "response_format": {"type": "json_object"}},  # the API has none
        {"id": "c", "prompt": "Say hi", "frequency_penalty": 0.5},  # not sent: the run says so
    ]
    block = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    done = subprocess.run(
        [sys.executable, "-c", _WORKER],
        input=pickle.dumps((job, block)).hex(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out, loaded = done.stdout.splitlines()
    pooled = pickle.loads(bytes.fromhex(out))
    inline = ChunkProcessor(job).jsonl_block(1, block)
    assert pooled == inline
    assert pooled.rejects.column("field").to_pylist() == ["response_format"]
    assert pooled.items.column("row_id").to_pylist() == ["a", "c"]
    assert any("frequency_penalty" in note for note in pooled.notes)
    assert loaded == "False False"
