"""Requests per second of bare client loops against one simulator process: httpx's default transport vs aiohttp.

    .venv/bin/python benchmarks/http_clients.py [--n 5000] [--concurrency 64]

The choice of aiohttp for model calls rests on this measurement (CHANGELOG). Prints each rate and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import simulator_process, write_prompts
from throughput import bare_loop


async def httpx_loop(url: str, bodies: list[dict[str, object]], concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(body: dict[str, object]) -> None:
            nonlocal ok
            async with sem:
                resp = await client.post(
                    f"{url}/chat/completions", content=orjson.dumps(body), headers={"content-type": "application/json"}
                )
                ok += bool(orjson.loads(resp.content)["choices"][0]["message"]["content"])

        await asyncio.gather(*(one(b) for b in bodies))
    return ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, simulator_process() as url:
        bodies = write_prompts(Path(tmp) / "p.jsonl", args.n)
        rates = {}
        for name, loop in (("aiohttp", bare_loop), ("httpx", httpx_loop)):
            t0 = time.perf_counter()
            assert asyncio.run(loop(url, bodies, args.concurrency)) == args.n
            rates[name] = args.n / (time.perf_counter() - t0)
            print(f"{name}: {rates[name]:.0f} requests/s")
    print(f"ratio httpx / aiohttp = {rates['httpx'] / rates['aiohttp']:.2f}")


if __name__ == "__main__":
    main()
