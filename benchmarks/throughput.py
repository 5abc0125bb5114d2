"""Throughput of `costinfer run` against a bare aiohttp loop, same requests, same zero-latency simulator.

    .venv/bin/python benchmarks/throughput.py [--n 20000] [--concurrency 64]

Both send the same N distinct requests to one simulator process on loopback: first a bare aiohttp loop (a semaphore
and a gather, nothing saved), then `costinfer run` as a subprocess with a fresh store (reading, keys, the budget
guard, durable commits, the results file: all of it, start-up included; the semantic tier is turned off with
--no-semantic, since its cost is embedding, measured by benchmarks/embeddings.py). Prints
`throughput ratio = costinfer / bare`.
Target (issue 2): at least 0.8 at N = 20,000 and concurrency 64.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import simulator_process, write_prompts


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, simulator_process() as url:
        data = Path(tmp) / "prompts.jsonl"
        bodies = write_prompts(data, args.n)
        t0 = time.perf_counter()
        ok = asyncio.run(bare_loop(url, bodies, args.concurrency))
        bare_s = time.perf_counter() - t0
        assert ok == args.n, f"bare loop: {ok} answers of {args.n}"
        cmd = [
            sys.executable,
            "-m",
            "costinfer",
            "run",
            str(data),
            "--provider",
            "simulate",
            "--base-url",
            url,
            "--store",
            str(Path(tmp) / "store.duckdb"),
            "--output",
            str(Path(tmp) / "out.jsonl"),
            "--concurrency",
            str(args.concurrency),
            "--budget",
            "100",
            "--json",
            "--quiet",
            "--no-semantic",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        ci_s = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"costinfer run failed ({proc.returncode}): {proc.stderr.strip()}")
        summary = json.loads(proc.stdout)
        assert summary["calls"] == args.n, summary
    bare_rps, ci_rps = args.n / bare_s, args.n / ci_s
    print(f"n = {args.n}, concurrency = {args.concurrency}")
    print(f"bare aiohttp loop: {bare_s:.2f} s, {bare_rps:.0f} requests/s")
    print(f"costinfer run:     {ci_s:.2f} s, {ci_rps:.0f} requests/s (start-up, reading and writing included)")
    calls_rps = args.n / summary["calls_elapsed_s"]
    print(f"costinfer calling phase alone: {summary['calls_elapsed_s']:.2f} s, {calls_rps:.0f} requests/s")
    print(f"calling-phase ratio = {calls_rps / bare_rps:.2f} (steady state, without start-up, reading and writing)")
    phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in summary.get("timings", {}).items())
    print(f"costinfer phases (s): start-up {ci_s - summary['elapsed_s']:.2f}, {phases}")
    print(f"throughput ratio = costinfer / bare = {ci_rps / bare_rps:.2f}")


if __name__ == "__main__":
    main()
