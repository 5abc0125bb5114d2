"""The stored keys held in memory while a dataset is read: exact answers, keys that share their first 8 bytes
included, and a store whose requests are each stored once however the batches overlap."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from costinfer.reading.keys import request_key
from costinfer.store import dataset
from costinfer.store.known_keys import KnownKeys, digests
from costinfer.store.store import Store


def _keys(n: int, seed: int) -> list[str]:
    return [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]


def test_digests_are_the_keys_bytes_and_refuse_what_is_not_a_key() -> None:
    keys = _keys(3, 0)
    assert [d for d in digests(pa.array(keys))] == [bytes.fromhex(k) for k in keys]
    assert len(digests(pa.array([], pa.string()))) == 0
    sliced = pa.array(keys)[1:]  # an array with an offset
    assert [d for d in digests(sliced)] == [bytes.fromhex(k) for k in keys[1:]]
    with pytest.raises(ValueError, match="64 hex digits"):
        digests(pa.array(["abc"]))


def test_known_keys_answer_exactly_through_many_levels() -> None:
    rng = random.Random(7)
    known, held = KnownKeys(), set[str]()
    for batch in range(40):
        keys = _keys(rng.randrange(1, 300), batch)
        probe = keys + rng.sample(sorted(held), min(50, len(held))) if held else keys
        found = known.lookup(digests(pa.array(probe)))
        assert found.stored.tolist() == [k in held for k in probe]
        assert found.twice.tolist() == [probe.count(k) > 1 for k in probe]
        known.add(*found.new())
        held.update(probe)
    assert len(known) == len(held)
    assert len(known._levels) <= 12  # merged as they grow: O(log n) levels


def test_keys_sharing_their_first_eight_bytes_are_told_apart() -> None:
    same_start = ["00" * 8 + k[16:] for k in _keys(5, 1)]  # five keys alike in their first 8 bytes
    known = KnownKeys(digests(pa.array(same_start[:3])))
    found = known.lookup(digests(pa.array(same_start)))
    assert found.stored.tolist() == [True, True, True, False, False]
    batch = [same_start[0], same_start[3], same_start[0], same_start[4], "ab" * 32, same_start[4]]
    found = known.lookup(digests(pa.array(batch)))
    assert found.twice.tolist() == [True, False, True, True, False, True]
    news = {same_start[3], same_start[4], "ab" * 32}
    assert sorted(found.new()[1].tolist()) == sorted(bytes.fromhex(k) for k in news)


def test_a_repeat_is_marked_at_every_copy_and_held_once() -> None:
    a, b, c = _keys(3, 2)
    found = KnownKeys().lookup(digests(pa.array([a, b, a, c, a, b])))
    assert found.twice.tolist() == [True, True, True, False, True, True]
    assert sorted(found.new()[1].tolist()) == sorted(bytes.fromhex(k) for k in (a, b, c))
    empty = KnownKeys().lookup(np.empty(0, "S32"))
    assert empty.stored.tolist() == empty.twice.tolist() == [] and len(empty.new()[1]) == 0


def _requests(keys: list[str]) -> pa.Table:
    n = len(keys)
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "endpoint": pa.array(["/v1/chat/completions"] * n),
            "model": pa.array(["gpt-4o-mini"] * n),
            "body": pa.array([f'{{"k": "{k}"}}' for k in keys]),
            "input_tokens": pa.array([5] * n, pa.int32()),
            "max_tokens": pa.array([16] * n, pa.int32()),
            "input_bound": pa.array([5] * n, pa.int32()),
            "norm_key": pa.array(keys, pa.string()),
            "group_key": pa.array([None] * n, pa.string()),
        }
    )


@pytest.mark.parametrize("scanned", [0, 1, 2, 9])
def test_a_store_keeps_each_request_once_across_batches_runs_and_reopening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scanned: int
) -> None:
    """However many writes find stored keys by a scan before the keys are read into memory."""
    monkeypatch.setattr(dataset, "SCANNED_WRITES", scanned)
    path = tmp_path / "s.duckdb"
    keys = [request_key({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": str(i)}]}, "chat")
            for i in range(500)]  # fmt: skip
    empty = pa.table({"row_idx": pa.array([], pa.int64())})
    store = Store.open(path)
    try:
        store.reset_ingest("r1")
        store.add_chunk("r1", empty.slice(0, 0), _requests(keys[:200] + keys[:50]), None)  # a key twice in a batch
        store.add_chunk("r1", empty.slice(0, 0), _requests(keys[150:300]), None)  # overlaps the batch before
        store.add_chunk("r1", empty.slice(0, 0), _requests(keys[280:320] + keys[300:310]), None)
        store.finish_ingest("r1")
    finally:
        store.close()
    store = Store.open(path)  # a later run: what is stored is read again
    try:
        store.reset_ingest("r2")
        store.add_chunk("r2", empty.slice(0, 0), _requests(keys[250:400] + keys[:10]), None)
        store.add_chunk("r2", empty.slice(0, 0), _requests(keys[390:450]), None)
        store.add_chunk("r2", empty.slice(0, 0), _requests(keys[440:500] + keys[5:15] + keys[499:500]), None)
        store.finish_ingest("r2")
    finally:
        store.close()
    with duckdb.connect(str(path), read_only=True) as con:
        count = con.execute("SELECT count(*), count(DISTINCT key) FROM requests").fetchone()
    assert count == (500, 500)
