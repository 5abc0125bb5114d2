"""Embeddings through the local engine and through a local Ray (issue 16), and what a first run of 10 million prompts
would need.

    .venv/bin/python benchmarks/ray_embed.py [--texts 4000] [--repeat 2]

On the same real texts (banking77 train, distinct), each into a fresh store:
1. the local engine (`Embedder(store).embed`, this process, torch on every core);
2. the Ray engine on a local Ray started for the purpose (one worker per CPU, one torch thread each), end to end
   (Ray's start, the workers' model loads, the embedding, the driver's store writes);
3. each Ray worker's own throughput (texts / seconds inside the model), which is what adding workers multiplies;
4. the driver's store writes alone: the same vectors written again into a fresh store, SAVE_ROWS at a time, as the
   driver does (the store has one writer). Use --texts of at least a few times SAVE_ROWS for this figure.

Prints `ray / local = ...` (end to end, same invocation) and, from the per-worker figure, how many workers embed 10
million prompts in 10 minutes, and what share of the driver's time the store writes take at that rate.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
TARGET_TEXTS, TARGET_SECONDS = 10_000_000, 600


def main() -> None:
    from costinfer.reuse.embeddings import SAVE_ROWS, Embedder
    from costinfer.store import Store

    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"needs the reference data in {SHARED}")
    with (SHARED / "banking77" / "train.csv").open(encoding="utf-8", newline="") as fh:
        texts = list(dict.fromkeys(r["text"] for r in csv.DictReader(fh)))[: args.texts]
    local_times, ray_times, per_worker, write_rates = [], [], [], []
    vectors = np.zeros((0, 0), dtype=np.float32)
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            with Store.open(Path(tmp) / "local.duckdb") as store:
                embedder = Embedder(store)
                embedder._load()  # the model load is not the engine's work: outside the timing, as Ray's is not
                t0 = time.perf_counter()
                vectors = embedder.embed(texts)
                local_times.append(time.perf_counter() - t0)
            with Store.open(Path(tmp) / "ray.duckdb") as store:
                embedder = Embedder(store, engine="ray")
                t0 = time.perf_counter()
                embedder.embed(texts)
                ray_times.append(time.perf_counter() - t0)
                seconds, done = embedder.ray.worker_seconds, embedder.ray.worker_texts
                per_worker.extend(done[pid] / seconds[pid] for pid in seconds if seconds[pid] > 0)
                workers = len(seconds)
            with Store.open(Path(tmp) / "writes.duckdb") as store:
                writer = Embedder(store)
                hashes = [f"{i:032x}" for i in range(len(texts))]
                t0 = time.perf_counter()
                step = SAVE_ROWS  # as the driver writes what the workers send back
                for start in range(0, len(texts), step):
                    writer._save(hashes[start : start + step], vectors[start : start + step])
                write_rates.append(len(texts) / (time.perf_counter() - t0))
    local, on_ray = min(local_times), min(ray_times)
    worker_rate = float(np.median(per_worker))
    write_rate = max(write_rates)
    print(
        f"{len(texts)} texts: local engine {local:.2f} s ({len(texts) / local:.0f}/s); Ray engine on a local Ray with "
        f"{workers} workers {on_ray:.2f} s end to end ({len(texts) / on_ray:.0f}/s, Ray's start and the workers' "
        f"model loads included)"
    )
    print(f"ray / local = {local / on_ray:.2f} (throughput, end to end, best of {args.repeat})")
    print(
        f"per Ray worker (1 CPU, 1 torch thread): median {worker_rate:.0f} texts/s inside the model "
        f"(each of {len(per_worker)} worker runs: {', '.join(f'{r:.0f}' for r in per_worker)})"
    )
    needed = TARGET_TEXTS / TARGET_SECONDS
    workers_needed = int(np.ceil(needed / worker_rate))
    print(
        f"10 million prompts in 10 minutes: {needed:.0f} texts/s = {workers_needed} such workers (CPU cores); "
        f"the driver's store writes run at {write_rate:.0f} vectors/s here, so at {needed:.0f}/s they take "
        f"{needed / write_rate:.0%} of the driver's time"
    )


if __name__ == "__main__":
    main()
