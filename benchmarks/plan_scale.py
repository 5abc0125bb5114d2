"""Plan a generated N-row JSONL dataset and compare with tiktoken alone encoding the same prompts.

    .venv/bin/python benchmarks/plan_scale.py [--rows 1000000] [--repeat 3]

Prompts are real sentences (STS-B and banking77, from ../shared/data) combined into varied, mostly distinct prompts.
In one invocation: (1) tiktoken's o200k_base encodes every prompt (`encode_ordinary` in a loop), (2) `costinfer plan`
runs as a subprocess with a fresh store (the semantic tier off: embedding a million texts is measured apart, in
benchmarks/embeddings.py). Prints `plan time / tiktoken time` (target <= 2.0) and the peak resident memory of the
plan's processes together, its worker processes included (target < 1.5 GB). `--repeat` pairs of timings run in the
invocation (this machine is noisy); the ratio printed last is their median.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, real_texts, timed_costinfer


def generate(path: Path, rows: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    pool = real_texts()
    prompts = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            prompt = f"Classify the intent of this message: {rng.choice(pool)} {rng.choice(pool)}"
            prompts.append(prompt)
            fh.write(json.dumps({"id": f"row-{i}", "prompt": prompt, "max_tokens": 16}) + "\n")
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="pairs of timings; the median ratio is the figure")
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"needs the reference data in {SHARED}")
    import tiktoken

    from costinfer.reading.tokens import seed_tiktoken_cache

    seed_tiktoken_cache("o200k_base")
    enc = tiktoken.get_encoding("o200k_base")
    ratios, peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "big.jsonl"
        prompts = generate(data, args.rows)
        for rep in range(args.repeat):
            t0 = time.perf_counter()
            tokens = sum(len(enc.encode_ordinary(p)) for p in prompts)
            tik_s = time.perf_counter() - t0
            store = Path(tmp) / f"s{rep}.duckdb"  # a fresh store each time
            plan_s, plan, tree_peak = timed_costinfer(
                "plan", str(data), "--store", str(store), "--json", "--no-semantic"
            )
            ratios.append(plan_s / tik_s)
            peaks.append(tree_peak / 2**20)
            print(f"run {rep + 1}: tiktoken alone {tik_s:.2f} s; costinfer plan {plan_s:.2f} s; ratio {ratios[-1]:.2f}")
        largest_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"rows = {args.rows}, distinct = {plan['distinct']}, prompt tokens (tiktoken) = {tokens}")
    print(f"plan time / tiktoken time = {statistics.median(ratios):.2f} (median of {args.repeat})")
    print(f"largest single process = {largest_mb:.0f} MB")
    print(f"peak memory of costinfer plan = {max(peaks):.0f} MB (all its processes at once, the most of the runs)")


if __name__ == "__main__":
    main()
