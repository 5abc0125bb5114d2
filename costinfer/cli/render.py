"""Progress and summaries for people: a rich progress bar on a terminal, plain lines elsewhere, nothing with --quiet."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from costinfer.accounting.summary import usd
from costinfer.progress import NullProgress, ProgressSink


class PlainProgress:
    """One line every few seconds on stderr, for CI logs and cron mail; the first failure or retry of each kind is
    printed when it happens, and every line counts them."""

    # an ETA from fewer calls than this, or from less time than one line's interval, is noise
    ETA_MIN_DONE = 10

    def __init__(self, console: Console, every_s: float = 5.0) -> None:
        self.console = console
        self.every_s = every_s
        self.name = ""
        self.total: int | None = None
        self.started = time.monotonic()
        self.last = self.started
        self.retries = 0
        self.failed = 0
        self._seen: set[tuple[str, str]] = set()

    def phase(self, name: str, total: int | None) -> None:
        self.name, self.total = name, total
        self.started = self.last = time.monotonic()
        if name == "calling":
            self.console.print(f"calling: {total} distinct requests to send", markup=False)
        elif name == "rehearsing":
            self.console.print(f"calling: {total} distinct requests to send (rehearsal: nothing is paid)", markup=False)

    def advance(self, done: int, cost_usd: Decimal) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and done != self.total:
            return
        self.last = now
        elapsed = now - self.started
        rate = done / max(elapsed, 1e-9)
        if self.name in ("calling", "rehearsing"):
            left = ""
            if self.total and done < self.total and done >= self.ETA_MIN_DONE and elapsed >= self.every_s:
                left = f", ETA {(self.total - done) / rate:.0f}s"
            trouble = "".join(
                f", {n} {label}" for n, label in ((self.failed, "failed"), (self.retries, "retries")) if n
            )
            spent = "would have cost (rehearsal)" if self.name == "rehearsing" else "spent"
            self.console.print(
                f"calling: {done}/{self.total} calls, ${cost_usd:.4f} {spent}, {rate:.1f} calls/s{trouble}{left}",
                markup=False,
            )
        elif self.name == "embedding":
            left = ""
            if self.total and done < self.total and elapsed >= self.every_s:
                left = f", ETA {(self.total - done) / max(rate, 1e-9):.0f}s"
            self.console.print(f"embedding: {done}/{self.total} texts, {rate:.0f} texts/s{left}", markup=False)
        else:
            self.console.print(f"{self.name}: {done} rows", markup=False)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)

    def problem(self, kind: str, text: str) -> None:
        if kind == "retry":
            self.retries += 1
        else:
            self.failed += 1
        error_class = text.split(":", 1)[0]
        if (kind, error_class) not in self._seen:  # the first of each kind at once; the rest in the counts
            self._seen.add((kind, error_class))
            what = "retrying" if kind == "retry" else "failed"
            self.console.print(f"{what}: {text} (more like it are counted in the progress lines)", markup=False)


class RichProgress:
    """A live bar: rows read, then calls done, dollars so far, rate and ETA."""

    def __init__(self, console: Console) -> None:
        self.console = console
        # the counts, dollars and rate are never cut: on a narrow terminal the bar shrinks, then the times go
        width = console.width
        columns: list[Any] = [TextColumn("{task.description}"), MofNCompleteColumn(), TextColumn("{task.fields[cost]}"),
                              TextColumn("{task.fields[rate]}")]  # fmt: skip
        if width >= 72:
            columns.insert(1, BarColumn(bar_width=min(40, width - 62)))
        if width >= 100:
            columns += [TimeElapsedColumn(), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=console, transient=False)
        self.task: Any = None
        self.started = time.monotonic()
        self.problems: dict[str, int] = {}

    def phase(self, name: str, total: int | None) -> None:
        if self.task is None:
            self.bar.start()
        else:
            self.bar.update(self.task, visible=name == "reading")
        self.started = time.monotonic()
        self.task = self.bar.add_task(name, total=total, cost="", rate="")

    def advance(self, done: int, cost_usd: Decimal) -> None:
        rate = done / max(time.monotonic() - self.started, 1e-9)
        what = self.bar.tasks[self.task].description
        cost = f"${cost_usd:.4f}" if what == "calling" else f"${cost_usd:.4f} unpaid" if what == "rehearsing" else ""
        self.bar.update(self.task, completed=done, cost=cost, rate=f"{rate:.0f}/s{self._trouble()}")

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)

    def problem(self, kind: str, text: str) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1

    def _trouble(self) -> str:
        return "".join(f", {n} {'retries' if k == 'retry' else 'failed'}" for k, n in sorted(self.problems.items()))

    def stop(self) -> None:
        if self.task is not None:
            self.bar.stop()


def make_progress(console: Console, quiet: bool) -> ProgressSink:
    if quiet:
        return NullProgress()
    if console.is_terminal:
        return RichProgress(console)
    return PlainProgress(console)


def stop_progress(progress: ProgressSink) -> None:
    if isinstance(progress, RichProgress):
        progress.stop()


SAVED_NAMES = {
    "duplicate": "duplicates",
    "cache": "the exact cache",
    "normalized": "the normalized tier",
    "semantic": "the semantic tier",
    "routing": "routing",
    "learned_routing": "learned routing (cheap calls skipped)",
    "fallback": "the fallback model",
    "batch": "batch pricing",
    "prompt_cache": "the prompt cache",
    "other": "other billing differences",
}


def summary_table(data: dict[str, Any]) -> Table:
    title = "costinfer run (rehearsal: nothing was paid)" if data.get("rehearsal") else "costinfer run"
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("rows", data["rows"]),
        ("rejected rows", data["rejects"]),
        ("distinct requests", data["distinct"]),
        ("calls made now", data["calls"]),
    ]
    # where the rows' answers came from: only the sources that answered some (a column of zeros says nothing)
    sources = [
        ("answered fresh", data["fresh"]),
        ("duplicates (shared a call)", data["duplicates"]),
        ("cache hits (earlier runs)", data["cache_hits"]),
        ("normalized-text reuses", data["normalized"]),
        ("semantic reuses", data["semantic"]),
        ("answered by the fallback model", data["fallback"]),
        ("routed to another model", data.get("routed", 0)),
        ("escalated after a failed check", data.get("escalated", 0)),
    ]
    rows += [(name, n) for name, n in sources if n]
    rows += [
        ("failed", data["failed"]),
        ("not run", data["not_run"]),
        ("retries", data.get("retries", 0)),
        ("input tokens billed", data["input_tokens"]),
        ("output tokens billed", data["output_tokens"]),
    ]
    if data.get("reasoning_tokens"):
        rows.append(("of which reasoning", data["reasoning_tokens"]))
    if data.get("rehearsal"):
        rows.append(("rehearsal", "nothing was paid: the costs are what these calls would have cost"))
    rows += [
        ("cost now (this command's calls)", usd(data["cost_usd"])),
        ("cost of the run (with earlier attempts)", usd(data["run_cost_usd"])),
        ("budget", "none" if data["budget_usd"] is None else usd(data["budget_usd"])),
        ("results", data["output"]),
        ("elapsed", f"{data['elapsed_s']:.1f} s"),
    ]
    if data.get("compare_with"):
        rows.append((f"same tokens on {data['compare_with']['model']}", usd(data["compare_with"]["cost_usd"])))
    for lever, amount in (data.get("saved_usd") or {}).items():
        rows.append((f"saved by {SAVED_NAMES.get(lever, lever)}", usd(amount)))
    if data.get("rejects_file"):
        rows.append(("rejects", data["rejects_file"]))
    for path in data.get("reports") or []:
        if str(path).endswith(".html"):
            rows.append(("report", path))
    for name, value in rows:
        table.add_row(name, str(value))
    return table


# Below this width the plan table leaves out the worst-case output column and names each model's output basis under
# the table instead of in a column, so that no model name or number is cut
WIDE = 110


def plan_table(plan: dict[str, Any], width: int = WIDE) -> Table:
    """The plan as people read it: per model, then totals, then whether it fits."""
    narrow = width < WIDE
    table = Table(title="costinfer plan", box=None, pad_edge=False)
    columns = ["model", "requests", "input", "output exp.", "output worst", "$ exp.", "$ worst", "output basis"]
    if narrow:
        columns = ["model", "requests", "input", "output exp.", "$ exp.", "$ worst"]
    for col in columns:
        left = col in ("model", "output basis")
        table.add_column(col, justify="left" if left else "right", no_wrap=col != "output basis", overflow="fold")
    for m in plan["models"]:
        cells = {
            "model": m["model"],
            "requests": str(m["requests"]),
            "input": str(m["input_tokens"]),
            "output exp.": str(m["expected_output_tokens"]),
            "output worst": str(m["worst_output_tokens"]),
            "$ exp.": usd(m["expected_cost_usd"]),
            "$ worst": usd(m["worst_cost_usd"]),
            "output basis": m["output_basis"],
        }
        table.add_row(*(cells[c] for c in columns))
    totals = {
        "model": "total",
        "requests": str(plan["to_call"]),
        "input": str(plan["input_tokens"]),
        "output exp.": str(plan["expected_output_tokens"]),
        "output worst": str(plan["worst_output_tokens"]),
        "$ exp.": usd(plan["expected_cost_usd"]),
        "$ worst": usd(plan["worst_cost_usd"]),
        "output basis": "",
    }
    table.add_row(*(totals[c] for c in columns), style="bold")
    budget = plan["budget_usd"]
    fits = (
        "no budget set"
        if budget is None
        else (
            f"fits: expected {usd(plan['expected_cost_usd'])} of {usd(plan['left_usd'])} left"
            if plan["fits"]
            else f"DOES NOT FIT: expected {usd(plan['expected_cost_usd'])} > {usd(plan['left_usd'])} left"
        )
    )
    basis = "".join(f" Output of {m['model']}: {m['output_basis']}." for m in plan["models"]) if narrow else ""
    batch = plan.get("expected_batch_cost_usd")
    saving = Decimal(plan["expected_cost_usd"]) - Decimal(batch or 0)
    if batch is not None and plan["to_call"] and saving > 0:
        basis += f" With --mode batch: expected {usd(batch)} (saves {usd(saving)}; results within 24 hours)."
    basis += _routing_text(plan) + _levers_text(plan)
    if plan.get("compare"):
        basis += f" The same tokens on {plan['compare']['model']}: {usd(plan['compare']['expected_cost_usd'])}."
    table.caption = (
        f"{_n(plan['rows'], 'row')} ({plan['rejects']} rejected) ask {_n(plan['distinct'], 'distinct request')}"
        f" ({_n(plan['duplicates'], 'row')} repeat another row's request and share its call). Answered without a "
        f"call: {_n(plan['cache_hits'], 'row')} from the cache, {plan.get('normalized', 0)} normalized and "
        f"{plan.get('semantic', 0)} semantic reuses, {_n(plan['answered_in_run'], 'request')} answered earlier in "
        f"this run. {_n(plan['to_call'], 'request')} to call. {fits}"
        + ("" if plan["fits_worst_case"] or budget is None else "; the worst case does not fit: the guard will stop")
        + ("." if basis else "")
        + basis
    )
    table.caption_justify = "left"
    return table


def _n(count: int, noun: str) -> str:
    """'1 row', '2 rows'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


