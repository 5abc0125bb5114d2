"""Helpers shared by the benchmarks: a standalone simulator process and generated datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
