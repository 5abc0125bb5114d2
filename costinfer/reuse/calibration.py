"""Choose the semantic threshold from labelled text pairs: precision, recall and hit rate per threshold.

A pair is predicted "same answer" when its cosine similarity reaches the threshold and no guard objects, exactly as
the semantic tier decides. Labels are 0/1, or graded scores split by ``positive_min`` and ``negative_max`` (pairs in
between are left out). The recommendation is the lowest threshold whose precision reaches the target.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from costinfer.errors import InputError
from costinfer.reuse.content_words import Similar
from costinfer.reuse.guards import conflict

TEXT_COLUMNS = (("text1", "text2"), ("sentence1", "sentence2"), ("a", "b"))
LABEL_COLUMNS = ("label", "score", "similarity")


@dataclass
class Pair:
    a: str
    b: str
    same: bool


@dataclass
class ThresholdRow:
    threshold: float
    precision: float
    recall: float
    hit_rate: float
    matches: int


def load_pairs(path: Path, positive_min: float = 0.5, negative_max: float = 0.5) -> list[Pair]:
    """Pairs from CSV (header row) or JSONL; columns text1/text2 (or sentence1/sentence2) and label (or score)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; name a file of labelled pairs (CSV, TSV or JSONL)")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records: list[dict[str, Any]] = []
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:line {n}: malformed JSON: {exc.msg}") from None
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            records = list(csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if not records:
        raise InputError(f"{path}: no pairs")
    cols = next((c for c in TEXT_COLUMNS if c[0] in records[0] and c[1] in records[0]), None)
    label = next((c for c in LABEL_COLUMNS if c in records[0]), None)
    if cols is None or label is None:
        raise InputError(f"{path}: needs columns text1, text2 and label (or sentence1, sentence2, score)")
    pairs: list[Pair] = []
    for n, rec in enumerate(records, 2):
        if rec[label] is None or rec[label] == "":
            continue  # not labelled yet (a --semantic-audit file a person has not finished)
        try:
            value = float(rec[label])
        except (TypeError, ValueError):
            raise InputError(f"{path}:row {n}: field '{label}': must be a number, got {rec[label]!r}") from None
        if value >= positive_min:
            pairs.append(Pair(str(rec[cols[0]]), str(rec[cols[1]]), True))
        elif value < negative_max or (positive_min == negative_max and value < positive_min):
            pairs.append(Pair(str(rec[cols[0]]), str(rec[cols[1]]), False))
    if not pairs:
        raise InputError(f"{path}: no labelled pairs: set each '{label}' to 1 (the same) or 0 (different)")
    return pairs


def similarities(pairs: list[Pair], embedder: Any) -> np.ndarray:
    vectors = embedder.embed([p.a for p in pairs] + [p.b for p in pairs])
    n = len(pairs)
    sims: np.ndarray = np.einsum("ij,ij->i", vectors[:n], vectors[n:])
    return sims


def objections(pairs: list[Pair], sims: np.ndarray, lowest: float, similar: Similar | None) -> list[str | None]:
    """Each pair's guard objection (None: allowed), asked only for the pairs whose cosine reaches ``lowest`` (no
    threshold from ``lowest`` on predicts the others, whatever the guards say). ``similar``: word similarity for the
    guard on a word in one text only (the embedding model's, as the tier uses)."""
    return [conflict(p.a, p.b, similar) if s >= lowest else None for p, s in zip(pairs, sims, strict=True)]


def vetoes(pairs: list[Pair], sims: np.ndarray, objected: list[str | None], threshold: float) -> dict[str, list[int]]:
    """Guard -> [pairs it refused at ``threshold``, of which labelled the same]: what each guard costs in recall
    (refused pairs labelled the same) and what it saves in precision (the others)."""
    out: dict[str, list[int]] = {}
    for pair, sim, why in zip(pairs, sims, objected, strict=True):
        if why is not None and sim >= threshold:
            counts = out.setdefault(why, [0, 0])
            counts[0] += 1
            counts[1] += int(pair.same)
    return out


def sweep(
    pairs: list[Pair], sims: np.ndarray, thresholds: list[float], objected: list[str | None]
) -> list[ThresholdRow]:
    """Precision, recall and hit rate at each threshold, predicting as the tier does (``objected``: ``objections``
    computed from the lowest threshold)."""
    same = np.array([p.same for p in pairs])
    allowed = np.array([why is None for why in objected])
    positives = max(int(same.sum()), 1)
    rows = []
    for t in thresholds:
        predicted = (sims >= t) & allowed
        matches = int(predicted.sum())
        tp = int((predicted & same).sum())
        rows.append(
            ThresholdRow(
                threshold=round(t, 4),
                precision=tp / matches if matches else 1.0,
                recall=tp / positives,
                hit_rate=matches / len(pairs),
                matches=matches,
            )
        )
    return rows


def recommend(rows: list[ThresholdRow], target_precision: float) -> ThresholdRow | None:
    """The lowest threshold from which precision stays at or above the target."""
    ok = None
    for row in sorted(rows, key=lambda r: r.threshold, reverse=True):
        if row.precision < target_precision or row.matches == 0:
            break
        ok = row
    return ok
