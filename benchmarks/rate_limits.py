"""Does costinfer use a provider's rate limit fully without earning 429s?

    .venv/bin/python benchmarks/rate_limits.py                       # the four scenarios below, side by side
    .venv/bin/python benchmarks/rate_limits.py --only bucket-short   # one of them
    .venv/bin/python benchmarks/rate_limits.py --window [--rpm 600] [--tpm 40000] [--seconds 120]

Each scenario runs `costinfer run` to completion against a simulator process that enforces a requests-per-minute
limit one way, and reads what happened from the simulator's request log. The client is not told the limit: it learns
it from the x-ratelimit-* headers, as it would from OpenAI or Anthropic.

- bucket: a token bucket (the documented way: a minute's allowance, full at the start, refilled continuously). The
  fastest possible run spends the full bucket at once, then goes at the refill rate: it lasts 60 * (N - RPM) / RPM
  seconds. Efficiency = that / the run's span (target >= 0.9). Before issue 9 the client spaced every call evenly:
  300 calls at 120 RPM took 148 s where 90 s is possible (0.61).
- second: the headers report a minute's bucket, but the server enforces RPM/60 requests in each one-second window
  (as OpenAI says it may). The fastest possible run lasts 60 * N / RPM seconds. Target: at most 1% of requests 429.
- short: 300 calls at 120 RPM; long: 2,400 calls at 600 RPM.

`--window` is the earlier benchmark: a sliding minute, the client told --rpm/--tpm, stopped after --seconds; it prints
the achieved rate as a share of the allowed one and the 429 share.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import simulator_process

from costinfer.reading.tokens import TokenCounter

SCENARIOS = {
    "bucket-short": ("bucket", 120, 300),
    "bucket-long": ("bucket", 600, 2400),
    "second-short": ("second", 120, 300),
    "second-long": ("second", 600, 2400),
}


def _write_rows(path: Path, n: int) -> int:
    """N distinct short prompts; returns their prompt tokens."""
    counter = TokenCounter()
    prompt_tokens = 0
    with path.open("w") as fh:
        for i in range(n):
            prompt = f"Rate limit question number {i}, please answer."
            prompt_tokens += counter.count_body(
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
            )
            fh.write(json.dumps({"prompt": prompt, "max_tokens": 32}) + "\n")
    return prompt_tokens


def scenario(name: str) -> dict[str, object]:
    mode, rpm, n = SCENARIOS[name]
    with tempfile.TemporaryDirectory() as tmp:
        log, data = Path(tmp) / "log.jsonl", Path(tmp) / "d.jsonl"
        _write_rows(data, n)
        with simulator_process(
            "--rpm", str(rpm), "--limit-mode", mode, "--log", str(log), "--latency-ms", "200"
        ) as url:
            cmd = [sys.executable, "-m", "costinfer", "run", str(data), "--base-url", url]
            cmd += ["--store", str(Path(tmp) / "s.duckdb"), "--output", str(Path(tmp) / "o.jsonl"), "-c", "32"]
            proc = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: costinfer exited {proc.returncode}: {proc.stderr.strip()}")
        entries = [json.loads(line) for line in log.read_text().splitlines()]
    span = entries[-1]["t"] - entries[0]["t"]
    ok = sum(e["status"] == 200 for e in entries)
    limited = sum(e["status"] == 429 for e in entries)
    possible = 60 * max(n - rpm, 0) / rpm if mode == "bucket" else 60 * n / rpm
    return {
        "scenario": name,
        "rpm": rpm,
        "calls": n,
        "answered": ok,
        "requests": len(entries),
        "answered_429": limited,
        "share_429": limited / len(entries),
        "span_s": round(span, 1),
        "possible_s": round(possible, 1),
        "efficiency": round(possible / span, 3) if span > 0 else None,
    }


def run_scenarios(names: list[str], parallel: bool) -> None:
    with ThreadPoolExecutor(len(names) if parallel else 1) as pool:
        results = list(pool.map(scenario, names))
    header = ("scenario", "rpm", "calls", "span s", "possible s", "efficiency", "429s", "429 share")
    print(f"{header[0]:14} " + " ".join(f"{h:>10}" for h in header[1:]))
    for r in results:
        cells = (r["rpm"], r["calls"], r["span_s"], r["possible_s"], r["efficiency"], r["answered_429"])
        print(f"{r['scenario']:14} " + " ".join(f"{c!s:>10}" for c in cells) + f" {r['share_429']:>10.2%}")
    print(json.dumps(results))


def window(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        data = Path(tmp) / "d.jsonl"
        n = int(args.rpm * args.seconds / 60 * 1.5)
        prompt_tokens = _write_rows(data, n)
        with simulator_process(
            "--rpm", str(args.rpm), "--tpm", str(args.tpm), "--log", str(log), "--latency-ms", "200"
        ) as url:
            cmd = [sys.executable, "-m", "costinfer", "run", str(data), "--base-url", url, "--rpm", str(args.rpm)]
            cmd += [
                "--tpm",
                str(args.tpm),
                "--store",
                str(Path(tmp) / "s.duckdb"),
                "--output",
                str(Path(tmp) / "o.jsonl"),
            ]
            cmd += ["-c", "32", "--quiet", "--on-over-budget", "partial"]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="Run only this scenario.")
    parser.add_argument("--serial", action="store_true", help="One scenario at a time (default: side by side).")
    parser.add_argument("--window", action="store_true", help="The sliding-minute benchmark instead.")
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--tpm", type=int, default=40000)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    if args.window:
        window(args)
    else:
        run_scenarios(args.only or list(SCENARIOS), parallel=not args.serial)


if __name__ == "__main__":
    main()
