"""Does costinfer use a provider's rate limit fully without earning 429s?

    .venv/bin/python benchmarks/rate_limits.py [--rpm 600] [--tpm 40000] [--seconds 120]

A simulator process enforces the limits over a sliding minute (429 past them, OpenAI's x-ratelimit-* headers).
`costinfer run` is told the limits (--rpm/--tpm) and given more rows than the window allows; after --seconds it gets
SIGTERM. Prints the achieved rate as a share of the allowed one (target >= 90%) and the share of requests answered
429 (target <= 1%), both read from the simulator's request log.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import simulator_process

from costinfer.core.tokens import TokenCounter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--tpm", type=int, default=40000)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        data = Path(tmp) / "d.jsonl"
        n = int(args.rpm * args.seconds / 60 * 1.5)
        counter = TokenCounter()
        prompt_tokens = 0
        with data.open("w") as fh:
            for i in range(n):
                prompt = f"Rate limit question number {i}, please answer."
                prompt_tokens += counter.count_body(
                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
                )
                fh.write(json.dumps({"prompt": prompt, "max_tokens": 32}) + "\n")
        with simulator_process(
            "--rpm", str(args.rpm), "--tpm", str(args.tpm), "--log", str(log), "--latency-ms", "200"
        ) as url:
            cmd = [
                sys.executable,
                "-m",
                "costinfer",
                "run",
                str(data),
                "--base-url",
                url,
                "--rpm",
                str(args.rpm),
                "--tpm",
                str(args.tpm),
                "--store",
                str(Path(tmp) / "s.duckdb"),
                "--output",
                str(Path(tmp) / "o.jsonl"),
                "-c",
                "32",
                "--quiet",
                "--on-over-budget",
                "partial",
            ]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(args.seconds)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
            time.sleep(0.5)
        entries = [json.loads(line) for line in log.read_text().splitlines()]
    if not entries:
        sys.exit("no request reached the simulator")
    span = entries[-1]["t"] - entries[0]["t"]
    ok = sum(e["status"] == 200 for e in entries)
    limited = sum(e["status"] == 429 for e in entries)
    tokens_per_call = 32 + prompt_tokens / n  # max_tokens plus the prompt: what the server counts against TPM
    allowed_per_min = min(args.rpm, args.tpm / tokens_per_call)
    achieved_per_min = ok / span * 60
    print(f"limits: {args.rpm} requests/min, {args.tpm} tokens/min -> about {allowed_per_min:.0f} calls/min allowed")
    print(f"{len(entries)} requests over {span:.1f} s: {ok} answered, {limited} answered 429")
    print(f"achieved rate = {achieved_per_min:.0f}/min = {achieved_per_min / allowed_per_min:.1%} of the allowed rate")
    print(f"429 share = {limited / len(entries):.2%} of requests")


if __name__ == "__main__":
    main()
