"""Throughput of `costinfer run` against a bare aiohttp loop, same requests, same zero-latency simulator.

    .venv/bin/python benchmarks/throughput.py [--n 20000] [--concurrency 64]

Both send the same N distinct requests to one simulator process on loopback: first a bare aiohttp loop (a semaphore
and a gather, nothing saved), then `costinfer run` as a subprocess with a fresh store (reading, keys, the budget
guard, durable commits, the results file: all of it, start-up included; the semantic tier is turned off with
--no-semantic, since its cost is embedding, measured by benchmarks/embeddings.py). Each of
`--repeat` pairs runs both (this machine is noisy); prints `throughput ratio = costinfer / bare`, the median.
Target (issue 2): at least 0.8 at N = 20,000 and concurrency 64.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import simulator_process, timed_costinfer, write_prompts


async def bare_loop(url: str, bodies: list[dict[str, object]], concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(body: dict[str, object]) -> None:
            nonlocal ok
            async with (
                sem,
                session.post(
                    f"{url}/chat/completions", data=orjson.dumps(body), headers={"content-type": "application/json"}
                ) as resp,
            ):
                data = orjson.loads(await resp.read())
                ok += bool(data["choices"][0]["message"]["content"])

        await asyncio.gather(*(one(b) for b in bodies))
    return ok


def costinfer_run(url: str, data: Path, store: Path, out: Path, n: int, concurrency: int) -> tuple[float, dict]:
    elapsed, summary, _ = timed_costinfer(
        "run",
        str(data),
        "--provider",
        "simulate",
        "--base-url",
        url,
        "--store",
        str(store),
        "--output",
        str(out),
        "--concurrency",
        str(concurrency),
        "--budget",
        "100",
        "--json",
        "--quiet",
        "--no-semantic",
    )
    assert summary["calls"] == n, summary
    return elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs; the median ratio is the figure")
    args = parser.parse_args()
    ratios, call_ratios = [], []
    with tempfile.TemporaryDirectory() as tmp, simulator_process() as url:
        data = Path(tmp) / "prompts.jsonl"
        bodies = write_prompts(data, args.n)
        for rep in range(args.repeat):
            t0 = time.perf_counter()
            ok = asyncio.run(bare_loop(url, bodies, args.concurrency))
            bare_s = time.perf_counter() - t0
            assert ok == args.n, f"bare loop: {ok} answers of {args.n}"
            store, out = Path(tmp) / f"store-{rep}.duckdb", Path(tmp) / f"out-{rep}.jsonl"  # a fresh store each time
            ci_s, summary = costinfer_run(url, data, store, out, args.n, args.concurrency)
            bare_rps, ci_rps = args.n / bare_s, args.n / ci_s
            calls_rps = args.n / summary["calls_elapsed_s"]
            ratios.append(ci_rps / bare_rps)
            call_ratios.append(calls_rps / bare_rps)
            phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in summary.get("timings", {}).items())
            print(f"run {rep + 1}: bare aiohttp loop {bare_s:.2f} s ({bare_rps:.0f} requests/s)", end="; ")
            print(f"costinfer run {ci_s:.2f} s")
            print(f"  costinfer phases (s): start-up and exit {ci_s - summary['elapsed_s']:.2f}, {phases}")
            print(f"  ratio {ratios[-1]:.2f}; calling phase alone {call_ratios[-1]:.2f}")
    print(f"n = {args.n}, concurrency = {args.concurrency}, {args.repeat} pairs of runs")
    print(f"calling-phase ratio (median) = {statistics.median(call_ratios):.2f} (without start-up, reading, writing)")
    print(f"throughput ratio = costinfer / bare = {statistics.median(ratios):.2f} (median)")


if __name__ == "__main__":
    main()
