"""What `--route learned` saves against the plain cascade, from the simulator's log (what was called and billed).

    .venv/bin/python benchmarks/learned_routing.py [--pairs gpt-4.1-mini,gpt-4.1 gpt-4o-mini,gpt-4o]

The data are banking77's customer messages (../shared/data/banking77/train.csv, shuffled with a fixed seed). The
simulator's cheap model answers badly (a refusal, which the cascade's built-in check catches) either every message
of 19 of the 77 intents ("topic": about 25% of rows, a pattern to learn) or a seeded 25% of all messages ("random":
nothing to learn). For each pair and scenario: a cascade on 1,000 rows makes the history; then the same 2,000 other
rows run on two copies of that store, once as a plain cascade and once with `--route learned`. Printed, for the
2,000 rows: the doomed cheap calls (cheap calls answered badly) and what the simulator billed, for both, and the
ratios learned / cascade (issue 26: doomed <= 0.30 and cost < 1.0 on topics; cost <= 1.05 at random).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

from costinfer.pricing.catalog import Catalog
from costinfer.pricing.config_file import Config

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
CLI = [sys.executable, "-m", "costinfer"]
CATALOG = Catalog.load(None, Config.load(None))


def _datasets(folder: Path) -> tuple[Path, Path, Path]:
    with DATA.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(7).shuffle(rows)
    bad = set(random.Random(3).sample(sorted({r["category"] for r in rows}), 19))
    prompts = folder / "bad.txt"
    prompts.write_text("".join(r["text"] + "\n" for r in rows if r["category"] in bad), encoding="utf-8")
    paths = []
    for name, part in (("first", rows[:1000]), ("second", rows[1000:3000])):
        path = folder / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for i, r in enumerate(part):
                out.write(json.dumps({"id": f"{name}{i}", "prompt": r["text"], "max_tokens": 64}) + "\n")
        paths.append(path)
    return paths[0], paths[1], prompts


def _run(data: Path, store: Path, url: str, models: str, route: str) -> dict:
    cmd = [*CLI, "run", str(data), "--store", str(store), "--provider", "simulate", "--base-url", url,
           "--models", models, "--route", route, "-o", str(store.with_suffix(".jsonl")), "--json", "-q",
           "--no-semantic", "--no-report"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{route}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return dict(json.loads(done.stdout))


def _since(log: Path, start: int, cheap: str) -> tuple[int, int, Decimal]:
    calls, doomed, billed = 0, 0, Decimal(0)
    for line in log.read_text().splitlines()[start:]:
        e = json.loads(line)
        if e.get("status") != 200:
            continue
        usage = e["usage"]
        calls += 1
        billed += CATALOG.lookup(e["model"], "simulate").cost(usage["prompt_tokens"], usage["completion_tokens"])
        doomed += e["model"] == cheap and bool(e.get("bad"))
    return calls, doomed, billed


def _scenario(folder: Path, models: str, scenario: str) -> None:
    first, second, bad = _datasets(folder)
    cheap = models.split(",")[0]
    log = folder / f"{scenario}.log"
    told = ["--bad-prompts", str(bad), "--bad-answers", f"{cheap}=0"]
    if scenario == "random":
        told = ["--bad-answers", f"{cheap}=0.25", "--seed", "5"]
    serve = [*CLI, "simulate", "serve", "--port", "0", "--log", str(log), *told]
    with subprocess.Popen(serve, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            history = folder / f"{scenario}-history.duckdb"
            _run(first, history, url, models, "cascade")
            out = {}
            for route in ("cascade", "learned"):
                store = folder / f"{scenario}-{route}.duckdb"
                shutil.copy(history, store)
                start = len(log.read_text().splitlines())
                summary = _run(second, store, url, models, route)
                out[route] = (*_since(log, start, cheap), summary)
        finally:
            server.terminate()
    (cc, cd, cb, _), (lc, ld, lb, ls) = out["cascade"], out["learned"]
    note = next((n for n in ls["notes"] if n.startswith("learned routing")), "")
    print(f"{models} {scenario}: cascade {cc} calls, {cd} doomed, ${cb:.6f}; learned {lc} calls, {ld} doomed, "
          f"${lb:.6f}; doomed ratio {ld / cd if cd else 0:.2f}, cost ratio {lb / cb:.3f}")  # fmt: skip
    print(f"    {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=["gpt-4.1-mini,gpt-4.1", "gpt-4o-mini,gpt-4o"])
    parser.add_argument("--scenarios", nargs="+", default=["topic", "random"])
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: this benchmark reads banking77 from ../shared/data")
    for models in args.pairs:
        for scenario in args.scenarios:
            with tempfile.TemporaryDirectory() as tmp:
                _scenario(Path(tmp), models, scenario)


if __name__ == "__main__":
    main()
