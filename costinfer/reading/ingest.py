"""Read a dataset into the store, chunk by chunk: items, distinct request bodies and rejects.

Each chunk becomes tables on its own (``chunks.py``): inline for small files, CSV and Parquet, and in worker
processes for large JSONL files, whose lines can be cut into blocks without parsing them. Chunks are stored in input
order, many per transaction; what spans chunks (a request seen before, an id seen before) is settled in SQL when
ingestion ends. Memory stays bounded by the chunks in flight, so a dataset larger than memory ingests fine.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from costinfer.errors import ConfigError, InputError
from costinfer.pricing.catalog import Catalog, ModelPrice
from costinfer.progress import ProgressSink
from costinfer.reading.allocator import keep_freed_memory
from costinfer.reading.chunks import (
    ChunkJob,
    ChunkProcessor,
    ChunkResult,
    start_worker,
    worker_jsonl_block,
    worker_jsonl_span,
)
from costinfer.reading.formats import compression_of, jsonl_blocks, jsonl_spans, read_chunks, row_kind
from costinfer.reading.rows import RowSpec, did_you_mean
from costinfer.store.faces import Dataset

# From this size on, counting uses quicktok's batch counter: it loads 0.25 s slower than tiktoken, then counts faster.
FAST_COUNT_BYTES = 16 * 1024 * 1024
# From this size on, a JSONL file is parsed, keyed and counted in worker processes (start-up costs about a second).
PARALLEL_BYTES = 32 * 1024 * 1024
# Rows stored per transaction. DuckDB writes a batch of a row group (122,880 rows) or more straight to the database
# file, smaller ones twice (its log, then the file): 3.8 s against 6.6 s for 1,000,000 rows in batches of 65,536. The
# size also changes what is left to checkpoint when the store closes, in ways measured rather than derived: planning
# 1,000,000 rows closed in 2.3 s with batches of 131,072, 1.0 s with 262,144 or 393,216, 0.08 s with 196,608.
# What is held until written (the workers' results, as received) is most of this process's memory while it reads:
# benchmarks/plan_scale.py at 1,000,000 rows (2026-12-06, DuckDB bounded at 512 MB) planned in 21.7-22.8 s with
# 98,304 rows and 24.9-25.5 s with 122,880 (196,608 and 1 GB: 21.1-21.7 s); all its processes together peaked at
# 1,353 MB with 98,304 against 1,485 MB with 196,608 (1,556 MB at 1 GB).
WRITE_ROWS = 98304
# Bytes of JSONL lines sent to a worker at once (about 30,000 short rows).
BLOCK_BYTES = 4 << 20


def ingest_workers(size: int) -> int:
    """Worker processes for a JSONL file of ``size`` bytes: 0 (inline) below ``PARALLEL_BYTES``.
    ``COSTINFER_INGEST_WORKERS`` overrides (0 = always inline; n = n workers for any size)."""
    forced = os.environ.get("COSTINFER_INGEST_WORKERS", "").strip()
    if forced:
        if not forced.isdigit():
            raise ConfigError(f"COSTINFER_INGEST_WORKERS must be a whole number of processes, got '{forced}'")
        return int(forced)
    if size < PARALLEL_BYTES:
        return 0
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass
class Ingest:
    store: Dataset
    run_id: str
    path: Path
    fmt: str
    spec: RowSpec
    endpoint: str
    provider: str
    catalog: Catalog
    label: str = ""  # what messages call the input (the path as given, or <stdin>)
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    semantic_opt_out: set[str] = field(default_factory=set)  # keys with a row that must not take a semantic answer
    own_model: set[str] = field(default_factory=set)  # routing on: keys with a row that named its own model
    _notes: set[str] = field(default_factory=set)
    _unknown: dict[str, int] = field(default_factory=dict)

    def notes(self) -> list[str]:
        found = sorted(self._notes)
        if self._unknown:
            found.insert(0, unknown_fields_warning(self._unknown, self.spec, row_kind(self.fmt)))
        return found

    def run(self, progress: ProgressSink) -> None:
        progress.phase("reading", None)
        size = self.path.stat().st_size
        if size == 0:
            raise InputError(f"{self.label or self.path}: the file is empty: no rows to run")
        job = ChunkJob(self.spec, self.endpoint, self.provider, self.catalog, fast_count=size >= FAST_COUNT_BYTES)
        workers = ingest_workers(size) if self.fmt == "jsonl" else 0
        results = self._pooled(job, workers) if workers else self._inline(job)
        rows = 0
        held: list[ChunkResult] = []
        held_rows = 0
        for result in results:
            _shift(result, rows)
            rows += result.rows
            held.append(result)
            held_rows += result.rows
            self.semantic_opt_out.update(result.opt_out)
            self.own_model.update(result.own_model)
            self._notes.update(result.notes)
            for name, line in result.unknown_fields.items():
                self._unknown.setdefault(name, line)
            for model in result.models:
                if model not in self.prices:
                    self.prices[model] = self.catalog.lookup(model, self.provider)
            if held_rows >= WRITE_ROWS:
                self._write(held)
                held, held_rows = [], 0
            progress.advance(rows, Decimal(0))
        self._write(held)
        if rows == 0:
            raise InputError(f"{self.label or self.path}: the file holds no rows")

    def _inline(self, job: ChunkJob) -> Iterator[ChunkResult]:
        processor = ChunkProcessor(job)
        if self.fmt == "jsonl":  # blocks of lines, as workers get them: faster than a row at a time
            for first_line, block in jsonl_blocks(self.path, BLOCK_BYTES):
                yield processor.jsonl_block(first_line, block)
            return
        for chunk in read_chunks(self.path, self.fmt):
            yield processor.process(chunk)

    def _pooled(self, job: ChunkJob, workers: int) -> Iterator[ChunkResult]:
        """Blocks of lines to worker processes, results back in input order, a few blocks in flight."""
        keep_freed_memory()  # the results, as received, are the same sizes block after block
        self.store.share_cores(workers)
        context = multiprocessing.get_context("spawn")  # no fork: this process runs DuckDB's threads
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker, initargs=(job, os.getpid()))
        try:
            in_flight: list[Future[ChunkResult]] = []
            for task in self._block_tasks():
                with signals_held():  # a worker spawned by this submit gets its start-up data whole
                    in_flight.append(pool.submit(*task))
                if len(in_flight) >= 4 * workers:
                    yield in_flight.pop(0).result()
            for future in in_flight:
                yield future.result()
        except BaseException:  # Ctrl-C, SIGTERM, an error: the workers stop now, not after the blocks they hold
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def _block_tasks(self) -> Iterator[tuple[Any, ...]]:
        """What each worker is sent: where its block lies in an uncompressed file, which it reads itself (sending
        1,000,000 rows' bytes down the pipes cost this process about 0.5 s), else the block's bytes."""
        if compression_of(self.path) is None:
            path = str(self.path)
            for first_line, offset, length in jsonl_spans(self.path, BLOCK_BYTES):
                yield worker_jsonl_span, path, first_line, offset, length
        else:
            for first_line, block in jsonl_blocks(self.path, BLOCK_BYTES):
                yield worker_jsonl_block, first_line, block

    def _write(self, held: list[ChunkResult]) -> None:
        """Store chunks in one transaction: DuckDB inserts fast in large batches, slowly in small ones. Inline, not
        in a writer thread: a thread contending for the GIL with the parser made ingestion slower."""
        if not held:
            return
        requests = [h.requests for h in held if h.requests is not None]
        rejects = [h.rejects for h in held if h.rejects is not None]
        self.store.add_chunk(
            self.run_id,
            pa.concat_tables([h.items for h in held]),
            pa.concat_tables(requests) if requests else None,  # a key two chunks share: the store keeps the first
            pa.concat_tables(rejects) if rejects else None,
        )


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held for a moment, then handled as usual. The pool spawns a worker inside ``submit`` and
    writes its start-up data down a pipe: interrupted half-way, the new worker reads a cut message and prints a
    traceback on the user's terminal. Held here, the signal is handled as soon as the worker has what it needs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            handler = previous[signal.Signals(caught[0])]
            if callable(handler):
                handler(caught[0], None)
            else:  # the default action (or none set from Python): as if the signal came now
                signal.raise_signal(caught[0])  # to this thread, now (os.kill could reach another thread later)


def unknown_fields_warning(unknown: dict[str, int], spec: RowSpec, kind: str = "line") -> str:
    """One line listing the fields costinfer ignored, where each first appeared, with a near miss named."""
    known = spec.known_fields()
    shown = sorted(unknown.items(), key=lambda item: (item[1], item[0]))[:10]
    parts = [f"'{name}' ({kind} {line}){did_you_mean(name, known)}" for name, line in shown]
    more = f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
    return (
        f"fields costinfer does not know were ignored (not sent): {', '.join(parts)}{more}; put extra data under "
        f"metadata, or pass --strict-fields to refuse such rows"
    )


def _shift(result: ChunkResult, offset: int) -> None:
    """Chunk-local row positions to the dataset's."""
    if not offset:
        return
    for name in ("items", "rejects"):
        table = getattr(result, name)
        if table is not None and table.num_rows:
            i = table.schema.get_field_index("row_idx")
            setattr(result, name, table.set_column(i, "row_idx", pc.add(table.column(i), offset)))
