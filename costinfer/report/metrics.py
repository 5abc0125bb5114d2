"""A run's figures in the Prometheus text format, for the node exporter's textfile collector (cron jobs, CI runners):
written with ``prometheus_client``'s registry and its atomic textfile writer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

LAST_SUCCESS = "costinfer_last_success_timestamp_seconds"


def write_metrics(path: Path, summary: dict[str, Any], dataset: str) -> None:
    """Spend, calls, rows by source, failures, duration, budget left, and the last successful run's time (kept from
    the file's previous contents when this run did not succeed)."""
    registry = CollectorRegistry()
    labels = ["dataset"]

    def gauge(name: str, doc: str, value: float, extra: dict[str, str] | None = None) -> None:
        names = labels + sorted(extra or {})
        g = Gauge(name, doc, names, registry=registry) if name not in gauges else gauges[name]
        gauges[name] = g
        g.labels(dataset=dataset, **(extra or {})).set(value)

    gauges: dict[str, Gauge] = {}
    gauge("costinfer_run_cost_usd", "Dollars the run's calls cost (the whole run, resumes included).",
          float(summary["run_cost_usd"]))  # fmt: skip
    gauge("costinfer_run_calls", "Calls this invocation made and saved.", summary["calls"])
    for source in ("fresh", "duplicates", "cache_hits", "normalized", "semantic", "fallback", "failed", "not_run"):
        gauge("costinfer_run_rows", "Rows of the run by where their answer came from.", summary[source],
              {"source": source})  # fmt: skip
    gauge("costinfer_run_rejected_rows", "Bad input rows.", summary["rejects"])
    gauge("costinfer_run_failed_rows", "Rows whose calls failed.", summary["failed"])
    gauge("costinfer_run_duration_seconds", "Seconds the run took.", summary["elapsed_s"])
    gauge("costinfer_run_exit_code", "The run's exit code (0: success).", summary["exit_code"])
    if summary.get("budget_usd") is not None:
        left = float(summary["budget_usd"]) - float(summary["run_cost_usd"])
        gauge("costinfer_run_budget_left_usd", "Dollars of the budget left.", left)
    last = time.time() if summary["exit_code"] == 0 else previous_success(path, dataset)
    if last is not None:
        gauge(LAST_SUCCESS, "When a run of this dataset last succeeded (Unix time).", last)
    write_to_textfile(str(path), registry)


def previous_success(path: Path, dataset: str) -> float | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LAST_SUCCESS and sample.labels.get("dataset") == dataset:
                return float(sample.value)
    return None


def write_failure_metrics(path: Path, dataset: str, exit_code: int, elapsed_s: float) -> None:
    """A run that ended with an error before its summary: its exit code and duration, and the last success kept
    (no figure of spend or rows is guessed: they may be unknown), so a stale file never says the last run passed."""
    registry = CollectorRegistry()
    Gauge("costinfer_run_exit_code", "The run's exit code (0: success).", ["dataset"], registry=registry).labels(
        dataset=dataset
    ).set(exit_code)
    Gauge("costinfer_run_duration_seconds", "Seconds the run took.", ["dataset"], registry=registry).labels(
        dataset=dataset
    ).set(elapsed_s)
    last = previous_success(path, dataset)
    if last is not None:
        Gauge(LAST_SUCCESS, "When a run of this dataset last succeeded (Unix time).", ["dataset"], registry=registry
              ).labels(dataset=dataset).set(last)  # fmt: skip
    write_to_textfile(str(path), registry)
