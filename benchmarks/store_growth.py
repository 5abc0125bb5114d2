"""Does storing a dataset's requests slow as the store grows? Store one dataset of --rows new requests into an empty
DuckDB store as ingestion does (``add_chunk``, writes of 98,304 rows, DuckDB on one core beside the workers), timing
each million; then a dataset of --rows new requests more beside them, and the first million again (every key stored).

    .venv/bin/python benchmarks/store_growth.py [--rows 5000000]

Prints the seconds of each million and `last million / first million` (target <= 1.2: storing stays linear in the
dataset; each write used to scan every stored request, so the last million of 5 took 1.5x the first). The second
dataset shows the cost that does grow with the store: its stored keys are read once (about 0.3-0.5 s a million).
Requests are synthetic (a key, a short chat body): the cost measured is the store's, not reading or hashing a file.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from costinfer.store.store import Store

BATCH = 98_304  # rows a write, as ingestion writes (costinfer/reading/ingest.py)


def batch(dataset: int, start: int, n: int) -> tuple[pa.Table, pa.Table]:
    keys = [hashlib.sha256(f"{dataset}:{i}".encode()).hexdigest() for i in range(start, start + n)]
    bodies = [f'{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"question {dataset}-{i}"}}]}}'
              for i in range(start, start + n)]  # fmt: skip
    items = pa.table(
        {
            "row_idx": pa.array(range(start, start + n), pa.int64()),
            "line": pa.array(range(start + 1, start + n + 1), pa.int64()),
            "row_id": pa.array([None] * n, pa.string()),
            "key": pa.array(keys, pa.string()),
            "metadata": pa.array([None] * n, pa.string()),
            "priority": pa.array([0] * n, pa.int32()),
        }
    )
    requests = pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "endpoint": pa.array(["/v1/chat/completions"] * n).dictionary_encode(),
            "model": pa.array(["gpt-4o-mini"] * n).dictionary_encode(),
            "body": pa.array(bodies, pa.string()),
            "input_tokens": pa.array([12] * n, pa.int32()),
            "max_tokens": pa.array([256] * n, pa.int32()),
            "input_bound": pa.array([14] * n, pa.int32()),
            "norm_key": pa.array(keys, pa.string()),
            "group_key": pa.array([None] * n, pa.string()),
        }
    )
    return items, requests


def store_dataset(store: Store, run_id: str, dataset: int, rows: int, start: int = 0) -> list[float]:
    """Store ``rows`` requests of ``dataset`` as one run; the seconds of each million rows."""
    store.create_run(run_id, run_id, {"model": "gpt-4o-mini"})
    store.reset_ingest(run_id)
    store.share_cores(1)
    per_million, elapsed = [], 0.0
    for first in range(start, start + rows, BATCH):
        items, requests = batch(dataset, first, min(BATCH, start + rows - first))
        t0 = time.perf_counter()
        store.add_chunk(run_id, items, requests, None)
        elapsed += time.perf_counter() - t0
        done = first + items.num_rows - start
        if done // 1_000_000 > len(per_million) or done == rows:
            per_million.append(elapsed)
            elapsed = 0.0
    store.finish_ingest(run_id)
    return per_million


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "growth.duckdb", live=False)
        try:
            times = store_dataset(store, "first", 0, args.rows)
            print("one dataset, each million:", " ".join(f"{t:.2f}" for t in times), "s", flush=True)
            second = store_dataset(store, "second", 1, args.rows)
            print(f"a second dataset beside it, each million: {' '.join(f'{t:.2f}' for t in second)} s", flush=True)
            again = store_dataset(store, "again", 0, min(args.rows, 1_000_000))
            print(f"the first million again (every request stored): {sum(again):.2f} s")
        finally:
            store.close()
    print(f"last million / first million = {times[-1] / times[0]:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
