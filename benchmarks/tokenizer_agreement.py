"""Does quicktok count exactly what tiktoken counts, and how much faster? On real texts, both encodings.

    .venv/bin/python benchmarks/tokenizer_agreement.py

Texts: every sentence of STS-B, every banking77 query, every arena-hard prompt (../shared/data). tiktoken's encodings
come from its cache, seeded by costinfer from quicktok's vocabulary only after an exact SHA-256 match with OpenAI's
published files. Prints mismatches (must be 0) and the speed ratio quicktok / tiktoken.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import quicktok
import tiktoken

from costinfer.reading.tokens import seed_tiktoken_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import real_texts


def main() -> None:
    sample = real_texts(("train.csv", "test.csv"), arena=True)
    print(f"{len(sample)} real texts, {sum(map(len, sample))} characters")
    for name in ("o200k_base", "cl100k_base"):
        assert seed_tiktoken_cache(name), f"cannot seed {name}"
        tik = tiktoken.get_encoding(name)
        qt = quicktok.get_encoding(name)
        t0 = time.perf_counter()
        tik_counts = [len(tik.encode_ordinary(t)) for t in sample]
        tik_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        qt_counts = [int(c) for c in quicktok.count_batch(qt, sample, threads=1)]
        qt_s = time.perf_counter() - t0
        ids_equal = sum(tik.encode_ordinary(t) == qt.encode_ordinary(t) for t in sample[:5000])
        mismatches = sum(a != b for a, b in zip(tik_counts, qt_counts, strict=True))
        print(
            f"{name}: count mismatches = {mismatches} of {len(sample)}; identical token ids on the first 5000: "
            f"{ids_equal}; tiktoken {tik_s:.2f} s, quicktok count_batch (1 thread) {qt_s:.2f} s, "
            f"speed ratio quicktok / tiktoken = {tik_s / qt_s:.1f}x"
        )


if __name__ == "__main__":
    main()
