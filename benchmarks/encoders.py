"""The semantic tier's encoders side by side: speed, agreement with torch, reuse decisions, precision.

    .venv/bin/python benchmarks/encoders.py [--encoders torch,openvino,openvino-int8] [--skip-calibrate]

For each encoder (COSTINFER_ENCODER's values; torch is sentence-transformers, the reference):
1. Speed: banking77's utterances (train and test, 13,083 texts, distinct) encoded, texts/s, and the ratio to torch
   measured in the same invocation.
2. Agreement with torch's vectors on banking77, STS-B test and MRPC test sentences: the lowest and mean cosine, and
   how many texts fall below 0.99.
3. Reuse decisions that differ from torch's: on the STS-B and MRPC test pairs, whether the pair's cosine reaches the
   default threshold; on banking77, which earlier utterance (if any) each one would reuse (its nearest earlier
   neighbour at or above the threshold).
4. Precision and hit rate at the default threshold of the whole semantic tier, guards included (`costinfer cache
   calibrate`, run with COSTINFER_ENCODER set), on STS-B test (positives: score >= 4.5, negatives <= 3) and MRPC test
   (label 1 / 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _pairs() -> dict[str, list[tuple[str, str, float]]]:
    stsb = []
    with (SHARED / "stsb" / "sts-test.csv").open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                stsb.append((row[5], row[6], float(row[4])))
    mrpc = []
    with (SHARED / "mrpc" / "msr_paraphrase_test.txt").open(encoding="utf-8-sig") as fh:
        next(fh)
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 5:
                mrpc.append((parts[3], parts[4], float(parts[0])))
    return {"stsb": stsb, "mrpc": mrpc}


def _banking() -> list[str]:
    texts: list[str] = []
    for name in ("train.csv", "test.csv"):
        with (SHARED / "banking77" / name).open(encoding="utf-8", newline="") as fh:
            texts += [r["text"] for r in csv.DictReader(fh)]
    return list(dict.fromkeys(texts))


def _reuse_choices(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """For each text, the earlier text it would reuse (nearest at or above the threshold), or -1."""
    out = np.full(len(vectors), -1)
    for start in range(0, len(vectors), 2048):
        sims = vectors[start : start + 2048] @ vectors.T
        for i in range(sims.shape[0]):
            row = sims[i, : start + i]
            if row.size and row.max() >= threshold:
                out[start + i] = int(row.argmax())
    return out


def _calibrate(encoder: str, pairs: list[tuple[str, str, float]], positive: str, negative: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text("".join(json.dumps({"text1": a, "text2": b, "score": s}) + "\n" for a, b, s in pairs))
        cli = Path(sys.executable).with_name("costinfer")
        done = subprocess.run(
            [cli, "cache", "calibrate", data, "--positive-min", positive, "--negative-max", negative, "--json",
             "--store", Path(tmp) / "s.duckdb"],
            capture_output=True, text=True, check=True, env={**os.environ, "COSTINFER_ENCODER": encoder},
        )  # fmt: skip
    from costinfer.spec import DEFAULT_THRESHOLD

    row = next(r for r in json.loads(done.stdout)["rows"] if r["threshold"] == DEFAULT_THRESHOLD)
    return f"precision {row['precision']:.3f}, recall {row['recall']:.3f}, hit rate {row['hit_rate']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoders", default="torch,openvino,openvino-int8")
    parser.add_argument("--skip-calibrate", action="store_true", help="leave out step 4 (the CLI, slower)")
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"needs the reference data in {SHARED}")
    from costinfer.reuse.embeddings import DEFAULT_MODEL, model_source
    from costinfer.reuse.encoders import load_encoder
    from costinfer.spec import DEFAULT_THRESHOLD

    names = args.encoders.split(",")
    banking, pairs = _banking(), _pairs()
    sets = {
        "banking77": banking,
        **{name: list(dict.fromkeys(t for a, b, _ in p for t in (a, b))) for name, p in pairs.items()},
    }
    vectors: dict[str, dict[str, np.ndarray]] = {}
    speed: dict[str, float] = {}
    for name in names:
        os.environ["COSTINFER_ENCODER"] = name
        encoder = load_encoder(model_source(DEFAULT_MODEL))
        encoder.encode(banking[:256])  # warm up
        t0 = time.perf_counter()
        vectors[name] = {"banking77": encoder.encode(banking)}
        speed[name] = len(banking) / (time.perf_counter() - t0)
        for key, texts in sets.items():
            if key != "banking77":
                vectors[name][key] = encoder.encode(texts)
        print(f"{name} ({encoder.name}): {speed[name]:.0f} texts/s on {len(banking)} banking77 texts", flush=True)
    ref = names[0]
    for name in names[1:]:
        print(f"\n{name} against {ref}: speed ratio {speed[name] / speed[ref]:.2f}")
        for key in sets:
            cos = (vectors[name][key] * vectors[ref][key]).sum(axis=1)
            print(
                f"  {key}: lowest cosine {cos.min():.4f}, mean {cos.mean():.5f}, {int((cos < 0.99).sum())} of "
                f"{len(cos)} texts below 0.99"
            )
        for key, p in pairs.items():
            index = {t: i for i, t in enumerate(sets[key])}
            a = np.array([index[x] for x, _, _ in p])
            b = np.array([index[y] for _, y, _ in p])

            def hits(vs: np.ndarray, a: np.ndarray = a, b: np.ndarray = b) -> np.ndarray:
                return np.asarray((vs[a] * vs[b]).sum(axis=1) >= DEFAULT_THRESHOLD)

            mine, theirs = hits(vectors[name][key]), hits(vectors[ref][key])
            print(
                f"  {key} pairs at {DEFAULT_THRESHOLD}: {int((mine != theirs).sum())} of {len(p)} decisions differ "
                f"({int(theirs.sum())} hits with {ref}, {int(mine.sum())} with {name})"
            )
        mine_c = _reuse_choices(vectors[name]["banking77"], DEFAULT_THRESHOLD)
        ref_c = _reuse_choices(vectors[ref]["banking77"], DEFAULT_THRESHOLD)
        print(
            f"  banking77 reuse at {DEFAULT_THRESHOLD}: {int((mine_c != ref_c).sum())} of {len(banking)} decisions "
            f"differ ({int((ref_c >= 0).sum())} reuses with {ref}, {int((mine_c >= 0).sum())} with {name})"
        )
    if not args.skip_calibrate:
        print()
        for name in names:
            print(f"{name}: STS-B test {_calibrate(name, pairs['stsb'], '4.5', '3')}", flush=True)
            print(f"{name}: MRPC test {_calibrate(name, pairs['mrpc'], '1', '0')}", flush=True)


if __name__ == "__main__":
    main()
