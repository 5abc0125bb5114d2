"""Start-up: a rerun of the sample data that the cache answers completely, against `costinfer --version`.

    .venv/bin/python benchmarks/startup.py [--repeat 5]

A first run fills a fresh store (the semantic tier on, as by default: it embeds the sample once); then each of
`--repeat` pairs times `costinfer --version` and the same run again (every row from the cache: 0 calls, 0 embeddings),
both as subprocesses. Prints both medians, their ratio and their difference. Target (issue 25): the rerun within 1.5 s
of `--version`: nothing heavy (torch, the embedding model, Ray) is imported or loaded when nothing is left to embed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "prompts.jsonl"


def timed(*args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "COSTINFER_SEMANTIC"}  # the default: the tier on
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "costinfer", *args], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"costinfer {args[0]} failed ({done.returncode}): {done.stderr[-1500:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store, out = Path(tmp) / "s.duckdb", Path(tmp) / "out.jsonl"
        run = ["run", str(SAMPLE), "--provider", "simulate", "--store", str(store), "-o", str(out), "--quiet", "--json"]
        first, _ = timed(*run)
        print(f"first run (fills the store, embeds the sample): {first:.2f} s")
        versions, reruns = [], []
        for _ in range(args.repeat):
            versions.append(timed("--version")[0])
            elapsed, printed = timed(*run)
            summary = json.loads(printed)
            assert summary["calls"] == 0 and summary["embeddings_computed"] == 0, summary
            reruns.append(elapsed)
    version, rerun = statistics.median(versions), statistics.median(reruns)
    print(
        f"costinfer --version: {version:.2f} s; rerun answered by the cache: {rerun:.2f} s (medians of {args.repeat})"
    )
    print(f"rerun / --version = {rerun / version:.2f}; rerun - --version = {rerun - version:.2f} s (target <= 1.5 s)")


if __name__ == "__main__":
    main()
