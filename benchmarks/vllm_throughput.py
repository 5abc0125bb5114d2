"""costinfer against vLLM's own offline batch runner, on a real vLLM CPU server (../shared/vllm-cpu/README.md).

    ../shared/vllm-cpu/serve.sh /tmp/vllm-venv 8011          # a server (and 8012 for --replica)
    .venv/bin/python benchmarks/vllm_throughput.py --url http://127.0.0.1:8011/v1 [--replica http://127.0.0.1:8012/v1]

The same N short prompts (distinct banking77 customer messages, ``max_tokens`` 64) go

- through ``vllm run-batch`` (``python -m vllm.entrypoints.openai.run_batch``: the anchor, no HTTP, the engine driven
  directly), timed by its own progress bar, so without engine start-up;
- through ``costinfer run --provider vllm`` against the server (same model and settings), timed by the run's calls
  phase (``calls_elapsed_s``: from the first call to the last answer saved, without reading and planning): with no
  ``--concurrency`` (calls in flight follow the server's /metrics), on a fresh store (a first run: the calls in
  flight start small and grow) and on a store where an earlier run against this server (300 other prompts)
  remembered its batch (a later run: it starts there); and with a fixed 4, 16, 64 and 256;
- with ``--replica``: through both servers at once (``--base-url`` twice).

It prints each time, ``throughput ratio = costinfer / run-batch`` (run-batch's time over costinfer's), and, for the
replicas, the ratio per replica. Each costinfer run uses a fresh store (no cache hits).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
VENV = Path("/tmp/vllm-venv")


def _prompts(n: int) -> list[str]:
    with DATA.open(newline="", encoding="utf-8") as fh:
        texts = list(dict.fromkeys(r["text"] for r in csv.DictReader(fh)))
    return texts[:n]


def _run_batch(prompts: list[str], folder: Path, max_tokens: int) -> float:
    """Seconds run-batch took for the requests, from its progress bar (no start-up)."""
    src, out = folder / "batch.jsonl", folder / "batch.out.jsonl"
    with src.open("w") as fh:
        for i, p in enumerate(prompts):
            body = {"model": "tiny", "messages": [{"role": "user", "content": p}], "max_tokens": max_tokens}
            fh.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
            fh.write("\n")
    cmd = [str(VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.run_batch", "-i", str(src), "-o", str(out),
           "--model", str(VENV / "tiny-model"), "--served-model-name", "tiny", "--load-format", "dummy",
           "--max-model-len", "512"]  # fmt: skip
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "PATH": "/usr/bin:/bin"}
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run-batch failed: {done.stderr[-600:]}")
    # tqdm's last report, e.g. "Running batch: 100%|...| 1000/1000 [00:16<00:00, 61.02req/s]"
    rates = re.findall(r"(\d+)/(\d+) \[(\d+):(\d+)<[^,]*,\s*([\d.]+)\s*req/s\]", done.stderr)
    if not rates:
        print(f"  (run-batch printed no rate; its wall time with start-up was {wall:.1f} s)")
        raise SystemExit("cannot time run-batch without its start-up")
    finished, total, _, _, rate = rates[-1]
    assert finished == total
    answered = sum(1 for line in out.read_text().splitlines() if json.loads(line).get("response"))
    assert answered == len(prompts), f"run-batch answered {answered} of {len(prompts)}"
    return float(total) / float(rate)


def _costinfer(
    prompts: list[str],
    folder: Path,
    urls: list[str],
    max_tokens: int,
    *extra: str,
    warm: Path | None = None,
    keep: Path | None = None,
) -> dict:
    data = folder / f"prompts-{len(prompts)}.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    store = keep or folder / f"store-{time.monotonic_ns()}.duckdb"
    if warm is not None:  # a copy of a store that has seen this server: no cache hits, its batch remembered
        shutil.copy(warm, store)
    cmd = [sys.executable, "-m", "costinfer", "run", str(data), "--provider", "vllm", "--model", "tiny",
           "--max-tokens", str(max_tokens), "--store", str(store), "-o", str(folder / "out.jsonl"), "--no-report",
           "--no-semantic", "--json", "--quiet"]  # fmt: skip
    for url in urls:
        cmd += ["--base-url", url]
    done = subprocess.run([*cmd, *extra], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"costinfer failed ({done.returncode}): {done.stderr[-600:]}")
    summary = dict(json.loads(done.stdout))
    assert summary["calls"] == summary["plan"]["to_call"] and summary["failed"] == 0, summary
    return summary


def _median(runs: list[dict]) -> tuple[dict, str]:
    runs = sorted(runs, key=lambda r: r["calls_elapsed_s"])
    return runs[len(runs) // 2], ", ".join(f"{r['calls_elapsed_s']:.1f}" for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--replica", help="a second server of the same model")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--fixed", default="4,16,64,256", help="fixed --concurrency values to compare")
    parser.add_argument("--repeat", type=int, default=3, help="costinfer runs following /metrics (the median counts)")
    args = parser.parse_args()
    prompts = _prompts(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        anchor = _run_batch(prompts, folder, args.max_tokens)
        print(f"{len(prompts)} prompts, max_tokens {args.max_tokens}")
        print(f"  vllm run-batch                    {anchor:6.1f} s  ({len(prompts) / anchor:.1f} req/s)")
        cold = _median([_costinfer(prompts, folder, [args.url], args.max_tokens) for _ in range(args.repeat)])
        print(f"  costinfer, /metrics, first run    {cold[0]['calls_elapsed_s']:6.1f} s  (median of {cold[1]})")
        others = _prompts(args.n + 300)[args.n :]
        warm_store = folder / "warm.duckdb"
        _costinfer(others, folder, [args.url], args.max_tokens, keep=warm_store)
        runs = [_costinfer(prompts, folder, [args.url], args.max_tokens, warm=warm_store) for _ in range(args.repeat)]
        auto, times = _median(runs)
        print(f"  costinfer, /metrics, later run    {auto['calls_elapsed_s']:6.1f} s  (median of {times})")
        best = best_small = 0.0
        for c in [int(x) for x in args.fixed.split(",") if x]:
            fixed = _costinfer(prompts, folder, [args.url], args.max_tokens, "--concurrency", str(c),
                               "--fixed-concurrency")  # fmt: skip
            rate = len(prompts) / fixed["calls_elapsed_s"]
            best = max(best, rate)
            if c in (4, 16, 64):
                best_small = max(best_small, rate)
            print(f"  costinfer, --concurrency {c:<4}      {fixed['calls_elapsed_s']:6.1f} s")
        auto_rate = len(prompts) / auto["calls_elapsed_s"]
        print(f"throughput ratio = costinfer / run-batch = {anchor / auto['calls_elapsed_s']:.3f} (a later run)")
        print(f"throughput ratio of a first run = {anchor / cold[0]['calls_elapsed_s']:.3f}")
        if best_small:
            print(f"load-following / best fixed --concurrency among 4, 16, 64 = {auto_rate / best_small:.3f}")
        if best:
            print(f"load-following / best fixed --concurrency of all tried = {auto_rate / best:.3f}")
        if args.replica:
            both = _costinfer(prompts, folder, [args.url, args.replica], args.max_tokens)
            for line in both["notes"]:
                if line.startswith("replica "):
                    print(f"  {line}")
            ratio = anchor / both["calls_elapsed_s"] / 2
            print(f"  two replicas: {both['calls_elapsed_s']:.1f} s; throughput ratio per replica = {ratio:.3f}")


if __name__ == "__main__":
    main()
