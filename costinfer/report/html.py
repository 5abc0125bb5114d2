"""The run report as one self-contained HTML page: charts drawn by pygal as inline SVG (no script, no CDN, nothing
fetched, no script run), laid out by a Jinja2 template. It opens offline; about 100 KB."""

from __future__ import annotations

import re
from typing import Any

import jinja2
import pygal
from pygal.style import Style

from costinfer.accounting.summary import usd

STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#333",
    foreground_strong="#111",
    foreground_subtle="#888",
    colors=("#2f6db5", "#e3873a", "#3a9e6b", "#b54a4a", "#7d5bb5", "#888888"),
    font_family="sans-serif",
)

TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>costinfer report {{ r.run_id[:12] }}</title>
<style>
body { font-family: sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } .sub { color: #666; margin-top: 0; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0 1.5rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }
.card b { display: block; font-size: 1.3rem; } .card span { color: #666; font-size: .85rem; }
.rehearsal { background: #fff4e0; border: 1px solid #e3873a; padding: .5rem 1rem; border-radius: 6px; }
.card.alert { border-color: #b54a4a; } .card.alert b { color: #b54a4a; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1.2rem; }
.chart { border: 1px solid #eee; border-radius: 6px; padding: .4rem; }
.chart h2 { font-size: 1rem; margin: .3rem .5rem; } .wide { grid-column: 1 / span 2; }
table { border-collapse: collapse; font-size: .9rem; } td, th { padding: .2rem .7rem; text-align: right; }
td:first-child, th:first-child { text-align: left; } tr:nth-child(even) { background: #f6f6f6; }
</style></head><body>
<h1>Where the money went: run {{ r.run_id[:12] }}{% if r.rehearsal %} (rehearsal){% endif %}</h1>
{% if r.rehearsal %}<p class="rehearsal" data-banner="rehearsal"><b>rehearsal: nothing was paid.</b> The
{{ r.provider }} provider answered with made-up text; every amount below is what these calls would have cost at list
price.</p>{% endif %}
<p class="sub">{{ r.dataset }} &middot; {{ r.provider }} / {{ r.model }} &middot; {{ r.status }}{% if r.stop_reason %}
({{ r.stop_reason }}){% endif %} &middot; started {{ r.started_at }}</p>
<div class="cards">
  <div class="card"><b>{{ usd(r.cost_usd) }}</b>
    <span>{% if r.rehearsal %}would have been paid{% else %}paid{% endif %}</span></div>
  <div class="card"><b>{{ usd(r.waterfall.naive_usd) }}</b><span>every row sent, at list price</span></div>
  <div class="card"><b>{{ usd(r.waterfall.naive_usd - r.cost_usd) }}</b><span>saved</span></div>
  <div class="card"><b>{{ r.rows }}</b><span>rows ({{ r.rejects }} rejected)</span></div>
  {% if r.unanswered %}<div class="card alert" data-card="unanswered"><b>{{ r.unanswered }}</b>
    <span>rows with no answer: {{ r.rows_by_source.get("failed", 0) }} failed,
    {{ r.rows_by_source.get("not_run", 0) }} not run{% if r.stop_reason %} ({{ r.stop_reason }}){% endif %}</span></div>
  {% endif %}
  <div class="card"><b>{{ usd(r.plan_vs_outcome.expected_cost_usd) }}</b><span>the plan expected</span></div>
  {% if r.budget_usd is not none %}<div class="card"><b>{{ usd(r.budget_usd) }}</b><span>budget</span></div>{% endif %}
  {% if r.compare_with %}<div class="card"><b>{{ usd(r.compare_with.cost_usd) }}</b>
    <span>the same tokens on {{ r.compare_with.model }}</span></div>{% endif %}
</div>
<div class="grid">
{% for chart in charts %}<div class="chart{% if chart.get("wide") %} wide{% endif %}" data-chart="{{ chart.id }}">
<h2>{{ chart.title }}</h2>{{ chart.svg | safe }}</div>
{% endfor %}
</div>
<h2>The waterfall's steps</h2>
<table><tr><th>step</th><th>dollars</th></tr>
<tr><td>every answered row sent online to its requested model, at list price</td>
<td>{{ usd(r.waterfall.naive_usd) }}</td></tr>
{% for s in r.waterfall.steps %}<tr><td>saved by {{ s.label }}</td><td>&minus;{{ usd(s.saved_usd) }}</td></tr>
{% endfor %}<tr><td><b>paid</b> (the ledger)</td><td><b>{{ usd(r.waterfall.actual_usd) }}</b></td></tr></table>
</body></html>
"""
)


def _chart(kind: Any, **options: Any) -> Any:
    return kind(
        style=STYLE,
        js=[],  # no script from a CDN: the SVG stands on its own
        disable_xml_declaration=True,
        explicit_size=False,
        height=320,
        legend_at_bottom=True,
        print_values=False,
        **options,
    )


_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


def _svg(chart: Any) -> str:
    """The chart as inline SVG without pygal's inline scripts (tooltips): the page runs no script at all."""
    return _SCRIPT.sub("", str(chart.render(is_unicode=True)))


def render(report: dict[str, Any]) -> str:
    charts = [_waterfall(report), _cost_by_model(report), _tokens_by_model(report), _plan_vs_outcome(report)]
    if report["tags"]:
        charts.append(_cost_by_tag(report))
    charts += [_latency(report), _errors(report), _calls_over_time(report)]
    return TEMPLATE.render(r=report, charts=charts, usd=usd)


def _waterfall(report: dict[str, Any]) -> dict[str, Any]:
    """A waterfall drawn as stacked bars: an invisible base lifts each lever's saving to where the cost stood."""
    w = report["waterfall"]
    naive, steps = float(w["naive_usd"]), w["steps"]
    style = Style(**{**STYLE.to_dict(), "colors": ("transparent", "#3a9e6b", "#2f6db5")})
    chart = pygal.StackedBar(
        style=style, js=[], disable_xml_declaration=True, explicit_size=False, height=320, show_legend=False,
        x_label_rotation=15, value_formatter=usd,
    )  # fmt: skip
    chart.x_labels = ["every row at list price"] + [f"saved: {s['lever']}" for s in steps] + ["paid"]
    base, level = [0.0], naive
    saved: list[float | None] = [None]
    for s in steps:
        level -= float(s["saved_usd"])
        base.append(level)
        saved.append(float(s["saved_usd"]))
    base.append(0.0)
    saved.append(None)
    chart.add("", base)
    chart.add("saved", saved)
    chart.add("cost", [naive] + [None] * len(steps) + [float(w["actual_usd"])])
    title = "Savings: from every row sent at list price to what was paid"
    return {"id": "waterfall", "title": title, "svg": _svg(chart), "wide": True}


def _cost_by_model(report: dict[str, Any]) -> dict[str, Any]:
    chart = _chart(pygal.HorizontalBar, value_formatter=usd)
    for m in report["models"]:
        chart.add(str(m["model"]), float(m["cost_usd"] or 0))
    return {"id": "cost-by-model", "title": "Cost by model", "svg": _svg(chart)}


def _cost_by_tag(report: dict[str, Any]) -> dict[str, Any]:
    chart = _chart(pygal.HorizontalBar, value_formatter=usd)
    for t in report["tags"][:12]:
        chart.add(str(t["tag"]), float(t["cost_usd"] or 0))
    return {"id": "cost-by-tag", "title": "Cost by tag (the row that paid)", "svg": _svg(chart)}


def _tokens_by_model(report: dict[str, Any]) -> dict[str, Any]:
    chart = _chart(pygal.StackedBar)
    chart.x_labels = [str(m["model"]) for m in report["models"]]
    cached = [int(m["cached_tokens"] or 0) for m in report["models"]]
    chart.add("input", [int(m["input_tokens"] or 0) - c for m, c in zip(report["models"], cached, strict=True)])
    chart.add("cached input", cached)
    chart.add("output", [int(m["output_tokens"] or 0) for m in report["models"]])
    return {"id": "tokens-by-model", "title": "Tokens by model", "svg": _svg(chart)}


def _plan_vs_outcome(report: dict[str, Any]) -> dict[str, Any]:
    p = report["plan_vs_outcome"]
    chart = _chart(pygal.Bar, value_formatter=usd)
    chart.x_labels = ["cost"]
    chart.add("planned", float(p["expected_cost_usd"] or 0))
    chart.add("paid", float(p["actual_cost_usd"] or 0))
    if p.get("worst_cost_usd") is not None:
        chart.add("worst case", float(p["worst_cost_usd"]))
    return {"id": "plan-vs-outcome", "title": "The plan next to the outcome", "svg": _svg(chart)}


def _latency(report: dict[str, Any]) -> dict[str, Any]:
    lat = report["latency_ms"]
    chart = _chart(pygal.Histogram, show_legend=False)
    chart.add("calls", [(n, start, end) for start, end, n in lat["bins"]] or [(0, 0, 1)])
    title = "Latency of answered calls (ms)"
    if lat["p50"] is not None:
        title += f": p50 {lat['p50']:.0f}, p90 {lat['p90']:.0f}, p99 {lat['p99']:.0f}"
    return {"id": "latency", "title": title, "svg": _svg(chart)}


def _errors(report: dict[str, Any]) -> dict[str, Any]:
    """Calls that failed for good, by error class, beside the calls answered; with no failure, the answered calls
    alone, said so in the title (an empty chart's bare axes said nothing)."""
    answered = sum(int(m.get("answered") or 0) for m in report["models"])
    chart = _chart(pygal.HorizontalBar)
    for error_class, n in report["errors"].items():
        chart.add(f"failed: {error_class}", int(n))
    chart.add("answered", answered)
    title = "Calls by outcome" + ("" if report["errors"] else ": none failed")
    return {"id": "errors", "title": title, "svg": _svg(chart)}


def _calls_over_time(report: dict[str, Any]) -> dict[str, Any]:
    series = report["calls_per_minute"]
    chart = _chart(pygal.XY, show_dots=len(series) < 3, x_title="seconds since the first call", y_title="calls/minute")
    chart.add("calls per minute", series or [(0, 0)])
    limit = report.get("rate_limit_rpm")
    if limit and series:
        chart.add("rate limit", [(series[0][0], limit), (series[-1][0], limit)])
    title = "Calls over time, against the rate limit"
    return {"id": "calls-over-time", "title": title, "svg": _svg(chart), "wide": True}