LEVER_NAMES = {
    "duplicate": "duplicates",
    "cache": "exact cache",
    "normalized": "normalized",
    "semantic": "semantic",
    "routing": "routing",
    "prompt_cache": "prompt cache",
    "batch_if_chosen": "batch (if chosen)",
}


def _routing_text(plan: dict[str, Any]) -> str:
    routing = plan.get("routing")
    if not routing:
        return ""
    where = ", ".join(f"{n} to {m}" for m, n in routing["requests_by_model"].items()) or "nothing left to send"
    text = (
        f" Routing ({routing['policy']} over {', '.join(routing['candidates'])}): {where}; expected "
        f"{usd(routing['with_routing_usd'])} with routing, {usd(routing['without_routing_usd'])} without (all to "
        f"{routing['candidates'][-1]})"
    )
    if routing.get("escalation_basis"):
        text += f"; {routing['expected_escalations']} escalations expected ({routing['escalation_basis']})"
    if routing.get("alone_usd"):
        text += "; each candidate alone: " + ", ".join(f"{m} {usd(v)}" for m, v in routing["alone_usd"].items())
    learned = routing.get("learned")
    if learned:
        text += (
            f". Learned routing skips {learned['skipped_cheap_calls']} cheap calls predicted to fail (and sends "
            f"{learned['explored']} of those predicted to fail to the cheap model anyway, to keep learning; "
            f"{learned['undecided']} requests are decided in later rounds or by the cascade): expected "
            f"{usd(learned['expected_usd'])}, against {usd(learned['cascade_usd'])} for the plain cascade and "
            f"{usd(routing['without_routing_usd'])} for {routing['candidates'][-1]} alone"
        )
    return text + "."


def _levers_text(plan: dict[str, Any]) -> str:
    levers = plan.get("levers") or {}
    if not levers:
        return ""
    parts = [f"{LEVER_NAMES.get(k, k)} {usd(v)}" for k, v in levers.items()]
    return f" Expected savings against every row sent at list price: {', '.join(parts)}."
