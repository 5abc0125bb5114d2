"""The end of a run: its summary from the store, what reuse saved, the report, the metrics file, the semantic audit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costinfer.accounting.output_files import (
    remove_stale,
    write_jsonl_atomically,
    write_or_explain,
    write_or_explain_report,
)
from costinfer.accounting.summary import RunSummary, savings
from costinfer.pipeline.call import Called, Calling
from costinfer.report import write_report


def account(c: Calling, called: Called) -> RunSummary:
    store, run_id, prepared, spec = c.store, c.run_id, c.prepared, c.spec
    outcome, clock = called.outcome, prepared.clock
    stop_reason = outcome.stop_reason
    summary = store.summary(run_id)
    notes = list(prepared.notes)
    notes.extend(c.backend.server_report())
    if called.gpu_note is not None:
        notes.append(called.gpu_note)
    if c.guard.overruns:
        notes.append(f"{c.guard.overruns} calls were billed more than their reserved worst case")
    if stop_reason == "interrupted":
        notes.append("stopped: rerun the same command to resume; answered rows will not be paid again")
    saved = savings(store, run_id, prepared.prices)
    if spec.reuse.audit:
        notes.append(_semantic_audit(c))
    reports: list[str] = []
    results = spec.output.results
    if spec.output.report:
        written = write_or_explain_report(lambda: write_report(store, run_id, prepared.prices, results), results)
        reports = [str(p) for p in written]
    clock.mark("report")
    tokens_in, tokens_out = int(summary["input_tokens"]), int(summary["output_tokens"])
    value = RunSummary(
        run_id=run_id,
        resumed=prepared.resumed,
        rows=int(summary["rows"]),
        rejects=int(summary["rejects"]),
        distinct=prepared.counts["distinct"],
        calls=outcome.calls_done,
        fresh=int(summary["fresh"]),
        duplicates=int(summary["duplicates"]),
        cache_hits=int(summary["cache_hits"]),
        normalized=int(summary["normalized"]),
        semantic=int(summary["semantic"]),
        fallback=int(summary["fallback"]),
        routed=int(summary["routed"]),
        escalated=int(summary["escalated"]),
        embeddings_computed=prepared.embeddings_computed,
        failed=int(summary["failed"]),
        saved_usd=saved,
        not_run=int(summary["not_run"]),
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        reasoning_tokens=int(summary["reasoning_tokens"]),
        cost_usd=outcome.cost_done,
        run_cost_usd=Decimal(summary["run_cost_usd"]),
        budget_usd=spec.money.budget_usd,
        stop_reason=stop_reason,
        output=str(results),
        rejects_file=prepared.rejects_file,
        elapsed_s=round(clock.elapsed(), 3),
        calls_elapsed_s=round(called.calls_elapsed, 3),
        retries=outcome.retries,
        notes=notes,
        plan=prepared.plan.as_dict(),
        timings=clock.rounded(),
        reports=reports,
        compare_with=_compare(c, tokens_in, tokens_out),
        rehearsal=c.backend.rehearsal,
    )
    metrics_file = spec.output.metrics_file
    if metrics_file is not None:
        from costinfer.report.metrics import write_metrics

        data = value.as_dict()
        write_or_explain(metrics_file, lambda: write_metrics(metrics_file, data, spec.input.label), True, store.path)
    return value


def _semantic_audit(c: Calling) -> str:
    """--semantic-audit N: N of the run's semantic reuses, drawn at random, in a file for a person to label."""
    path = c.spec.output.audit
    rows = c.store.semantic_reuses(c.run_id, c.spec.reuse.audit, seed=int(c.run_id[:8], 16))
    if not rows:
        remove_stale(path)
        return "--semantic-audit: the semantic tier answered no row of this run; nothing to check"
    lines = [{**r, "label": None} for r in rows]
    write_or_explain(path, lambda: write_jsonl_atomically(path, lines), True, c.store.path)
    return (
        f"{len(rows)} semantic reuses sampled into {path}: set each label to 1 (the same question) or 0, then run "
        f"`costinfer cache calibrate {path}` for the precision at each threshold"
    )


def _compare(c: Calling, tokens_in: int, tokens_out: int) -> dict[str, Any] | None:
    """--compare-with: what the run's billed tokens would have cost at that model's list prices."""
    name = c.spec.money.compare_with
    if not name:
        return None
    return {"model": name, "cost_usd": c.prepared.prices[name].cost(tokens_in, tokens_out)}
