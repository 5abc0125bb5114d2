"""Semantic de-duplication with the real embedding model: reuse near-duplicates, never a different question."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from costinfer.reuse.guards import conflict
from costinfer.reuse.tiers import strip_shared
from costinfer.simulator import Simulator
from costinfer.spec import DEFAULT_THRESHOLD
from tests.conftest import SHARED_DATA, Cli, read_jsonl, sim_log, write_jsonl

# Only the tests that embed need the semantic extra; the guard and template tests are pure and always run
needs_embeddings = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None, reason="the semantic extra is not installed"
)


def run(cli: Cli, sim: Simulator, data: Path, store: Path, *extra: str) -> tuple[dict, list[dict]]:
    out = data.with_suffix(".out.jsonl")
    result = cli("run", data, "--base-url", sim.url, "--store", store, "--output", out, "--semantic", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), read_jsonl(out)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Refund order 1234 please", "Refund order 1243 please"),
        ("I want two new cards", "I want three new cards"),
        ("I can log in to the app", "I can't log in to the app"),
        ("The transfer was approved", "The transfer was not approved"),
        ('Translate "good morning" to French', 'Translate "good night" to French'),
        ("Book a flight to Paris tomorrow", "Book a flight to London tomorrow"),
        ("I can't verify my identity", "I won't verify my identity"),
        ("My cash withdrawal was declined", "My cash withdrawal was partly declined"),
        ("Where do I find the exchange rate?", "How do I find the exchange rate?"),
    ],
)
def test_guards_refuse_pairs_that_differ_in_a_number_negation_quote_or_name(a: str, b: str) -> None:
    assert conflict(a, b) is not None


@needs_embeddings
def test_pairs_differing_only_in_a_number_or_negation_are_never_matched(
    cli: Cli, sim: Simulator, tmp_path: Path
) -> None:
    rows = [
        {"id": "a1", "prompt": "Please refund order 1234 today"},
        {"id": "a2", "prompt": "Please refund order 1243 today"},
        {"id": "b1", "prompt": "My card payment was approved"},
        {"id": "b2", "prompt": "My card payment was not approved"},
        {"id": "c1", "prompt": "I need 2 replacement cards"},
        {"id": "c2", "prompt": "I need 3 replacement cards"},
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    # even with a threshold that lets almost anything through, the guards hold
    summary, results = run(cli, sim, data, tmp_path / "s.duckdb", "--semantic-threshold", "0.3")
    assert summary["semantic"] == 0 and summary["calls"] == 6
    assert {r["source"] for r in results} == {"fresh"}


@needs_embeddings
def test_near_duplicates_share_one_call_and_say_where_the_answer_came_from(
    cli: Cli, sim: Simulator, tmp_path: Path
) -> None:
    rows = [
        {"id": "q1", "prompt": "What is your refund policy?"},
        {"id": "q2", "prompt": "what is  your REFUND policy?"},  # normalized tier: case and spaces
        {"id": "q3", "prompt": "What's your refund policy?"},  # semantic tier
        {"id": "q4", "prompt": "How do I close my account?"},
        {"id": "q5", "prompt": "What is the refund policy?", "semantic": False},  # opts out: a call of its own
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    summary, results = run(cli, sim, data, tmp_path / "s.duckdb")
    by_id = {r["id"]: r for r in results}
    assert by_id["q2"]["source"] == "normalized" and by_id["q2"]["reused_from"] == "q1"
    assert by_id["q3"]["source"] == "semantic" and by_id["q3"]["reused_from"] == "q1"
    assert DEFAULT_THRESHOLD <= by_id["q3"]["similarity"] <= 1
    assert by_id["q3"]["response"] == by_id["q1"]["response"] and by_id["q3"]["cost_usd"] == 0
    assert by_id["q4"]["source"] == "fresh" and by_id["q5"]["source"] == "fresh"
    assert summary["calls"] == 3 and summary["semantic"] == 1 and summary["normalized"] == 1
    # without its opt-out, q5 would have been answered semantically too
    rows[4]["semantic"] = True
    again, results2 = run(cli, sim, write_jsonl(tmp_path / "e.jsonl", rows), tmp_path / "s2.duckdb")
    assert {r["id"]: r["source"] for r in results2}["q5"] == "semantic" and again["calls"] == 2
    assert float(summary["saved_usd"]["semantic"]) > 0


@needs_embeddings
def test_across_runs_the_cache_answers_near_duplicates_and_no_embedding_is_computed_twice(
    cli: Cli, sim: Simulator, tmp_path: Path
) -> None:
    store = tmp_path / "s.duckdb"
    first = write_jsonl(
        tmp_path / "a.jsonl",
        [{"id": "x", "prompt": "How can I reset my PIN?"}, {"id": "y", "prompt": "Where is my new card?"}],
    )
    s1, _ = run(cli, sim, first, store)
    assert s1["calls"] == 2 and s1["embeddings_computed"] == 2
    second = write_jsonl(tmp_path / "b.jsonl", [{"id": "z", "prompt": "How do I reset my PIN?"}])
    s2, results = run(cli, sim, second, store)
    assert s2["calls"] == 0 and results[0]["source"] == "semantic" and results[0]["reused_from"] == "x"
    # the same texts again, for another model: nothing is answered yet, but every embedding is already stored
    s3, _ = run(cli, sim, first, store, "--model", "gpt-4o")
    assert s3["calls"] == 2 and s3["embeddings_computed"] == 0


def test_no_semantic_keeps_the_normalized_tier(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "d.jsonl", [{"prompt": "Hello   World"}, {"prompt": "hello world"}, {"prompt": "Hello, world!"}]
    )
    result = cli(
        "run",
        data,
        "--base-url",
        sim.url,
        "--store",
        tmp_path / "s.duckdb",
        "--output",
        tmp_path / "o.jsonl",
        "--no-semantic",
        "--json",
    )
    summary = json.loads(result.stdout)
    assert summary["normalized"] == 1 and summary["semantic"] == 0 and summary["calls"] == 2
    assert "semantic tier off (--no-semantic or COSTINFER_SEMANTIC=0)" in result.stderr


def test_template_boilerplate_is_not_what_is_compared() -> None:
    texts = [
        f"Customer message: {t}\nIntent label:"
        for t in ("my card is lost", "where is my card", "hi", "a b", "c", "d", "e", "f")
    ]
    assert strip_shared(texts)[:2] == ["my card is lost", "where is my card"]
    few = ["What is your refund policy?", "What's your refund policy?"]
    assert strip_shared(few) == few  # too few texts to tell a template from meaning


needs_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"reference data not found at {SHARED_DATA}")


@needs_embeddings
@needs_data
def test_banking77_reuses_answers_only_within_an_intent(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    with (SHARED_DATA / "banking77" / "test.csv").open(encoding="utf-8", newline="") as fh:
        rows = [
            {
                "id": f"b{i}",
                "prompt": f"Classify this banking customer message: {r['text']}\nIntent:",
                "max_tokens": 8,
                "metadata": {"label": r["category"]},
            }
            for i, r in enumerate(csv.DictReader(fh))
        ]
    data = write_jsonl(tmp_path / "banking.jsonl", rows)
    summary, results = run(cli, sim, data, tmp_path / "s.duckdb")
    label = {r["id"]: r["metadata"]["label"] for r in rows}
    reused = [r for r in results if r["source"] == "semantic"]
    same = sum(label[r["id"]] == label[r["reused_from"]] for r in reused)
    text = {r["id"]: r["prompt"][40:-8] for r in rows}  # the customer's message, without the template
    for r in reused:
        if label[r["id"]] != label[r["reused_from"]]:
            print(f"banking77: reused across intents: {text[r['id']]!r} <- {text[r['reused_from']]!r}")
    print(
        f"banking77 at {DEFAULT_THRESHOLD}: {len(rows)} rows, {summary['calls']} calls, {len(reused)} semantic reuses "
        f"(hit rate {len(reused) / len(rows):.3f}), {same} with the same intent: precision {same / len(reused):.3f}"
    )
    assert len(reused) > 0
    assert same / len(reused) >= 0.97


@needs_embeddings
@needs_data
def test_default_threshold_precision_on_stsb_test(cli: Cli, tmp_path: Path) -> None:
    pairs = tmp_path / "stsb-test.jsonl"
    with (SHARED_DATA / "stsb" / "sts-test.csv").open(encoding="utf-8") as fh, pairs.open("w") as out:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                out.write(json.dumps({"text1": row[5], "text2": row[6], "score": float(row[4])}) + "\n")
    result = cli(
        "cache",
        "calibrate",
        pairs,
        "--positive-min",
        "4.5",
        "--negative-max",
        "3",
        "--json",
        "--store",
        tmp_path / "s.duckdb",
    )
    table = json.loads(result.stdout)
    at_default = next(r for r in table["rows"] if r["threshold"] == DEFAULT_THRESHOLD)
    print(
        f"STS-B test at {DEFAULT_THRESHOLD}: precision {at_default['precision']:.3f}, recall "
        f"{at_default['recall']:.3f}, hit rate {at_default['hit_rate']:.3f} over {table['pairs']} pairs"
    )
    assert at_default["precision"] >= 0.97


@needs_embeddings
def test_the_normalized_tier_lends_an_earlier_runs_answer_before_this_runs_first(
    cli: Cli, sim: Simulator, tmp_path: Path
) -> None:
    store = tmp_path / "s.duckdb"
    first = write_jsonl(tmp_path / "a.jsonl", [{"id": "old", "prompt": "What is the refund policy?"}])
    s1, _ = run(cli, sim, first, store, "--no-semantic")
    assert s1["calls"] == 1
    rows = [
        {"id": "n1", "prompt": "what is the  REFUND policy?"},  # answered by the earlier run's request
        {"id": "n2", "prompt": "WHAT IS THE REFUND POLICY?"},  # so is this one, not by n1
        {"id": "p1", "prompt": "Is shipping   free?"},  # a form this run shares, nobody answered before
        {"id": "p2", "prompt": "is shipping free?"},
        {"id": "solo", "prompt": "Where is my parcel?"},
    ]
    second = write_jsonl(tmp_path / "b.jsonl", rows)
    s2, results = run(cli, sim, second, store, "--no-semantic")
    by_id = {r["id"]: r for r in results}
    assert by_id["n1"]["source"] == by_id["n2"]["source"] == "normalized"
    assert by_id["n1"]["reused_from"] == by_id["n2"]["reused_from"] == "old"
    assert by_id["p1"]["source"] == "fresh" and by_id["p2"]["source"] == "normalized"
    assert by_id["p2"]["reused_from"] == "p1"
    assert by_id["solo"]["source"] == "fresh"
    assert s2["calls"] == 2 and s2["normalized"] == 3


@needs_embeddings
def test_a_semantic_audit_samples_reuses_for_a_person_and_calibrate_reads_it_back(
    cli: Cli, sim: Simulator, tmp_path: Path
) -> None:
    rows = [
        {"id": "a1", "prompt": "What is your refund policy?"},
        {"id": "a2", "prompt": "What's your refund policy?"},
        {"id": "b1", "prompt": "How do I reset my password?"},
        {"id": "b2", "prompt": "How can I reset my password?"},
        {"id": "c1", "prompt": "When will my new card arrive?"},
        {"id": "c2", "prompt": "When will my new card arrive"},
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    summary, results = run(cli, sim, data, tmp_path / "s.duckdb", "--semantic-audit", "2")
    reused = {r["id"] for r in results if r["source"] == "semantic"}
    assert len(reused) >= 2
    audit = tmp_path / "d.out.semantic-audit.jsonl"  # beside the results, d.out.jsonl
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(lines) == 2 and {line["id"] for line in lines} <= reused
    for line in lines:
        assert line["text1"] != line["text2"] and line["similarity"] >= DEFAULT_THRESHOLD and line["label"] is None
    assert any("semantic reuses sampled into" in n for n in summary["notes"])
    unlabelled = cli("cache", "calibrate", audit, "--store", tmp_path / "s.duckdb")
    assert unlabelled.exit_code == 3 and "no labelled pairs" in unlabelled.output
    audit.write_text("".join(json.dumps({**line, "label": 1}) + "\n" for line in lines))
    labelled = cli("cache", "calibrate", audit, "--store", tmp_path / "s.duckdb", "--json")
    assert labelled.exit_code == 0, labelled.output
    assert json.loads(labelled.stdout)["pairs"] == 2


@needs_embeddings
def test_a_run_that_stops_on_a_bad_row_embeds_nothing(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    """The run stops on its bad rows before the semantic tier loads a model or embeds a text (issue 25)."""
    import duckdb

    from costinfer.errors import ExitCode

    rows: list[dict[str, object]] = [{"id": f"r{i}", "prompt": f"Where is my card number {i}?"} for i in range(20)]
    data = write_jsonl(tmp_path / "d.jsonl", [*rows, {"id": "bad", "prompt": 5}])
    store = tmp_path / "s.duckdb"
    result = cli("run", data, "--base-url", sim.url, "--store", store, "--semantic", "-o", tmp_path / "o.jsonl")
    assert result.exit_code == ExitCode.BAD_INPUT and "line 21" in result.stderr
    assert "embedding" not in result.stderr
    with duckdb.connect(str(store), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)
    # skipping the bad row, the same data goes through the tier
    skipped = cli(*["run", data, "--base-url", sim.url, "--store", store, "--semantic", "-o", tmp_path / "o.jsonl"],
                  "--on-bad-row", "skip")  # fmt: skip
    assert skipped.exit_code == 0, skipped.stderr
    with duckdb.connect(str(store), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchone() == (20,)


@needs_embeddings
def test_a_run_stopped_while_the_semantic_tier_embeds_makes_its_reuses_when_resumed(
    cli: Cli, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped while the semantic tier embeds (Ctrl-C during the minutes a million texts take), a run resumed with
    the same command makes the reuses it would have made: it used to find the run read and go straight to calling,
    with no semantic reuse at all, paying for every near-duplicate. The rows' opt-outs are known only while the
    dataset is read, so the resumed run reads it again."""
    from costinfer.errors import ExitCode
    from costinfer.reuse.embeddings import Embedder

    rows = [
        {"id": "q1", "prompt": "What is your refund policy?"},
        {"id": "q2", "prompt": "what is  your REFUND policy?"},
        {"id": "q3", "prompt": "What's your refund policy?"},
        {"id": "q4", "prompt": "How do I close my account?"},
        {"id": "q5", "prompt": "What is the refund policy?", "semantic": False},
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    store = tmp_path / "s.duckdb"
    embed = Embedder.embed

    def stopped(self: Embedder, texts: list[str], keep: bool = True) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(Embedder, "embed", stopped)
    first = cli("run", data, "--base-url", sim.url, "--store", store, "-o", tmp_path / "o.jsonl", "--semantic")
    assert first.exit_code == ExitCode.INTERRUPTED, first.stderr
    assert sim_log(sim) == []  # stopped before any call
    monkeypatch.setattr(Embedder, "embed", embed)
    summary, results = run(cli, sim, data, store)
    by_id = {r["id"]: r for r in results}
    assert by_id["q3"]["source"] == "semantic" and by_id["q3"]["reused_from"] == "q1"
    assert by_id["q2"]["source"] == "normalized" and by_id["q5"]["source"] == "fresh"  # its opt-out still holds
    assert summary["semantic"] == 1 and summary["normalized"] == 1 and summary["calls"] == 3
    assert len(sim_log(sim)) == 3
