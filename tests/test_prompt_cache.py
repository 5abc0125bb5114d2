"""Provider prompt caching end to end: requests that share a long system prompt are sent back to back, Anthropic's
requests carry a cache_control breakpoint after the shared prefix, and the cached tokens the provider reports are in
the ledger, priced at the catalog's cached rates (reads, and Anthropic's writes)."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from costinfer.backends.anthropic import mark_shared_prefix
from costinfer.pricing.catalog import Catalog
from costinfer.reading.tokens import TokenCounter
from costinfer.simulator import Simulator
from costinfer.simulator.answers import body_digest
from tests.conftest import Cli, provider_args, read_jsonl, sim_log, write_jsonl

SENTENCE = "Answer as the support desk of a bicycle shop: be brief, polite and exact about parts and prices. "
POLICY_A = "Policy A. " + SENTENCE * 105  # about 2,000 tokens each
POLICY_B = "Policy B. " + SENTENCE * 105


def _rows() -> list[dict]:
    # two long system prompts, interleaved in the input: sent grouped, each group's prefix is cached after its first
    return [
        {"id": f"q{i}", "system": POLICY_A if i % 2 == 0 else POLICY_B, "prompt": f"Customer question {i}?"}
        for i in range(200)
    ]


def _ledger(store: Path) -> list[tuple[str, str, int, int, int, int, Decimal]]:
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(
            "SELECT key, model, input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_usd FROM calls"
        ).fetchall()


def test_the_shared_prefix_is_about_2000_tokens() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": POLICY_A}]}
    assert 1900 <= TokenCounter().count_body(body) <= 2300


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_requests_sharing_a_system_prompt_are_sent_together_and_billed_at_the_cached_rate(
    cli: Cli, tmp_path: Path, sim: Simulator, protocol: str
) -> None:
    rows = _rows()
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    store, out = tmp_path / "s.duckdb", tmp_path / "out.jsonl"
    args, env = provider_args(protocol, sim.url)
    model = "claude-sonnet-4-5" if protocol == "anthropic" else "gpt-4o-mini"
    args = [a if a != "claude-haiku-4-5" else model for a in args]
    result = cli("run", data, "--store", store, *args, "-o", out, "--json", "--max-tokens", "64", env=env)
    assert result.exit_code == 0, result.output
    calls = _ledger(store)
    assert len(calls) == 200
    price = Catalog.load().lookup(model, protocol)
    for _, _, tokens_in, tokens_out, cached, written, cost in calls:
        assert cost == price.cost(tokens_in, tokens_out, cached, written)  # cached reads and writes at their rates
    hits = [c for c in calls if c[4] > 0]
    assert len(hits) == 198  # every request but the first of each system prompt read its prefix from the cache
    assert all(c[4] >= 1900 for c in hits)
    if protocol == "anthropic":
        writes = [c for c in calls if c[5] > 0]
        assert len(writes) == 2 and all(c[5] >= 1900 for c in writes)  # one cache write per prefix
        assert price.cache_write > price.input > price.cached_input
    else:
        assert all((c[4] - 1024) % 128 == 0 for c in hits)  # OpenAI reports hits in steps of 128 tokens
    summary = json.loads(result.stdout)
    saved = Decimal(summary["saved_usd"]["prompt_cache"])
    assert saved > 0
    uncached = sum((price.cost(c[2], c[3]) for c in calls), Decimal(0))
    assert saved == uncached - sum((c[6] for c in calls), Decimal(0))  # the prompt cache's lever, exactly
    assert len(read_jsonl(out)) == 200
    if protocol == "openai":  # the simulator's log, in arrival order: the groups came one after the other
        group = {}
        for r in rows:
            messages = [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["prompt"]}]
            body = {"model": model, "messages": messages, "max_tokens": 64}
            group[body_digest(body)] = r["system"][:8]
        order = [group[line["digest"]] for line in sim_log(sim) if line["status"] == 200]
        switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
        assert switches <= 3  # in input order it would switch 199 times


def test_the_plan_estimates_the_prompt_cache_saving(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", _rows())
    result = cli("plan", data, "--store", tmp_path / "s.duckdb", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    price = Catalog.load().lookup("gpt-4o-mini", "openai")
    estimate = Decimal(plan["levers"]["prompt_cache"])
    # two groups of 100, each about 2,000 cached tokens for 99 requests, at the input price less the cached one
    per_token = price.input - price.cached_input
    assert 2 * 99 * 1900 * per_token <= estimate <= 2 * 99 * 2300 * per_token


def test_anthropic_breakpoint_goes_after_the_shared_prefix() -> None:
    """The request shape of Anthropic's prompt caching docs: a text block with cache_control {"type": "ephemeral"}."""
    with_system = {"model": "m", "max_tokens": 5, "system": "policy", "messages": [{"role": "user", "content": "q"}]}
    marked = mark_shared_prefix(with_system)
    assert marked["system"] == [{"type": "text", "text": "policy", "cache_control": {"type": "ephemeral"}}]
    assert marked["messages"] == with_system["messages"]
    few_shot = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "example"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": "the question"},
        ],
    }
    marked = mark_shared_prefix(few_shot)
    assert marked["messages"][1]["content"] == [
        {"type": "text", "text": "answer", "cache_control": {"type": "ephemeral"}}
    ]
    assert marked["messages"][2] == {"role": "user", "content": "the question"}
