"""The reader streams: memory stays bounded by a chunk, whatever the file's size."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from costinfer.reading.formats import CHUNK_ROWS, read_chunks


def test_jsonl_is_read_in_bounded_memory(tmp_path: Path) -> None:
    data = tmp_path / "big.jsonl"
    line = '{"prompt": "' + "x" * 500 + '"}\n'
    with data.open("w") as fh:
        for _ in range(120_000):
            fh.write(line)
    size = data.stat().st_size  # ~62 MB
    tracemalloc.start()
    rows = 0
    for chunk in read_chunks(data, "jsonl"):
        assert len(chunk) <= CHUNK_ROWS
        rows += len(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rows == 120_000
    assert peak < 12_000_000, f"peak {peak} bytes for a {size}-byte file"  # about two chunks, not the file


def test_parquet_is_read_in_batches(tmp_path: Path) -> None:
    data = tmp_path / "big.parquet"
    n = 100_000
    pq.write_table(pa.table({"prompt": [f"{i} " + "y" * 400 for i in range(n)]}), data, row_group_size=5000)
    tracemalloc.start()
    lines = []
    for chunk in read_chunks(data, "parquet"):
        lines.append(chunk[-1].line)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert lines[-1] == n
    assert peak < 12_000_000  # about two batches, not the 40 MB of text


def test_csv_line_numbers_follow_multiline_cells(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(b'prompt\n"a\nb\nc"\nsecond\n')
    rows = [r for chunk in read_chunks(data, "csv") for r in chunk]
    assert [(r.line, r.data) for r in rows] == [(4, {"prompt": "a\nb\nc"}), (5, {"prompt": "second"})]
