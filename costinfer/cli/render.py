"""Progress and summaries for people: a rich progress bar on a terminal, plain lines elsewhere, nothing with --quiet."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from costinfer.core.progress import NullProgress, ProgressSink


class PlainProgress:
    """One line every few seconds on stderr: for CI logs and cron mail."""

    def __init__(self, console: Console, every_s: float = 5.0) -> None:
        self.console = console
        self.every_s = every_s
        self.name = ""
        self.total: int | None = None
        self.started = time.monotonic()
        self.last = 0.0

    def phase(self, name: str, total: int | None) -> None:
        self.name, self.total, self.started, self.last = name, total, time.monotonic(), 0.0
        if name == "calling":
            self.console.print(f"calling: {total} distinct requests to send", markup=False)

    def advance(self, done: int, cost_usd: Decimal) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and done != self.total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        if self.name == "calling":
            left = f", ETA {((self.total or done) - done) / rate:.0f}s" if rate > 0 and self.total else ""
            self.console.print(
                f"calling: {done}/{self.total} calls, ${cost_usd:.4f} spent, {rate:.1f} calls/s{left}", markup=False
            )
        else:
            self.console.print(f"{self.name}: {done} rows", markup=False)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)


class RichProgress:
    """A live bar: rows read, then calls done, dollars so far, rate and ETA."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[cost]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None
        self.started = time.monotonic()

    def phase(self, name: str, total: int | None) -> None:
        if self.task is None:
            self.bar.start()
        else:
            self.bar.update(self.task, visible=name == "reading")
        self.started = time.monotonic()
        self.task = self.bar.add_task(name, total=total, cost="", rate="")

    def advance(self, done: int, cost_usd: Decimal) -> None:
        rate = done / max(time.monotonic() - self.started, 1e-9)
        cost = f"${cost_usd:.4f}" if self.bar.tasks[self.task].description == "calling" else ""
        self.bar.update(self.task, completed=done, cost=cost, rate=f"{rate:.0f}/s")

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)

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


def summary_table(data: dict[str, Any]) -> Table:
    table = Table(title="costinfer run", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("rows", data["rows"]),
        ("rejected rows", data["rejects"]),
        ("distinct requests", data["distinct"]),
        ("calls made now", data["calls"]),
        ("answered fresh", data["fresh"]),
        ("duplicates (shared a call)", data["duplicates"]),
        ("cache hits (earlier runs)", data["cache_hits"]),
        ("normalized-text reuses", data["normalized"]),
        ("semantic reuses", data["semantic"]),
        ("answered by the fallback model", data["fallback"]),
        ("failed", data["failed"]),
        ("not run", data["not_run"]),
        ("input tokens billed", data["input_tokens"]),
        ("output tokens billed", data["output_tokens"]),
        ("cost now", f"${Decimal(data['cost_usd']):.6f}"),
        ("cost of the run", f"${Decimal(data['run_cost_usd']):.6f}"),
        ("budget", "none" if data["budget_usd"] is None else f"${Decimal(data['budget_usd']):.2f}"),
        ("results", data["output"]),
    ]
    for source, usd in (data.get("saved_usd") or {}).items():
        rows.append((f"saved by {source}", f"${Decimal(usd):.6f}"))
    if data.get("rejects_file"):
        rows.append(("rejects", data["rejects_file"]))
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def plan_table(plan: dict[str, Any]) -> Table:
    """The plan as people read it: per model, then totals, then whether it fits."""
    table = Table(title="costinfer plan", box=None, pad_edge=False)
    for col in ("model", "requests", "input", "output exp.", "output worst", "$ exp.", "$ worst", "output basis"):
        left = col in ("model", "output basis")
        table.add_column(col, justify="left" if left else "right", overflow="fold", no_wrap=not left)
    for m in plan["models"]:
        table.add_row(
            m["model"],
            str(m["requests"]),
            str(m["input_tokens"]),
            str(m["expected_output_tokens"]),
            str(m["worst_output_tokens"]),
            f"${Decimal(m['expected_cost_usd']):.4f}",
            f"${Decimal(m['worst_cost_usd']):.4f}",
            m["output_basis"],
        )
    table.add_row(
        "total",
        str(plan["to_call"]),
        str(plan["input_tokens"]),
        str(plan["expected_output_tokens"]),
        str(plan["worst_output_tokens"]),
        f"${Decimal(plan['expected_cost_usd']):.4f}",
        f"${Decimal(plan['worst_cost_usd']):.4f}",
        "",
        style="bold",
    )
    budget = plan["budget_usd"]
    fits = (
        "no budget set"
        if budget is None
        else (
            f"fits: expected ${Decimal(plan['expected_cost_usd']):.4f} of ${Decimal(plan['left_usd']):.4f} left"
            if plan["fits"]
            else f"DOES NOT FIT: expected ${Decimal(plan['expected_cost_usd']):.4f} > "
            f"${Decimal(plan['left_usd']):.4f} left"
        )
    )
    table.caption = (
        f"{plan['rows']} rows, {plan['rejects']} rejected, {plan['distinct']} distinct requests, "
        f"{plan['duplicates']} duplicates, {plan['cache_hits']} rows from the cache, "
        f"{plan['answered_in_run']} answered earlier in this run, {plan['to_call']} to call. {fits}"
        + ("" if plan["fits_worst_case"] or budget is None else "; the worst case does not fit: the guard will stop")
    )
    table.caption_justify = "left"
    return table
