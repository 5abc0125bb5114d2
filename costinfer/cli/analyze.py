"""``costinfer analyze``, ``costinfer runs`` and ``costinfer report``: what runs cost, across the store's history."""

from __future__ import annotations

import csv
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import orjson
import typer
from rich.table import Table

from costinfer.accounting.summary import usd
from costinfer.cli.app import app, handled, open_for_reading, out_console
from costinfer.errors import ConfigError
from costinfer.pricing.catalog import Catalog
from costinfer.pricing.config_file import Config
from costinfer.store import Store
from costinfer.store.history import GROUPINGS

StoreOpt = typer.Option(
    None, "--store", help="The store: a DuckDB file or postgresql://... Default: $COSTINFER_STORE or the per-user one."
)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'7d', '12h', '30m' (ago), or a date or time ('2026-11-01', '2026-11-01T08:00')."""
    now = now or datetime.now(UTC)
    match = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    if match:
        n, unit = int(match.group(1)), match.group(2)
        try:
            return now - timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: n})
        except OverflowError:  # further back than any date: every run
            return datetime.min.replace(tzinfo=UTC)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since must be a span such as 7d or 12h, or a date such as 2026-11-01; got '{text}'"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _rates(group: dict[str, Any]) -> dict[str, Any]:
    """A group's figures as the outputs show them: exact dollars as text, hit rates, cost per 1,000 rows."""
    rows = int(group.get("rows") or 0)
    cost = Decimal(group.get("cost_usd") or 0)
    out = {k: v for k, v in group.items() if k not in ("cache_rows", "near_rows", "duplicate_rows")}
    out.update(
        cost_usd=_money(cost),
        saved_usd=_money(Decimal(group.get("saved_usd") or 0)),
        calls=int(group.get("calls") or 0),
        failed_calls=int(group.get("failed_calls") or 0),
        failed_rows=int(group.get("failed_rows") or 0),
        rows=rows,
        runs=int(group.get("runs") or 0),
        duplicate_rate=round(int(group.get("duplicate_rows") or 0) / rows, 4) if rows else None,
        cache_hit_rate=round(int(group.get("cache_rows") or 0) / rows, 4) if rows else None,
        near_hit_rate=round(int(group.get("near_rows") or 0) / rows, 4) if rows else None,
        cost_per_1000_rows=_money(cost * 1000 / rows) if rows else None,
    )
    return out


def router_figures(counts: dict[str, int]) -> dict[str, Any]:
    """A learned run's router against the checks: accuracy on the cheap answers judged, precision of "will fail"
    on the explored ones (predicted to fail, sent to the cheap model anyway), and the failures it caught (skipped
    requests counted as failures at that precision) against those it let through."""
    out: dict[str, Any] = dict(counts)
    checked, explored = counts["checked"], counts["predicted_fail"]
    out["accuracy"] = round(counts["correct"] / checked, 4) if checked else None
    precision = counts["caught"] / explored if explored else None
    out["precision"] = round(precision, 4) if precision is not None else None
    missed = counts["failed"] - counts["caught"]
    caught = counts["skipped"] * (precision if precision is not None else 1.0) + counts["caught"]
    out["recall"] = round(caught / (caught + missed), 4) if caught + missed else None
    return out


