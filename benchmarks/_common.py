"""Helpers shared by the benchmarks: a standalone simulator process and generated datasets."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@contextmanager
def simulator_process(*extra: str) -> Iterator[str]:
    """Start ``costinfer simulate serve`` on a free loopback port in its own process; yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "costinfer", "simulate", "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError("the simulator did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def write_prompts(path: Path, n: int, max_tokens: int = 16) -> list[dict[str, object]]:
    """N distinct short prompts; returns the chat bodies costinfer will send for them."""
    bodies = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            prompt = f"Question {i}: what is {i} plus {i * 7 % 13}? Answer briefly."
            fh.write(json.dumps({"id": f"q{i}", "prompt": prompt, "max_tokens": max_tokens}) + "\n")
            bodies.append(
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
            )
    return bodies


def real_texts(banking_splits: tuple[str, ...] = ("train.csv",), arena: bool = False) -> list[str]:
    """Sentences written by people, from ../shared/data: every STS-B sentence, banking77 queries, arena prompts."""
    out: list[str] = []
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        with (SHARED / "stsb" / name).open(encoding="utf-8") as fh:
            for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
                if len(row) >= 7:
                    out += [row[5], row[6]]
    for name in banking_splits:
        with (SHARED / "banking77" / name).open(encoding="utf-8", newline="") as fh:
            out += [r["text"] for r in csv.DictReader(fh)]
    if arena:
        with (SHARED / "arena_hard" / "question_v2.0.jsonl").open(encoding="utf-8") as fh:
            out += [json.loads(line)["prompt"] for line in fh]
    return out


def timed_costinfer(*args: str) -> tuple[float, dict[str, Any], int]:
    """Run ``python -m costinfer ARGS`` (a command printing one JSON object with --json) as a subprocess; return its
    wall time (start-up included), that object, and the peak resident memory of its process tree in bytes (worker
    processes included: the sum over processes alive at once, sampled every 100 ms). Exits if costinfer fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "costinfer", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"costinfer {args[0]} failed ({proc.returncode}): {err[-2000:].strip()}")
    try:
        return elapsed, json.loads(out), peak[0]
    except json.JSONDecodeError:
        sys.exit(f"costinfer {args[0]} printed no JSON: {out[:300]!r} / {err[-500:]!r}")


def _tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc (Linux): a few small reads per sample."""
    total = 0
    todo = [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * page
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    todo.extend(int(child) for child in fh.read().split())
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total
