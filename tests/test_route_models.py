"""Routing across candidate models (--models, --route) end to end: the real CLI, the simulator over real HTTP (told to
answer badly for a seeded share of a cheap model's requests), a real store. The escalated rows are exactly the ones
the cheap model failed, both answers are in the ledger, the budget policy upgrades the highest-priority rows only."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from costinfer.pricing.catalog import Catalog
from costinfer.reading.tokens import TokenCounter
from costinfer.simulator import Simulator, SimulatorConfig, running_in_thread
from costinfer.simulator.answers import answers_badly
from costinfer.simulator.config import Answers
from tests.conftest import Cli, read_jsonl, sim_log, write_jsonl

ENV = {"OPENAI_API_KEY": "sk-test"}
ROWS = [
    {"id": f"r{i}", "prompt": f"Classify support ticket number {i}: my order {i} has not arrived"} for i in range(80)
]
ROUTE = ["--models", "gpt-4o-mini,gpt-4o"]


@pytest.fixture
def bad_sim(tmp_path: Path) -> Iterator[Simulator]:
    cfg = SimulatorConfig(
        log_path=tmp_path / "sim.jsonl", answers=Answers(bad_answers=(("gpt-4o-mini", 0.3),)), seed=11
    )
    with running_in_thread(cfg) as server:
        yield server


def _run(cli: Cli, data: Path, store: Path, url: str, out: Path, *extra: str) -> dict:
    result = cli(
        "run", data, "--store", store, "--provider", "openai", "--base-url", url, "-o", out, "--json", *extra, env=ENV
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _ledger(store: Path) -> list[tuple[str, str, int, int, int, int, Decimal]]:
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(
            "SELECT key, model, input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_usd FROM calls "
            "WHERE status = 'ok'"
        ).fetchall()


def test_a_cascade_escalates_exactly_the_rows_the_cheap_model_answered_badly(
    cli: Cli, tmp_path: Path, bad_sim: Simulator
) -> None:
    data = write_jsonl(tmp_path / "tickets.jsonl", ROWS)
    store, out = tmp_path / "s.duckdb", tmp_path / "out.jsonl"
    summary = _run(cli, data, store, bad_sim.url, out, *ROUTE, "--route", "cascade", "--accept-nonempty")
    expected_bad = {
        r["id"]
        for r in ROWS
        if answers_badly({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": r["prompt"]}]}, bad_sim.cfg)
    }
    assert 10 < len(expected_bad) < 40  # the seeded 30% share: a real subset, neither none nor all
    results = {r["id"]: r for r in read_jsonl(out)}
    escalated = {i for i, r in results.items() if r["source"] == "escalated"}
    assert escalated == expected_bad
    for i, r in results.items():
        assert r["model"] == ("gpt-4o" if i in expected_bad else "gpt-4o-mini")
        assert "I'm sorry" not in r["response"]  # every row holds the accepted answer
        assert ("escalated to gpt-4o" in r["route"]) == (i in expected_bad)
        assert ("refused" in r["route"]) == (i in expected_bad)
    # both answers of an escalated row were paid and are in the ledger; the results' costs are the ledger's
    calls = _ledger(store)
    by_model = Counter(c[1] for c in calls)
    assert by_model == {"gpt-4o-mini": len(ROWS), "gpt-4o": len(expected_bad)}
    catalog = Catalog.load()
    for _, model, tokens_in, tokens_out, cached, written, cost in calls:
        assert cost == catalog.lookup(model, "openai").cost(tokens_in, tokens_out, cached, written)
    ledger_total = sum((c[6] for c in calls), Decimal(0))
    assert sum(Decimal(str(r["cost_usd"])) for r in results.values()) == ledger_total
    assert Decimal(summary["run_cost_usd"]) == ledger_total
    assert summary["escalated"] == len(expected_bad)
    assert Counter(line["model"] for line in sim_log(bad_sim) if line["status"] == 200) == by_model
    # the escalated answer is cached under gpt-4o's own request: asking gpt-4o directly later pays nothing for them
    direct = write_jsonl(tmp_path / "direct.jsonl", [r for r in ROWS if r["id"] in expected_bad])
    again = _run(cli, direct, store, bad_sim.url, tmp_path / "direct.out.jsonl", "--model", "gpt-4o")
    assert again["calls"] == 0 and again["cache_hits"] == len(expected_bad)


def test_a_cascade_rerun_checks_cached_answers_and_pays_nothing(cli: Cli, tmp_path: Path, bad_sim: Simulator) -> None:
    data = write_jsonl(tmp_path / "tickets.jsonl", ROWS[:30])
    store = tmp_path / "s.duckdb"
    cascade = [*ROUTE, "--route", "cascade"]  # refusals escalate without a check of the user's
    first = _run(cli, data, store, bad_sim.url, tmp_path / "a.jsonl", *cascade)
    assert first["escalated"] > 0
    second = _run(cli, data, store, bad_sim.url, tmp_path / "b.jsonl", *cascade)
    assert second["calls"] == 0 and second["cache_hits"] == 30
    a = {r["id"]: (r["model"], r["response"]) for r in read_jsonl(tmp_path / "a.jsonl")}
    b = {r["id"]: (r["model"], r["response"]) for r in read_jsonl(tmp_path / "b.jsonl")}
    assert a == b  # the cached bad answers were checked again and their escalated answers reused


def test_a_user_check_command_escalates_the_rows_it_rejects_and_a_rows_own_model_wins(
    cli: Cli, tmp_path: Path, sim: Simulator
) -> None:
    rejected = {"r3", "r7", "r11", "r12"}
    check = tmp_path / "check.py"
    check.write_text(
        "import json, sys\n"
        "row = json.load(sys.stdin)\n"
        f"if row['id'] in {sorted(rejected)!r}:\n"
        "    print('too vague', file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    rows = [dict(r) for r in ROWS[:16]]
    rows[7]["model"] = "gpt-4o-mini"  # its own model: never routed, never escalated, even though the check fails
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "out.jsonl"
    cmd = f"{sys.executable} {check}"
    summary = _run(cli, data, tmp_path / "s.duckdb", sim.url, out, *ROUTE, "--accept-cmd", cmd)
    results = {r["id"]: r for r in read_jsonl(out)}
    assert {i for i, r in results.items() if r["source"] == "escalated"} == rejected - {"r7"}
    assert results["r3"]["route"] == "gpt-4o-mini: --accept-cmd exited 1: too vague; escalated to gpt-4o"
    assert results["r7"]["model"] == "gpt-4o-mini" and results["r7"]["route"] is None
    assert summary["calls"] == 16 + 3


def _worst(model: str, bound: int, max_tokens: int = 512) -> Decimal:
    return Catalog.load().lookup(model, "openai").worst_case(bound, max_tokens)


def test_the_budget_policy_upgrades_only_the_highest_priority_rows_and_stays_within_the_budget(
    cli: Cli, tmp_path: Path, sim: Simulator
) -> None:
    rows = [{"id": f"p{i}", "prompt": f"Summarize report {i} in one line", "priority": (i * 7) % 20} for i in range(20)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    bodies = [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": r["prompt"]}], "max_tokens": 512}
              for r in rows]  # fmt: skip
    _, bounds = TokenCounter().measure(bodies)
    cheap = [_worst("gpt-4o-mini", b) for b in bounds]
    strong = [_worst("gpt-4o", b) for b in bounds]
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["priority"])
    upgrades = 6  # the budget holds every row on the cheap model plus six upgrades, not seven
    budget = sum(cheap, Decimal(0)) + sum((strong[i] - cheap[i] for i in order[:upgrades]), Decimal(0))
    budget += (strong[order[upgrades]] - cheap[order[upgrades]]) / 2
    out = tmp_path / "out.jsonl"
    summary = _run(cli, data, tmp_path / "s.duckdb", sim.url, out, *ROUTE, "--route", "budget", "--budget", str(budget))
    results = {r["id"]: r for r in read_jsonl(out)}
    upgraded = {i for i, r in results.items() if r["model"] == "gpt-4o"}
    assert upgraded == {rows[i]["id"] for i in order[:upgrades]}
    assert all(results[i]["route"] == "upgraded to gpt-4o within the budget" for i in upgraded)
    assert Decimal(summary["run_cost_usd"]) <= budget
    assert summary["routed"] == upgrades and summary["not_run"] == 0


def test_cheapest_sends_what_the_cheap_model_cannot_take_to_the_next_one(
    cli: Cli, tmp_path: Path, sim: Simulator
) -> None:
    config = tmp_path / "costinfer.toml"
    config.write_text(
        '[models."small-model"]\nlitellm_provider = "openai"\ninput_cost_per_token = 0.00000005\n'
        "output_cost_per_token = 0.0000002\nmax_input_tokens = 160\nmax_output_tokens = 4096\n"
        "supports_function_calling = false\n"
    )
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    rows = [
        {"id": "short", "prompt": "Say hi"},
        {"id": "long", "prompt": "Summarize this: " + "the quick brown fox jumps over the lazy dog " * 20},
        {"id": "tools", "prompt": "Look it up", "tools": [tool]},
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "out.jsonl"
    summary = _run(
        cli, data, tmp_path / "s.duckdb", sim.url, out, "--config", config, "--models", "small-model,gpt-4o-mini"
    )
    results = {r["id"]: r for r in read_jsonl(out)}
    assert results["short"]["model"] == "small-model" and results["short"]["route"] is None
    assert results["long"]["model"] == "gpt-4o-mini"
    assert results["long"]["route"].startswith("routed to gpt-4o-mini: prompt longer than small-model's 160 tokens")
    assert results["tools"]["route"] == "routed to gpt-4o-mini: small-model takes no tools"
    assert summary["rejects"] == 0 and summary["routed"] == 2


def test_plan_shows_the_cost_with_and_without_routing(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    args = ["plan", data, "--store", tmp_path / "s.duckdb", *ROUTE, "--route", "cascade"]
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    routing = json.loads(result.stdout)["routing"]
    assert routing["requests_by_model"] == {"gpt-4o-mini": len(ROWS)}
    with_routing, without = Decimal(routing["with_routing_usd"]), Decimal(routing["without_routing_usd"])
    assert 0 < with_routing < without
    assert routing["expected_escalations"] == 16  # the assumed 20%, said as such until the dataset has history
    assert "assumed 20%" in routing["escalation_basis"]
    text = cli(*args, env={"COLUMNS": "200"}).stdout
    assert "with routing" in text and "without (all to gpt-4o)" in text and "Expected savings" in text


def test_routing_options_that_do_not_fit_together_are_one_line_errors(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:2])
    cases = [
        (["--route", "cascade"], "--route and --accept-* need --models"),
        (["--models", "gpt-4o-mini"], "--models needs two models or more"),
        ([*ROUTE, "--route", "fastest"], "--route must be one of cheapest, cascade, budget"),
        ([*ROUTE, "--route", "budget"], "--route budget needs --budget"),
        ([*ROUTE, "--route", "cheapest", "--accept-regex", "x"], "--accept-* checks answers in a cascade"),
        ([*ROUTE, "--accept-regex", "("], "--accept-regex '(': not a regular expression"),
        (["--models", "gpt-4o-mini,gpt-4o-mni"], "did you mean 'gpt-4o-mini'"),
    ]
    for extra, message in cases:
        result = cli("plan", data, "--store", tmp_path / "s.duckdb", *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (extra, result.output)


def test_costinfer_toml_routing_gives_the_defaults(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "costinfer.toml"
    config.write_text('[routing]\nmodels = ["gpt-4o-mini", "gpt-4o"]\nroute = "cascade"\naccept_nonempty = true\n')
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:10])
    result = cli("plan", data, "--store", tmp_path / "s.duckdb", "--config", config, "--json")
    assert result.exit_code == 0, result.output
    routing = json.loads(result.stdout)["routing"]
    assert routing["policy"] == "cascade" and routing["candidates"] == ["gpt-4o-mini", "gpt-4o"]
    config.write_text('[routing]\nmodels = "gpt-4o"\n')
    result = cli("plan", data, "--store", tmp_path / "s.duckdb", "--config", config)
    assert result.exit_code == 2 and "[routing] models must be a list of model names" in result.output


def test_the_budget_policy_takes_a_difficulty_column_after_priority(cli: Cli, tmp_path: Path, sim: Simulator) -> None:
    rows = [{"id": f"d{i}", "prompt": f"Prove lemma {i} carefully", "difficulty": str(i % 5)} for i in range(10)]
    data = tmp_path / "d.csv"
    data.write_text("id,prompt,difficulty\n" + "".join(f"{r['id']},{r['prompt']},{r['difficulty']}\n" for r in rows))
    bodies = [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": r["prompt"]}], "max_tokens": 512}
              for r in rows]  # fmt: skip
    _, bounds = TokenCounter().measure(bodies)
    cheap = [_worst("gpt-4o-mini", b) for b in bounds]
    strong = [_worst("gpt-4o", b) for b in bounds]
    hardest = [i for i in range(10) if rows[i]["difficulty"] == "4"]  # d4 and d9
    budget = sum(cheap, Decimal(0)) + sum((strong[i] - cheap[i] for i in hardest), Decimal(0)) + Decimal("0.0001")
    out = tmp_path / "out.jsonl"
    _run(cli, data, tmp_path / "s.duckdb", sim.url, out, *ROUTE, "--route", "budget", "--budget", str(budget))
    results = read_jsonl(out)
    assert {r["id"] for r in results if r["model"] == "gpt-4o"} == {"d4", "d9"}
    assert results[4]["metadata"] == {"difficulty": 4.0}
