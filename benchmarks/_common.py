"""Helpers shared by the benchmarks: a standalone simulator process and generated datasets."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
