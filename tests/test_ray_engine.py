"""Embeddings on Ray (issue 16), on a local Ray started in the test process (this machine's 2 CPUs): the same results
and the same store as the local engine, and a worker killed mid-run loses nothing and stores nothing twice."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from costinfer.simulator import Simulator
from tests.conftest import SHARED_DATA, Cli, read_jsonl, sim_log, subprocess_cli, write_jsonl


def needs_ray(test: Any) -> Any:
    for mark in (
        pytest.mark.skipif(
            importlib.util.find_spec("ray") is None,
            reason="the ray extra is not installed (pip install 'costinfer[ray]')",
        ),
        pytest.mark.skipif(
            importlib.util.find_spec("sentence_transformers") is None, reason="the semantic extra is not installed"
        ),
        pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"reference data not found at {SHARED_DATA}"),
    ):
        test = mark(test)
    return test


def test_without_ray_the_ray_engine_says_how_to_install_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like to an import
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "prompt": "hello"}])
    result = cli("plan", data, "--store", tmp_path / "s.duckdb", "--semantic", "--engine", "ray")
    assert result.exit_code == 2
    assert "pip install 'costinfer[ray]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.duckdb").exists()  # refused before anything was read or written


def banking_rows(n: int) -> list[dict[str, Any]]:
    with (SHARED_DATA / "banking77" / "test.csv").open(encoding="utf-8", newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)][:n]
    return [{"id": f"r{i}", "prompt": t, "max_tokens": 8} for i, t in enumerate(texts)]


def stored_vectors(path: Path) -> dict[str, np.ndarray]:
    with duckdb.connect(str(path), read_only=True) as db:
        rows = db.execute("SELECT text_hash, vector FROM embeddings").fetchall()
    return {h: np.array(v, dtype=np.float32) for h, v in rows}


@needs_ray
def test_the_ray_engine_gives_the_local_engines_results_and_store_row_for_row(
    cli: Cli, sim: Simulator, tmp_path: Path
) -> None:
    # more texts than one Ray block and one window of the encoder (1,024): the batches must be formed alike across them
    data = write_jsonl(tmp_path / "d.jsonl", banking_rows(2500))
    out: dict[str, list[dict[str, Any]]] = {}
    for engine in ("local", "ray"):
        result = cli(
            "run", data, "--base-url", sim.url, "--store", tmp_path / f"{engine}.duckdb", "--output",
            tmp_path / f"{engine}.jsonl", "--semantic", "--engine", engine, "--no-report",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        out[engine] = read_jsonl(tmp_path / f"{engine}.jsonl")
    fields = ("id", "source", "reused_from", "response", "key", "error")
    local = [{k: r.get(k) for k in fields} for r in out["local"]]
    on_ray = [{k: r.get(k) for k in fields} for r in out["ray"]]
    assert on_ray == local
    # the vectors agree within 1e-5 (below): a similarity rounded to 6 digits may differ in its last one
    sims = [(r.get("similarity"), s.get("similarity")) for r, s in zip(out["local"], out["ray"], strict=True)]
    assert all((a is None) == (b is None) and (a is None or abs(a - b) <= 2e-6) for a, b in sims)
    assert sum(r["source"] == "semantic" for r in local) > 0  # the tier did reuse something, the same way
    a, b = stored_vectors(tmp_path / "local.duckdb"), stored_vectors(tmp_path / "ray.duckdb")
    assert a.keys() == b.keys() and len(a) >= 2400
    assert max(float(np.abs(a[h] - b[h]).max()) for h in a) < 1e-5


@needs_ray
def test_a_worker_killed_between_batches_is_replaced_and_every_text_comes_back_once(tmp_path: Path) -> None:
    """In process: the first batch names the worker that made it; that worker is killed (SIGKILL) while the others
    are pending; Ray starts another, and every text comes back once, with the vector the local engine gives."""
    from costinfer.engines.ray_embed import RayEncoder
    from costinfer.reuse.embeddings import Embedder, model_source
    from costinfer.store import Store

    texts = [r["prompt"] for r in banking_rows(3000)]
    encoder = RayEncoder(model_source("all-MiniLM-L6-v2"))
    got: dict[int, np.ndarray] = {}
    killed = None
    for indexes, vectors in encoder.encode_batches(texts):
        for i, v in zip(indexes, vectors, strict=True):
            assert i not in got
            got[i] = v
        if killed is None:
            # a worker that made a batch and is still there: on a loaded machine Ray's actor pool may already have
            # scaled one down (ray.kill), and killing a pid that is gone proves nothing: try the next batch's
            for pid in list(encoder.worker_texts):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
    assert killed is not None
    assert sorted(got) == list(range(len(texts)))
    assert set(encoder.worker_texts) - {killed}, "no other worker finished the work"
    sample = [0, 1234, 2999]
    with Store.open(tmp_path / "s.duckdb") as store:
        expected = Embedder(store).encode([texts[i] for i in sample])
    assert np.allclose(np.stack([got[i] for i in sample]), expected, atol=1e-5)


def _ray_workers() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "MapWorker"], capture_output=True, text=True).stdout.split()
    return {int(p) for p in found}


@needs_ray
def test_a_ray_worker_killed_mid_run_loses_nothing_and_pays_nothing_twice(sim: Simulator, tmp_path: Path) -> None:
    """The real CLI in its own process with its own local Ray; an embedding worker is killed (SIGKILL) while the run
    embeds. The run ends normally: every row answered, each distinct request called once, each text embedded and
    stored once."""
    rows = banking_rows(3000)
    rows += [dict(r, id=f"{r['id']}-again") for r in rows[:200]]  # exact duplicates: one call each
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    store, out = tmp_path / "s.duckdb", tmp_path / "out.jsonl"
    before = _ray_workers()
    proc = subprocess_cli(
        "run", data, "--base-url", sim.url, "--store", store, "--output", out, "--semantic", "--engine", "ray",
        "--no-report", "--json", env={"COSTINFER_SEMANTIC": "1", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        workers = _ray_workers() - before
        if workers:
            time.sleep(1.0)  # let it load the model and start on its first batches
            killed = min(workers)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None, f"no Ray worker was seen while the run embedded: {stderr[-2000:]}"
    assert proc.returncode == 0, stderr[-2000:]
    assert stdout.strip(), stderr[-3000:]
    summary = json.loads(stdout)
    results = read_jsonl(out)
    assert len(results) == len(rows) and all(r["error"] is None for r in results)
    answered = Counter(e["digest"] for e in sim_log(sim) if e["status"] == 200)
    assert set(answered.values()) == {1} and len(answered) == summary["calls"]  # nothing paid twice
    with duckdb.connect(str(store), read_only=True) as db:
        stored, distinct = db.execute("SELECT count(*), count(DISTINCT text_hash) FROM embeddings").fetchone()
    assert stored == distinct >= 2900  # every text embedded once, none twice
