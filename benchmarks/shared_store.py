"""The calling path on a shared PostgreSQL store against the embedded DuckDB store, same invocation.

    .venv/bin/python benchmarks/shared_store.py [--n 5000] [--concurrency 64] [--repeat 3]

Each pair runs `costinfer run` (a subprocess, the semantic tier off) over the same N distinct requests against one
zero-latency simulator, once with a fresh DuckDB file and once with a fresh database on a throwaway PostgreSQL cluster
(tests/pgserver.py: Debian's postgresql package, fsync off as for any throwaway cluster). The figure is the calling
phase's requests per second on PostgreSQL over DuckDB's (claims, the ledger and the cache written to PostgreSQL before
an answer counts, against DuckDB's commits); the whole command's ratio is printed beside it.
Target (issue 24): at least 0.8.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import simulator_process, timed_costinfer, write_prompts

from tests import pgserver


def run(url: str, data: Path, store: str, out: Path, n: int, concurrency: int) -> tuple[float, float]:
    elapsed, summary, _ = timed_costinfer(
        "run", str(data), "--provider", "simulate", "--base-url", url, "--store", store, "--output", str(out),
        "--concurrency", str(concurrency), "--budget", "100", "--json", "--quiet", "--no-semantic",
    )  # fmt: skip
    assert summary["calls"] == n, summary
    return elapsed, float(summary["calls_elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs; the median ratio is the figure")
    args = parser.parse_args()
    why = pgserver.unavailable()
    if why:
        sys.exit(f"no PostgreSQL cluster can be started here: {why}")
    calling, whole = [], []
    with tempfile.TemporaryDirectory() as tmp, simulator_process() as url, pgserver.cluster() as cluster:
        data = Path(tmp) / "prompts.jsonl"
        write_prompts(data, args.n)
        for rep in range(args.repeat):
            duck_s, duck_calls = run(url, data, str(Path(tmp) / f"s{rep}.duckdb"), Path(tmp) / "a.jsonl", args.n,
                                     args.concurrency)  # fmt: skip
            pg = pgserver.new_database(cluster, f"bench{rep}")
            pg_s, pg_calls = run(url, data, pg, Path(tmp) / "b.jsonl", args.n, args.concurrency)
            calling.append(duck_calls / pg_calls)
            whole.append(duck_s / pg_s)
            print(
                f"pair {rep + 1}: DuckDB calling {duck_calls:.2f} s ({args.n / duck_calls:.0f}/s), "
                f"whole {duck_s:.2f} s; PostgreSQL calling {pg_calls:.2f} s ({args.n / pg_calls:.0f}/s), "
                f"whole {pg_s:.2f} s"
            )
    print(f"n = {args.n}, concurrency = {args.concurrency}, {args.repeat} pairs")
    print(f"whole command ratio = PostgreSQL / DuckDB = {statistics.median(whole):.2f} (median)")
    print(f"calling-phase ratio = PostgreSQL / DuckDB = {statistics.median(calling):.2f} (median; target >= 0.8)")


if __name__ == "__main__":
    main()
