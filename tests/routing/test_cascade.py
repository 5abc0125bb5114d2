"""The cascade on its own: the cheap candidate answers, the check judges, what fails goes to the stronger model."""

from __future__ import annotations

from pathlib import Path

from costinfer.routing.assign import assign
from costinfer.routing.cascade import escalate
from costinfer.routing.checks import Acceptance
from costinfer.store import Store
from tests.stagekit import ScriptedBackend, call_online, price, read_rows

MODELS = ["gpt-4o-mini", "gpt-4o"]


def _answer(body: dict[str, object]) -> str:
    messages = body["messages"]
    assert isinstance(messages, list)
    question = messages[-1]["content"]
    # the cheap model cannot answer the hard questions; the strong one answers everything
    return "no idea" if body["model"] == "gpt-4o-mini" and question.startswith("hard") else "yes"


def test_answers_that_fail_the_check_go_to_the_stronger_model_once(tmp_path: Path) -> None:
    store = Store.memory()
    rows = [{"prompt": f"easy {i}"} for i in range(6)] + [{"prompt": f"hard {i}"} for i in range(3)]
    run_id, ingest = read_rows(store, tmp_path, rows, route_models=tuple(MODELS))
    store.mark_routed(run_id, ingest.own_model)
    assign(store, run_id, MODELS, {m: price(m) for m in MODELS}, "cascade", "openai", None)
    backend = ScriptedBackend(answer=_answer)
    call_online(store, run_id, backend)
    check = Acceptance(regex="^(yes|no)$")
    assert escalate(store, run_id, MODELS, check, "openai") == 3  # the three hard ones
    call_online(store, run_id, backend)
    assert escalate(store, run_id, MODELS, check, "openai") == 0  # the strong answers pass: nothing more to do
    sent = [(b["model"], b["messages"][-1]["content"]) for b in backend.sent]
    assert sorted(m for m, q in sent if q.startswith("hard")) == ["gpt-4o", "gpt-4o", "gpt-4o"] + ["gpt-4o-mini"] * 3
    summary = store.summary(run_id)
    assert summary["escalated"] == 3 and summary["failed"] == 0 and summary["not_run"] == 0


def test_the_strongest_candidates_answer_is_final_even_when_it_fails_the_check(tmp_path: Path) -> None:
    store = Store.memory()
    run_id, ingest = read_rows(store, tmp_path, [{"prompt": "hard"}], route_models=tuple(MODELS))
    store.mark_routed(run_id, ingest.own_model)
    assign(store, run_id, MODELS, {m: price(m) for m in MODELS}, "cascade", "openai", None)
    backend = ScriptedBackend(answer=lambda body: "no idea")  # nobody passes
    check = Acceptance(regex="^yes$")
    call_online(store, run_id, backend)
    assert escalate(store, run_id, MODELS, check, "openai") == 1
    call_online(store, run_id, backend)
    assert escalate(store, run_id, MODELS, check, "openai") == 0  # nothing stronger is left
    assert len(backend.sent) == 2