def router_text(f: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{v:.0%}"

    return (
        f"learned routing skipped {f['skipped']} cheap calls; its predictions were right for {pct(f['accuracy'])} "
        f'of {f["checked"]} checked cheap answers; "will fail" precision {pct(f["precision"])} (on '
        f"{f['predicted_fail']} explored), recall {pct(f['recall'])}"
    )


def _money(value: Decimal) -> str:
    text = format(value.quantize(Decimal("1e-12")).normalize(), "f")
    return "0" if text in ("0", "-0") else text


@app.command("analyze")
def analyze(
    run_id: Optional[str] = typer.Argument(None, help="One run (an id or its start, as `costinfer runs` shows)."),
    since: str = typer.Option("30d", help="Runs started since: 7d, 12h, or a date such as 2026-11-01."),
    by: str = typer.Option("run", help=f"Group by {', '.join(GROUPINGS)}."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object: totals and one entry per group."),
    csv_out: bool = typer.Option(False, "--csv", help="One CSV row per group."),
    include_rehearsals: bool = typer.Option(
        False,
        "--include-rehearsals",
        help="Count rehearsals (--provider simulate: nothing paid) too; by default they stay out of the totals.",
    ),
    store: Optional[str] = StoreOpt,
) -> None:
    """Spend, calls, rows, hit rates, saved dollars and cost per 1,000 rows over the store's history. Rehearsals
    (nothing paid) are left out unless --include-rehearsals, and marked where shown.

    \b
    Examples:
      costinfer analyze --since 7d                  # each run of the last week
      costinfer analyze --since 30d --by day --json
      costinfer analyze --by model --csv > spend.csv
    """
    with handled():
        if by not in GROUPINGS:
            raise ConfigError(f"--by must be one of {', '.join(GROUPINGS)}, got '{by}'")
        if json_out and csv_out:
            raise ConfigError("--json and --csv: choose one")
        start = parse_since(since)
        if run_id is not None:
            check_run_id(run_id)
        with open_for_reading(store) as st:
            run = _one_run(st, run_id) if run_id else None
            totals, groups = st.analyze(by, start, run, include_rehearsals)
            routers = st.router_accuracy([str(g["run"]) for g in groups]) if by == "run" else {}
        totals = _rates(totals)
        rows = [_rates(g) for g in groups]
        for g in rows:
            g[by] = str(g[by]) if g[by] is not None else None
            if by == "run" and g["run"] in routers:
                g["learned_routing"] = router_figures(routers[g["run"]])
        if json_out:
            typer.echo(json.dumps({"since": start.isoformat(), "by": by, "totals": totals, "groups": rows}))
        elif csv_out:
            columns = [by, "providers", "runs", "rehearsal_runs", "rows", "calls", "failed_calls", "failed_rows",
                       "cost_usd", "saved_usd", "duplicate_rate", "cache_hit_rate", "near_hit_rate",
                       "cost_per_1000_rows"]  # fmt: skip
            writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        else:
            out_console.print(_table(by, rows, totals, start), soft_wrap=False)
            for g in rows:
                if g.get("learned_routing"):
                    _say(f"run {str(g['run'])[:8]}: {router_text(g['learned_routing'])}")
            if totals.get("rehearsal_runs"):
                _say(
                    f"{totals['rehearsal_runs']} of these runs are rehearsals (provider simulate): their amounts are "
                    f"what the calls would have cost; nothing was paid"
                )
            if totals["rehearsals_left_out"]:
                _say(
                    f"{totals['rehearsals_left_out']} rehearsal run(s) (nothing paid) left out: "
                    f"--include-rehearsals counts them"
                )


def _width() -> int:
    """The terminal's width now: $COLUMNS when set (as this command was started), else what the console found."""
    import os

    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else out_console.width


def _say(text: str) -> None:
    """A line under a table, wrapped at the terminal's width like the table."""
    import textwrap

    out_console.print(textwrap.fill(text, width=max(_width() - 1, 20)), markup=False)


def _table(by: str, rows: list[dict[str, Any]], totals: dict[str, Any], start: datetime) -> Table:
    """Groups and totals. Amounts, counts and rates are never cut: the group's name and the provider give way on a
    narrow terminal."""

    def pct(v: Any) -> str:
        return "-" if v is None else f"{v:.0%}"

    def cells(name: str, g: dict[str, Any]) -> list[str]:
        per_k = "-" if g["cost_per_1000_rows"] is None else usd(g["cost_per_1000_rows"])
        provider = [] if by == "provider" else [str(g.get("providers") or "-")]
        return [
            name, *provider, str(g["rows"]), str(g["calls"]), usd(g["cost_usd"]), usd(g["saved_usd"]),
            pct(g["cache_hit_rate"]), per_k, str(g["failed_calls"]),
        ]  # fmt: skip

    lines = []
    for g in rows:
        name = str(g[by])
        lines.append(cells(name[:12] if by == "run" else Path(name).name if by == "dataset" else name, g))
    lines.append(cells("total", totals))
    names = [by, *([] if by == "provider" else ["provider"]), "rows", "calls", "spent", "saved", "cache",
             "$/1k rows", "failed"]  # fmt: skip
    widest = [max([len(col), *(len(line[i]) for line in lines)]) for i, col in enumerate(names)]
    # too narrow for every column: the least needed go first, so that no amount, count or name is cut
    for drop in ("$/1k rows", "cache", "provider", "saved", "calls"):
        if sum(widest) + 2 * (len(names) - 1) <= _width() or drop not in names:
            continue
        i = names.index(drop)
        names, widest = names[:i] + names[i + 1 :], widest[:i] + widest[i + 1 :]
        lines = [line[:i] + line[i + 1 :] for line in lines]
    # the group's name (a run id, a tag) folds onto more lines rather than lose characters; the provider may be cut
    flexible = {0, 1} if "provider" in names else {0}
    fixed = sum(w for i, w in enumerate(widest) if i not in flexible)
    share = max(12, (_width() - fixed - 2 * (len(names) - 1)) // len(flexible))
    table = Table(title=f"since {start:%Y-%m-%d %H:%M} UTC, by {by}", box=None, pad_edge=False)
    for i, (col, w) in enumerate(zip(names, widest, strict=True)):
        table.add_column(
            col,
            justify="left" if i in flexible else "right",
            no_wrap=i != 0,
            overflow="fold" if i == 0 else "ellipsis",
            min_width=min(w, share) if i in flexible else w,
            max_width=share if i in flexible else None,
        )
    for i, line in enumerate(lines):
        table.add_row(*line, style="bold" if i == len(lines) - 1 else None)
    return table


def check_run_id(prefix: str) -> None:
    """Before the store is opened: '' (an unset shell variable) or a stub would match a run nobody meant."""
    if len(prefix.strip()) < 4:
        raise ConfigError(f"a run id needs 4 characters or more, got '{prefix}'; `costinfer runs` lists them")


def _one_run(st: Store, prefix: str) -> str:
    check_run_id(prefix)
    found = st.find_run(prefix.strip())
    if not found:
        raise ConfigError(f"no run '{prefix}' in {st.path}; `costinfer runs` lists them")
    if len(found) > 1 and prefix not in found:
        raise ConfigError(f"'{prefix}' starts several runs ({', '.join(r[:12] for r in found)}); give more of the id")
    return prefix if prefix in found else found[0]


@app.command("runs")
def runs(
    limit: int = typer.Option(20, min=1, help="How many of the latest runs."),
    json_out: bool = typer.Option(False, "--json", help="One JSON array of runs."),
    store: Optional[str] = StoreOpt,
) -> None:
    """List the latest runs: id, started, dataset, model, rows, cost, status."""
    with handled(), open_for_reading(store) as st:
        found = st.runs_list(limit)
        if json_out:
            typer.echo(orjson.dumps(found, default=str).decode())
            return
        table = Table(box=None, pad_edge=False, padding=(0, 1))
        cells = []
        for r in found:  # the full id and dataset are in --json
            status = r["stop_reason"] or r["status"]
            if r.get("rehearsal"):
                # nothing was paid: the cost is what the calls would have cost
                status = "rehearsal" if status == "completed" else f"rehearsal: {status}"
            cells.append([
                r["run_id"][:12], f"{r['started_at']:%m-%d %H:%M}", Path(str(r["dataset"] or "")).name,
                str(r["model"] or ""), str(r["rows"]), usd(r["cost_usd"]), status,
            ])  # fmt: skip
        # id, start, rows, cost and status are never cut: the dataset and the model share what is left of the width
        names = ("id", "started", "dataset", "model", "rows", "cost", "status")
        widest = [max([len(col), *(len(c[i]) for c in cells)]) for i, col in enumerate(names)]
        fixed = sum(w for col, w in zip(names, widest, strict=True) if col not in ("dataset", "model"))
        share = max(8, (_width() - fixed - 2 * (len(names) - 1)) // 2)
        for col, w in zip(names, widest, strict=True):
            flexible = col in ("dataset", "model")
            table.add_column(
                col,
                justify="right" if col in ("rows", "cost") else "left",
                no_wrap=True,
                overflow="ellipsis",
                min_width=min(w, share) if flexible else w,
                max_width=share if flexible else None,
            )
        for c in cells:
            table.add_row(*c)
        out_console.print(table, soft_wrap=False)


@app.command("report")
def report(
    run_id: str = typer.Argument(..., help="The run (an id or its start, as `costinfer runs` shows)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="The results file the report goes beside. Default: the run's own."
    ),
    prices: Optional[Path] = typer.Option(None, help="A price catalog in LiteLLM's JSON format."),
    config: Optional[Path] = typer.Option(None, help="costinfer.toml."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Rebuild a run's report (<results>.report.json and .report.html) from the store."""
    with handled():
        from costinfer.pipeline.prepare import prices_for_run
        from costinfer.report import write_report

        check_run_id(run_id)
        catalog = Catalog.load(prices, Config.load(config))
        with open_for_reading(store) as st:
            run = _one_run(st, run_id)
            record = st.run(run) or {}
            results = output or Path(record.get("results_path") or f"{run[:12]}.results.jsonl")
            if not results.parent.is_dir():
                raise ConfigError(f"{results.parent} does not exist; pass --output beside where the report should go")
            st.copy_run_rows(run)
            st.collect_results(run)
            paths = write_report(st, run, prices_for_run(st, run, catalog, str(record.get("provider"))), results)
        for path in paths:
            out_console.print(str(path), markup=False)
