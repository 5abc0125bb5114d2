"""What routing and prompt caching save on a classification job written by people, lever by lever.

    .venv/bin/python benchmarks/levers.py [--rows 1000] [--bad 0.2]

The job: banking77's test queries (real customer messages, ../shared/data/banking77/test.csv), each classified into
one of its 77 intents under one long system prompt (the label list and a few examples, about 1,500 tokens: the shared
prefix a provider's prompt cache serves). Three runs of `costinfer run` against the in-process simulator, each with a
fresh store, the same rows:

- strong: every row on gpt-4o (what a user pays without routing; the prompt cache still applies);
- cheap: every row on gpt-4o-mini (a floor that ignores quality);
- cascade: `--models gpt-4o-mini,gpt-4o --route cascade`, the simulator told to answer a seeded share (`--bad`) of
  gpt-4o-mini's requests badly (a refusal), which the cascade escalates.

It prints each run's cost, the cascade's saving by lever (the run summary's `saved_usd`, which adds up to the naive
cost less the ledger's), and `cost ratio = cascade / strong`. The answers are the simulator's (random words), so the
output lengths are not a real model's: the ratio is about prices, routing and caching, not answer quality.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "banking77" / "test.csv"


def _dataset(folder: Path, rows: int) -> Path:
    with DATA.open(newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    labels = sorted({r["category"] for r in records})
    examples = "\n".join(f"{r['text']} => {r['category']}" for r in records[-60:])
    system = (
        "You classify a bank customer's message into exactly one intent. Answer with the intent name only.\n"
        f"Intents: {', '.join(labels)}.\nExamples:\n{examples}"
    )
    path = folder / "banking77.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i, r in enumerate(records[:rows]):
            out.write(json.dumps({"id": f"b{i}", "system": system, "prompt": r["text"], "max_tokens": 64}) + "\n")
    return path


def _run(data: Path, folder: Path, name: str, *args: str) -> dict:
    cmd = [sys.executable, "-m", "costinfer", "run", str(data), "--store", str(folder / f"{name}.duckdb"),
           "-o", str(folder / f"{name}.jsonl"), "--no-report", "--no-semantic", "--json", *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--bad", type=float, default=0.2, help="share of gpt-4o-mini answers the simulator botches")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: this benchmark reads banking77 from ../shared/data")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _dataset(folder, args.rows)
        strong = _run(data, folder, "strong", "--model", "gpt-4o")
        cheap = _run(data, folder, "cheap", "--model", "gpt-4o-mini")
        cascade = _run(
            data, folder, "cascade", "--models", "gpt-4o-mini,gpt-4o", "--route", "cascade",
            "--sim-bad-answers", f"gpt-4o-mini={args.bad}", "--sim-seed", "1",
        )  # fmt: skip
    print(f"{args.rows} banking77 queries, one shared system prompt; gpt-4o-mini answers {args.bad:.0%} badly")
    for name, s in (("strong (gpt-4o)", strong), ("cheap (gpt-4o-mini)", cheap), ("cascade", cascade)):
        print(f"  {name:22} calls {s['calls']:5}  cost ${float(s['run_cost_usd']):.4f}  saved {s['saved_usd']}")
    print(f"  cascade escalated {cascade['escalated']} rows of {cascade['rows']}")
    ratio = float(cascade["run_cost_usd"]) / float(strong["run_cost_usd"])
    print(f"cost ratio = cascade / strong = {ratio:.3f}")


if __name__ == "__main__":
    main()
