"""Where the money went, on made-up result groups: the waterfall starts at the naive cost, each lever's step is what
it saved, and the steps end exactly at what was paid."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from costinfer.accounting.summary import savings
from costinfer.accounting.waterfall import price_sources, reference_model, waterfall
from costinfer.reading.tokens import TokenCounter
from costinfer.store import Store
from tests.stagekit import ScriptedBackend, call_online, price, read_rows

MINI, STRONG = price("gpt-4o-mini"), price("gpt-4o")


def _group(source: str, rows: int, cost: Decimal, requested: str = "gpt-4o-mini", **more: Any) -> dict[str, Any]:
    return {"source": source, "requested": requested, "tag": None, "rows": rows, "counted_input": 100 * rows,
            "billed_input": 100 * rows, "output_tokens": 10 * rows, "cost_usd": cost, **more}  # fmt: skip


def test_the_steps_run_from_the_naive_cost_down_to_what_was_paid() -> None:
    paid = MINI.cost(300, 30)
    groups = [_group("fresh", 3, paid), _group("duplicate", 2, Decimal(0)), _group("semantic", 1, Decimal(0))]
    sources = price_sources(groups, {"gpt-4o-mini": MINI})
    fall = waterfall(sources, paid)
    steps = {s["lever"]: s["saved_usd"] for s in fall["steps"]}
    assert fall["naive_usd"] == MINI.cost(600, 60)  # every row as a call of its own
    assert steps == {"duplicate": MINI.cost(200, 20), "semantic": MINI.cost(100, 10)}
    assert fall["naive_usd"] - sum(steps.values()) == fall["actual_usd"] == paid


def test_routed_rows_are_priced_naively_at_the_strongest_candidate() -> None:
    paid = MINI.cost(400, 40)
    groups = [_group("fresh", 4, paid, routed=True, answered="gpt-4o-mini")]
    reference = reference_model({"models": ["gpt-4o-mini", "gpt-4o"]})
    assert reference == "gpt-4o"
    sources = price_sources(groups, {"gpt-4o-mini": MINI, "gpt-4o": STRONG}, reference)
    fall = waterfall(sources, paid)
    assert fall["naive_usd"] == STRONG.cost(400, 40)
    assert [s["lever"] for s in fall["steps"]] == ["routing"]
    assert fall["steps"][0]["saved_usd"] == STRONG.cost(400, 40) - paid


def test_billed_tokens_the_levers_do_not_explain_are_a_step_of_their_own() -> None:
    groups = [_group("fresh", 1, MINI.cost(100, 10))]
    fall = waterfall(price_sources(groups, {"gpt-4o-mini": MINI}), MINI.cost(150, 10))  # billed more than counted
    assert [s["lever"] for s in fall["steps"]] == ["other"]
    assert fall["steps"][0]["saved_usd"] == MINI.cost(100, 10) - MINI.cost(150, 10)


def test_a_runs_savings_are_one_account_kept_in_the_store(tmp_path: Path) -> None:
    store = Store.memory()
    run_id, _ = read_rows(store, tmp_path, [{"prompt": "a"}, {"prompt": "a"}, {"prompt": "b"}])
    call_online(store, run_id, ScriptedBackend())
    saved = savings(store, run_id, {"gpt-4o-mini": MINI})
    counted = TokenCounter().count_body({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a"}]})
    assert saved == {"duplicate": MINI.cost(counted, 5)}  # the duplicate: its counted prompt, the shared answer
    assert {s["source"] for s in store.run_sources(run_id)} == {"fresh", "duplicate"}
