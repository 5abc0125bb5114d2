"""Embedding throughput of costinfer vs a bare SentenceTransformer.encode, and lookup time at scale.

    .venv/bin/python benchmarks/embeddings.py [--texts 4000] [--stored 1000000] [--repeat 3]

1. The same real texts (banking77 train) are embedded by a bare sentence-transformers torch
   `model.encode(texts, batch_size=64)` and by costinfer's Embedder with a fresh store (its encoder, chosen by
   COSTINFER_ENCODER: OpenVINO by default where installed, the fp32 model, computed in bf16 on CPUs with AMX;
   hashing, length-sorted batches, storing the vectors in DuckDB). Prints `embedding throughput ratio = costinfer /
   bare` (issue 25: target >= 3.0) and the encoder's agreement with the bare vectors (lowest cosine, target >=
   0.99). `benchmarks/encoders.py` compares the encoders' reuse decisions and precision.
   Then the whole semantic tier on the same texts as a run's prompts (`dedupe.resolve` on a fresh store: embedding,
   storing, search, and every guard on every candidate pair, the word guards' lemmatizing and word embeddings
   included), best of --repeat runs against the best of as many bare encodes (the first tier run also loads the
   lemmatizer's lexicon, once per process: all runs are printed). Prints `semantic tier throughput
   ratio = tier / bare` (issue 15: >= 0.9 with the guards on) and how many pairs the guards checked.
2. Lookup: --stored random unit vectors (384 dimensions) in an exact inner-product index (faiss IndexFlatIP), in
   HNSW over float32 vectors (M=32, efSearch=64: the tier's index before it kept half-precision copies), and in the
   tier's own index above EXACT_SEARCH_LIMIT vectors in a group (HNSW over half-precision vectors, the same M and
   efSearch). Prints milliseconds per query for each, each HNSW's build time, its size (vectors and links), and its
   recall@1 against exact search, at several sizes. Random vectors have no near-duplicates: the tier's decisions at
   scale were compared on real prompts (CHANGELOG).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def throughput(n: int) -> None:
    from costinfer.reuse.embeddings import Embedder
    from costinfer.store import Store

    with (SHARED / "banking77" / "train.csv").open(encoding="utf-8", newline="") as fh:
        texts = list(dict.fromkeys(r["text"] for r in csv.DictReader(fh)))[:n]
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "s.duckdb") as store:
        embedder = Embedder(store)
        embedder.encode(texts[:64])  # loaded (and converted, the first time) and warmed up, outside the timings
        model = _bare_model()
        t0 = time.perf_counter()
        reference = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        bare = time.perf_counter() - t0
        t0 = time.perf_counter()
        vectors = embedder.embed(texts)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        embedder.embed(texts)
        again = time.perf_counter() - t0
    print(
        f"{len(texts)} texts: bare encode {bare:.2f} s ({len(texts) / bare:.0f}/s), costinfer {ours:.2f} s "
        f"({len(texts) / ours:.0f}/s, stored), from the store again {again:.3f} s"
    )
    cosines = (vectors * reference).sum(axis=1)
    print(
        f"encoder {embedder.encoder_name}: lowest cosine to the bare vectors {cosines.min():.4f} "
        f"(mean {cosines.mean():.5f}, {int((cosines < 0.99).sum())} texts below 0.99)"
    )
    print(f"embedding throughput ratio = costinfer / bare = {bare / ours:.2f}")


def _bare_model() -> Any:
    """A bare sentence-transformers model on torch, the CPU (the baseline), loaded and warmed up."""
    from sentence_transformers import SentenceTransformer

    from costinfer.reuse.embeddings import DEFAULT_MODEL, model_source

    model = SentenceTransformer(model_source(DEFAULT_MODEL), device="cpu")
    model.encode(["warm up"] * 64, batch_size=64)
    return model


def tier(n: int, repeat: int) -> None:
    """The semantic tier's whole work on a run of ``n`` banking77 prompts, against a bare encode of the same texts,
    each timed ``repeat`` times in turn (a fresh store for each tier run); the best of each is compared."""
    import json
    import subprocess

    import duckdb

    from costinfer.reuse import tiers as dedupe
    from costinfer.reuse.embeddings import Embedder
    from costinfer.store import Store

    with (SHARED / "banking77" / "train.csv").open(encoding="utf-8", newline="") as fh:
        texts = list(dict.fromkeys(r["text"] for r in csv.DictReader(fh)))[:n]
    bare_times, tier_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        data.write_text("".join(json.dumps({"id": str(i), "prompt": t}) + "\n" for i, t in enumerate(texts)))
        cli = Path(sys.executable).with_name("costinfer")
        for attempt in range(repeat):
            path = Path(tmp) / f"s{attempt}.duckdb"
            subprocess.run([cli, "plan", data, "--no-semantic", "--store", path], check=True, capture_output=True)
            with duckdb.connect(str(path), read_only=True) as db:
                row = db.execute("select run_id from runs").fetchone()
            assert row is not None
            with Store.open(path) as store:
                embedder = Embedder(store)
                embedder.encode(texts[:64])  # loaded and warmed up
                model = _bare_model()
                t0 = time.perf_counter()
                model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
                bare_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                stats = dedupe.resolve(store, str(row[0]), embedder)
                tier_times.append(time.perf_counter() - t0)
    bare, whole = min(bare_times), min(tier_times)
    checked = stats.semantic + stats.semantic_vetoed
    vetoes = ", ".join(f"{k}: {v}" for k, v in sorted(stats.vetoes.items(), key=lambda kv: -kv[1]))
    print(
        f"semantic tier on {len(texts)} prompts: {whole:.2f} s ({len(texts) / whole:.0f}/s) against a bare encode "
        f"{bare:.2f} s (best of {repeat} each: tier {', '.join(f'{t:.2f}' for t in tier_times)}; bare "
        f"{', '.join(f'{t:.2f}' for t in bare_times)}); {checked} candidate pairs checked by the guards, "
        f"{stats.semantic_vetoed} vetoed ({vetoes}), "
        f"{stats.semantic} reused"
    )
    print(f"semantic tier throughput ratio = tier / bare = {bare / whole:.2f}")


def lookup(stored: int, queries: int = 200) -> None:
    import faiss

    from costinfer.reuse import tiers

    rng = np.random.default_rng(0)
    dim = 384
    for size in sorted({10_000, 50_000, 200_000, stored}):
        base = rng.standard_normal((size, dim), dtype=np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        q = base[rng.integers(0, size, queries)] + 0.05 * rng.standard_normal((queries, dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        flat = faiss.IndexFlatIP(dim)
        flat.add(base)
        t0 = time.perf_counter()
        for i in range(queries):
            flat.search(q[i : i + 1], 8)
        flat_ms = (time.perf_counter() - t0) / queries * 1000
        _, truth = flat.search(q, 1)
        del flat
        line = [f"{size:>9} stored: exact {flat_ms:7.3f} ms/query"]
        hnsw_f32 = faiss.IndexHNSWFlat(dim, tiers.HNSW_M, faiss.METRIC_INNER_PRODUCT)  # the tier's index before fp16
        tier_index = tiers._Index(base, tiers.EXACT_SEARCH_LIMIT + 1)  # what the tier builds above the limit: fp16
        for name, index in (("HNSW float32", hnsw_f32), ("the tier's HNSW fp16", tier_index.index)):
            t0 = time.perf_counter()
            for start in range(0, size, tiers.SEARCH_ROWS):
                index.add(base[start : start + tiers.SEARCH_ROWS])
            build = time.perf_counter() - t0
            index.hnsw.efSearch = tiers.HNSW_EF_SEARCH
            t0 = time.perf_counter()
            for i in range(queries):
                index.search(q[i : i + 1], 8)
            ms = (time.perf_counter() - t0) / queries * 1000
            _, got = index.search(q, 1)
            recall = float((got[:, 0] == truth[:, 0]).mean())
            storage = faiss.downcast_index(index.storage)
            mb = (storage.ntotal * storage.code_size + index.hnsw.neighbors.size() * 4) / 2**20
            line.append(f"{name} {ms:6.3f} ms/query (built in {build:6.1f} s, {mb:,.0f} MB, recall@1 {recall:.3f})")
            index.reset()
        print("; ".join(line), flush=True)
        del base, hnsw_f32, tier_index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="times the semantic tier and its baseline are timed")
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"needs the reference data in {SHARED}")
    throughput(args.texts)
    tier(args.texts, args.repeat)
    if args.stored:
        lookup(args.stored)


if __name__ == "__main__":
    main()
