"""What a run reports when it ends: the summary (``--json`` prints it) and what reuse saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costinfer.accounting.waterfall import learned_skipped_usd, price_sources, reference_model, savings_by_lever
from costinfer.errors import ExitCode
from costinfer.pricing.catalog import ModelPrice
from costinfer.store.faces import History


@dataclass
class RunSummary:
    run_id: str
    resumed: bool
    rows: int
    rejects: int
    distinct: int
    calls: int  # calls this invocation made and saved
    fresh: int
    duplicates: int
    cache_hits: int
    normalized: int  # rows answered by the normalized-text tier
    semantic: int  # rows answered by the semantic tier
    fallback: int  # rows answered by the fallback model while the provider kept failing
    routed: int  # rows sent to another candidate model before any call (--models)
    escalated: int  # rows whose cheaper answer failed the check and went to a stronger model (--route cascade)
    embeddings_computed: int
    failed: int
    not_run: int
    saved_usd: dict[str, Decimal]  # per lever: what it saved against every row sent at list price (the waterfall)
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int  # the part of output_tokens a reasoning model spent thinking
    cost_usd: Decimal  # billed by this invocation
    run_cost_usd: Decimal  # billed by the whole run, with earlier attempts before a resume
    budget_usd: Decimal | None
    stop_reason: str | None
    output: str
    rejects_file: str | None
    elapsed_s: float
    calls_elapsed_s: float  # the part of elapsed_s spent sending calls
    notes: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    # seconds per phase: setup, read (parse, key, count), index (distinct requests, reuse tiers), plan, calls,
    # results (the results file), report (the summary)
    timings: dict[str, float] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)  # the report files written beside the results (JSON, HTML)
    compare_with: dict[str, Any] | None = None  # --compare-with: the run's billed tokens at another model's prices
    rehearsal: bool = False  # the provider paid nothing (the simulator): costs are what the calls would have cost
    retries: int = 0  # attempts that failed and were tried again (429s, 5xx, timeouts)

    @property
    def unanswered(self) -> int:
        """Rows with no answer: a call failed for them, or nothing was sent (the budget, a stop, an interruption)."""
        return self.failed + self.not_run

    @property
    def exit_code(self) -> ExitCode:
        """0 only when every row has an answer, or (--no-wait) waits in a provider batch the user asked to collect
        later. Interrupted: 130; rows the budget left unsent: 4; any other row without an answer (a failed call, or
        not run for any other reason): 5."""
        if self.stop_reason == "interrupted":
            return ExitCode.INTERRUPTED
        if self.stop_reason == "budget" and self.not_run:
            return ExitCode.BUDGET
        if self.stop_reason == "submitted" and not self.failed:
            return ExitCode.OK
        if self.unanswered:
            return ExitCode.ROWS_FAILED
        return ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                value = money_text(value)
            elif isinstance(value, dict):
                value = {k: money_text(v) if isinstance(v, Decimal) else v for k, v in value.items()}
            out[name] = value
        out["exit_code"] = int(self.exit_code)
        return out


def usd(value: Any) -> str:
    """Dollars as people read them, one precision for costs and budgets alike, in the terminal and the report: at
    least cents, down to a millionth where that is what it takes ($1.00, $0.03249, $0.003825); n/a for no value."""
    if value is None:
        return "n/a"
    amount = Decimal(str(value)).quantize(Decimal("0.000001"))
    text = format(amount, "f").rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def money_text(value: Decimal) -> str:
    """Exact dollars as plain decimal text: no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def savings(store: History, run_id: str, prices: dict[str, ModelPrice]) -> dict[str, Decimal]:
    """What each lever saved against the naive cost (the report's waterfall steps): reuse tiers, routing, fallback,
    batch pricing, the provider's prompt cache. The priced sources are kept with the run (``run_sources``), so the
    summary, the report and ``costinfer analyze`` read one account, with or without a report."""
    sources = price_sources(store.result_groups(run_id), prices, reference_model(store.run(run_id) or {}))
    store.save_run_sources(run_id, sources)
    return savings_by_lever(sources, store.run_spend(run_id), learned_skipped_usd(store, run_id, prices))
