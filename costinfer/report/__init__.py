"""A run's report (JSON for machines, self-contained HTML for people) and its metrics for cron and CI."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from costinfer.pricing.catalog import ModelPrice
from costinfer.store.faces import History


def report_paths(results: Path) -> tuple[Path, Path]:
    """``out.jsonl`` -> ``out.report.json`` and ``out.report.html``, beside the results."""
    return results.with_name(f"{results.stem}.report.json"), results.with_name(f"{results.stem}.report.html")


def write_report(store: History, run_id: str, prices: dict[str, ModelPrice], results: Path) -> tuple[Path, Path]:
    """Build the run's figures and write both files (each atomically); returns their paths."""
    from costinfer.report.figures import build
    from costinfer.report.html import render

    figures = build(store, run_id, prices)
    json_path, html_path = report_paths(results)
    _write(json_path, json.dumps(figures, default=_plain, indent=1))
    _write(html_path, render(figures))
    return json_path, html_path


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("0", "-0") else text
    return str(value)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
