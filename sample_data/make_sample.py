"""Rebuild sample_data/prompts.jsonl and prompts.parquet from the reference data (deterministic).

Run from the repository root with ../shared/data present:  python sample_data/make_sample.py
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent


def main() -> None:
    rng = random.Random(77)
    labels = json.loads((SHARED / "banking77" / "categories.json").read_text())
    with (SHARED / "banking77" / "test.csv").open(newline="", encoding="utf-8") as fh:
        bank = list(csv.DictReader(fh))
    system = (
        "You label customer messages for a bank's support team. Answer with exactly one intent label from this "
        "list and nothing else: " + ", ".join(labels) + "."
    )
    rows = []
    for i, r in enumerate(rng.sample(bank, 420)):
        rows.append(
            {
                "id": f"b77-{i:04d}",
                "system": system,
                "prompt": f"Customer message: {r['text']}\nIntent label:",
                "max_tokens": 16,
                "temperature": 0.0,
                "metadata": {"source": "banking77", "label": r["category"]},
            }
        )
    # The same message sent twice is common in real support logs: 40 exact duplicates under new ids.
    for j, r in enumerate(rng.sample(rows, 40)):
        rows.append({**r, "id": f"b77-dup-{j:03d}"})
    arena = [json.loads(line) for line in (SHARED / "arena_hard" / "question_v2.0.jsonl").open(encoding="utf-8")]
    short = [a for a in arena if len(a["prompt"]) < 1500]
    for a in rng.sample(short, 40):
        rows.append(
            {
                "id": f"arena-{a['uid']}",
                "prompt": a["prompt"],
                "max_tokens": 400,
                "metadata": {"source": "arena-hard-v2.0", "category": a["category"], "subcategory": a["subcategory"]},
            }
        )
    rng.shuffle(rows)
    with (OUT / "prompts.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    table = pa.Table.from_pylist(
        [{**r, "metadata": json.dumps(r["metadata"]), "temperature": r.get("temperature")} for r in rows]
    )
    pq.write_table(table, OUT / "prompts.parquet")
    print(f"{len(rows)} rows written")


if __name__ == "__main__":
    main()
