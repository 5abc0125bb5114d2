"""``--route learned`` end to end: real ``costinfer run`` processes, the real embedding model, and the simulator as a
server of its own whose log is what was called and billed (each answer it botched on purpose is marked ``bad``).

The data are banking77's customer messages (../shared/data). The simulator's cheap model (gpt-4.1-mini) answers
badly, with a refusal the cascade's built-in check catches, either every message of 19 of the 77 intents (about 25%
of rows: a topic to learn) or a seeded 25% of all messages (nothing to learn). A first cascade run on 1,000 rows
makes the history; the learned run and a plain cascade then run the same 2,000 other rows on copies of that store.

Every store starts as a copy of one that holds the 3,000 messages' embeddings (``seed``, made once per test process
with the real model, as a semantic tier run over them would have stored them): the learned runs, the plan and
``route evaluate`` read them instead of embedding the same texts again in each test. A learned run that embeds its
own texts is tested on the shared store below and in the invariant harness.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from costinfer.pricing.catalog import Catalog
from costinfer.pricing.config_file import Config
from costinfer.routing.learned import EXPLORE, best_threshold, explores, fail_chance

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77" / "train.csv"
CLI = [sys.executable, "-m", "costinfer"]
MODELS = "gpt-4.1-mini,gpt-4.1"
CATALOG = Catalog.load(None, Config.load(None))
ENV = {**os.environ, "COSTINFER_SEMANTIC": "0"}  # the semantic tier off: the runs differ by routing alone

needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is missing (../shared/data/banking77)")


def test_the_failure_chance_is_that_of_the_nearest_checked_answers() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16))
    history = np.vstack([centres[i] + 0.05 * rng.normal(size=(40, 16)) for i in (0, 1)])
    history /= np.linalg.norm(history, axis=1, keepdims=True)
    failed = np.array([0.0] * 40 + [1.0] * 40)  # the second cluster always fails
    queries = np.vstack([centres[0], centres[1]])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    low, high = fail_chance(history, failed, queries)
    assert low < 0.1 and high > 0.9
    loo = fail_chance(history, failed, history, leave_one_out=True)
    assert (loo[:40] < 0.1).all() and (loo[40:] > 0.9).all()


def test_a_threshold_is_kept_only_where_it_would_have_saved_money() -> None:
    rng = np.random.default_rng(1)
    cheap, strong = np.full(400, 1.0), np.full(400, 5.0)
    failed = (rng.random(400) < 0.25).astype(float)
    # chances that know nothing (failures at random): no threshold pays, the route is the cascade
    assert best_threshold(rng.random(400) * 0.6, failed, cheap, strong)[0] is None
    # chances that know: the predicted failures fail
    threshold, share = best_threshold(np.where(failed > 0, 0.9, 0.1), failed, cheap, strong)
    assert threshold is not None and 0.1 < threshold <= 0.9 and share > 0.1


def test_exploration_is_a_fixed_share_chosen_by_the_key() -> None:
    keys = [f"k{i}" for i in range(20000)]
    share = sum(explores(k, 0) for k in keys) / len(keys)
    assert abs(share - EXPLORE) < 0.01
    assert [explores(k, 0) for k in keys[:200]] == [explores(k, 0) for k in keys[:200]]


@contextmanager
def simulator(log: Path, *extra: str) -> Iterator[str]:
    serve = [*CLI, "simulate", "serve", "--port", "0", "--log", str(log), *extra]
    with subprocess.Popen(serve, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            yield server.stdout.readline().strip()
        finally:
            server.terminate()


def _datasets(folder: Path) -> tuple[Path, Path, Path]:
    """first.jsonl (1,000 rows), second.jsonl (2,000 others), and the bad prompts: every message of 19 intents."""
    with DATA.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(7).shuffle(rows)
    intents = sorted({r["category"] for r in rows})
    bad = set(random.Random(3).sample(intents, 19))
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


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the embeddings of every message of both datasets, and nothing else: made by the first test
    process that asks, under a lock in the session's shared temporary folder, and read by the others."""
    import fcntl

    from costinfer.reuse.embeddings import Embedder
    from costinfer.store import Store

    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every xdist worker of the session
    done = shared / "learned-seed" / "seed.duckdb"
    done.parent.mkdir(exist_ok=True)
    with (shared / "learned-seed.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder = tmp_path_factory.mktemp("seed")
            texts = [json.loads(line)["prompt"] for p in _datasets(folder)[:2] for line in p.read_text().splitlines()]
            with Store.open(folder / "seed.duckdb") as store:
                Embedder(store).embed(texts)
            shutil.copy(folder / "seed.duckdb", done.with_suffix(".part"))
            done.with_suffix(".part").rename(done)
    return done


def _run(data: Path, store: Path, url: str, route: str, *extra: str, timeout: float = 300) -> dict[str, Any]:
    args = [*CLI, "run", str(data), "--store", str(store), "--provider", "simulate", "--base-url", url]
    args += ["--models", MODELS, "--route", route, "-o", str(store.with_suffix(".results.jsonl")), "--json", "-q"]
    done = subprocess.run([*args, *extra], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def _log(log: Path, since: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()[since:]]


def _calls(entries: list[dict[str, Any]]) -> tuple[int, Decimal]:
    """(cheap calls answered badly: the doomed ones, what the simulator billed) of answered calls."""
    doomed, billed = 0, Decimal(0)
    for e in entries:
        if e.get("status") != 200:
            continue
        usage = e["usage"]
        billed += CATALOG.lookup(str(e["model"]), "simulate").cost(
            int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        )
        doomed += e["model"] == "gpt-4.1-mini" and bool(e.get("bad"))
    return doomed, billed


def _lines(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _cascade_then(folder: Path, url: str, log: Path, first: Path, second: Path, seed: Path) -> dict[str, Any]:
    """The first cascade run, then the second dataset on copies of its store: a plain cascade and a learned
    route; each one's calls from the simulator's log."""
    base = folder / "history.duckdb"
    shutil.copy(seed, base)
    _run(first, base, url, "cascade")
    out: dict[str, Any] = {}
    for route in ("cascade", "learned"):
        store = folder / f"{route}.duckdb"
        shutil.copy(base, store)
        since = _lines(log)
        summary = _run(second, store, url, route)
        doomed, billed = _calls(_log(log, since))
        results = [json.loads(line) for line in store.with_suffix(".results.jsonl").read_text().splitlines()]
        out[route] = {"summary": summary, "doomed": doomed, "billed": billed, "results": results, "store": store}
    return out


@needs_data
def test_a_learned_route_skips_the_doomed_cheap_calls_of_a_topic_it_has_seen_fail(tmp_path: Path, seed: Path) -> None:
    first, second, bad = _datasets(tmp_path)
    log = tmp_path / "sim.log"
    with simulator(log, "--bad-answers", "gpt-4.1-mini=0", "--bad-prompts", str(bad)) as url:
        runs = _cascade_then(tmp_path, url, log, first, second, seed)
    cascade, learned = runs["cascade"], runs["learned"]
    # (a) no bad answer reaches the results: every row answered, none with the botched answer
    assert len(learned["results"]) == 2000
    assert all(r["error"] is None and r["response"] for r in learned["results"])
    assert not [r for r in learned["results"] if r["response"].startswith("I'm sorry")]
    # (b) at most 30% as many doomed cheap calls as the plain cascade on the same rows
    assert cascade["doomed"] > 400, cascade["doomed"]  # about a quarter of 2,000 rows fail on the cheap model
    assert learned["doomed"] <= 0.3 * cascade["doomed"], (learned["doomed"], cascade["doomed"])
    # (c) it costs less, by what the simulator billed; the ledger says the same to the digit
    assert learned["billed"] < cascade["billed"], (learned["billed"], cascade["billed"])
    assert Decimal(learned["summary"]["run_cost_usd"]) == learned["billed"]
    assert "learned routing: from" in " ".join(learned["summary"]["notes"])
    # the summary's savings show the cheap calls skipped as a step of their own
    assert Decimal(learned["summary"]["saved_usd"]["learned_routing"]) > 0
    # analyze: the router's predictions against the checks, per run
    done = _cli("analyze", "--store", learned["store"], "--include-rehearsals", "--json")
    router = next(g["learned_routing"] for g in json.loads(done.stdout)["groups"] if g.get("learned_routing"))
    assert router["skipped"] > 300 and router["checked"] > 1000 and router["accuracy"] > 0.8
    # the plan of the same rows on the history alone: the cheap calls its first round skips, against the cascade
    planned = tmp_path / "planned.duckdb"
    shutil.copy(tmp_path / "history.duckdb", planned)
    done = _cli("plan", second, "--store", planned, "--provider", "simulate", "--models", MODELS, "--route",
                "learned", "--json")  # fmt: skip
    plan = json.loads(done.stdout)["routing"]["learned"]
    assert plan["skipped_cheap_calls"] > 50 and Decimal(plan["cascade_usd"]) > Decimal(plan["expected_usd"])
    # route evaluate: the first dataset's checked answers, part held out
    done = _cli("route", "evaluate", first, "--models", MODELS, "--store", tmp_path / "history.duckdb", "--json")
    figures = json.loads(done.stdout)
    chosen = figures["chosen"]
    assert figures["held_out"] > 200 and chosen["threshold"] is not None
    assert chosen["precision"] > 0.8 and chosen["recall"] > 0.5 and chosen["saved_usd"] > 0


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@needs_data
def test_a_learned_route_costs_no_more_than_the_cascade_where_failures_are_random(tmp_path: Path, seed: Path) -> None:
    first, second, _ = _datasets(tmp_path)
    log = tmp_path / "sim.log"
    with simulator(log, "--bad-answers", "gpt-4.1-mini=0.25", "--seed", "5") as url:
        runs = _cascade_then(tmp_path, url, log, first, second, seed)
    cascade, learned = runs["cascade"], runs["learned"]
    assert cascade["doomed"] > 400
    assert learned["billed"] <= cascade["billed"] * Decimal("1.05"), (learned["billed"], cascade["billed"])
    assert all(r["error"] is None for r in learned["results"])
    # nothing to learn: the replay finds no threshold that pays, or one that saves next to nothing
    done = _cli("route", "evaluate", first, "--models", MODELS, "--store", tmp_path / "history.duckdb", "--json")
    assert json.loads(done.stdout)["chosen"]["saved_share"] < 0.02


def _decisions(store: Path) -> dict[str, tuple[str, float | None]]:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute("SELECT key, decision, fail_p FROM route_learned").fetchall()
    return {str(k): (str(d), None if p is None else round(float(p), 9)) for k, d, p in rows}


@needs_data
def test_a_learned_run_killed_and_resumed_makes_the_same_choices(tmp_path: Path, seed: Path) -> None:
    first, rest, bad = _datasets(tmp_path)
    second = tmp_path / "second-part.jsonl"  # three rounds: 500, 500 and 200 rows
    second.write_text("".join(rest.read_text().splitlines(keepends=True)[:1200]))
    log = tmp_path / "sim.log"
    with simulator(log, "--bad-answers", "gpt-4.1-mini=0", "--bad-prompts", str(bad), "--latency-ms", "40") as url:
        base = tmp_path / "history.duckdb"
        shutil.copy(seed, base)
        _run(first, base, url, "cascade", "-c", "64")
        whole, killed = tmp_path / "whole.duckdb", tmp_path / "killed.duckdb"
        shutil.copy(base, whole)
        shutil.copy(base, killed)
        _run(second, whole, url, "learned", "-c", "16")
        since = _lines(log)
        args = [*CLI, "run", str(second), "--store", str(killed), "--provider", "simulate", "--base-url", url]
        args += ["--models", MODELS, "--route", "learned", "-o", str(tmp_path / "k.jsonl"), "-q", "-c", "16"]
        proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while _lines(log) - since < 700 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # past the first round (500 rows and their escalations): later rounds are deciding
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _run(second, killed, url, "learned", "-c", "16")
    assert _decisions(killed) == _decisions(whole)
    assert {d for d, _ in _decisions(whole).values()} >= {"strong", "cheap"}


@needs_data
def test_on_a_shared_store_the_router_learns_from_another_process_run(tmp_path: Path, pg_url: str) -> None:
    first, second, bad = _datasets(tmp_path)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(second.read_text().splitlines(keepends=True)[:600]))
    log = tmp_path / "sim.log"

    def run(data: Path, route: str) -> dict[str, Any]:
        done = _cli("run", data, "--store", pg_url, "--provider", "simulate", "--base-url", url, "--models", MODELS,
                    "--route", route, "-o", data.with_suffix(".out.jsonl"), "--json", "-q")  # fmt: skip
        return dict(json.loads(done.stdout))

    with simulator(log, "--bad-answers", "gpt-4.1-mini=0", "--bad-prompts", str(bad)) as url:
        run(first, "cascade")
        learned = run(part, "learned")
    notes = " ".join(learned["notes"])
    assert "learned routing: from 99" in notes or "learned routing: from 1000" in notes, notes
    assert learned["routed"] > 50 and learned["failed"] == 0 and learned["not_run"] == 0
