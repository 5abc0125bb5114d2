"""A ``RunSpec`` from the options of ``costinfer run`` and ``costinfer plan``, named as their parameters.

The CLI calls ``run_spec(**params)``; library code calls it the same way (``run_spec("data.jsonl", budget="5")``).
Here, and only here, are the defaults that depend on something else filled in: the results file (named after the
dataset), the rejects file (beside the results), the semantic tier (``$COSTINFER_SEMANTIC``), and the routing
options that ``costinfer.toml``'s ``[routing]`` gives when the command line leaves them unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from costinfer.errors import ConfigError
from costinfer.pricing.config_file import Config
from costinfer.reading.source import Source, is_stdin
from costinfer.spec import (
    CHECKED,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MODEL,
    DEFAULT_THRESHOLD,
    AcceptSpec,
    BatchSpec,
    ExecutionSpec,
    InputSpec,
    MoneySpec,
    OutputSpec,
    RaySpec,
    RehearsalSpec,
    ReuseSpec,
    RoutingSpec,
    RunSpec,
    StoreSpec,
)
from costinfer.store.base import store_location

# the parameters that are the command's own, not the run's
OUTPUT_SWITCHES = frozenset({"json_out", "quiet"})


def run_spec(input_path: Path | str, **params: Any) -> RunSpec:
    """The run's spec from the command's parameters; every value is checked as its spec is made."""
    p = _with_config_defaults(params)
    path = Path(input_path)
    unknown = set(p) - KNOWN - OUTPUT_SWITCHES
    if unknown:
        raise TypeError(f"run_spec() got unknown options: {', '.join(sorted(unknown))}")
    urls = p.get("base_url")
    urls = [urls] if isinstance(urls, str) else list(urls or [])
    execution = ExecutionSpec(
        provider=p.get("provider"),
        base_url=urls[0] if urls else None,
        replicas=tuple(urls[1:]),
        concurrency=p.get("concurrency"),
        fixed_concurrency=bool(p.get("fixed_concurrency", False)),
        timeout_s=float(p.get("timeout_s", 60.0)),
        max_attempts=int(p.get("max_attempts", 4)),
        rpm=p.get("rpm"),
        tpm=p.get("tpm"),
    )
    money = MoneySpec(
        budget_usd=parse_budget(p.get("budget")),
        budget_pool=p.get("budget_pool"),
        on_over_budget=p.get("on_over_budget", "fail"),
        compare_with=p.get("compare_with"),
        prices=p.get("prices"),
        config=p.get("config"),
    )
    inp = InputSpec(
        path=path,
        format=p.get("input_format"),
        prompt_field=p.get("prompt_field", "prompt"),
        id_field=p.get("id_field", "id"),
        template=p.get("template"),
        system=p.get("system"),
        max_tokens=int(p.get("max_tokens", DEFAULT_MAX_TOKENS)),
        on_bad_row=p.get("on_bad_row", "fail"),
        strict_fields=bool(p.get("strict_fields", False)),
        tag_by=tuple(_names(p.get("tag_by"))),
        tags=tuple(parse_tags(list(p.get("tags") or [])).items()),
    )
    semantic = p.get("semantic")
    reuse = ReuseSpec(
        semantic=os.environ.get("COSTINFER_SEMANTIC", "1") != "0" if semantic is None else bool(semantic),
        threshold=float(p.get("semantic_threshold", DEFAULT_THRESHOLD)),
        embedding_model=p.get("embedding_model"),
        audit=int(p.get("semantic_audit", 0)),
    )
    ray = RaySpec(
        engine=p.get("engine", "local"),
        address=p.get("ray_address"),
        serve=p.get("ray_serve"),
        servers=p.get("ray_servers"),
    )
    routing = RoutingSpec(
        model=p.get("model") or DEFAULT_MODEL,
        models=tuple(p["models"]) if isinstance(p.get("models"), (list, tuple)) else tuple(_names(p.get("models"))),
        route=p.get("route"),
        accept=AcceptSpec(
            regex=p.get("accept_regex"),
            json_schema=_path(p.get("accept_json_schema")),
            nonempty=bool(p.get("accept_nonempty", False)),
            cmd=p.get("accept_cmd"),
        ),
        fallback_model=p.get("fallback_model"),
    )
    batch = BatchSpec(
        mode=p.get("mode", "online"),
        deadline_h=p.get("deadline_h"),
        wait=bool(p.get("wait", True)),
        poll_s=float(p.get("batch_poll_s", 5.0)),
    )
    rehearsal = RehearsalSpec(
        latency_ms=float(p.get("simulator_latency_ms", 0.0)),
        faults=p.get("simulator_faults"),
        rpm=p.get("simulator_rpm"),
        tpm=p.get("simulator_tpm"),
        seed=p.get("simulator_seed"),
        limit_mode=p.get("simulator_limit_mode", "window"),
        bad_answers=p.get("simulator_bad_answers"),
    )
    results = _path(p.get("output")) or default_results(path)
    output = OutputSpec(
        results=results,
        rejects=_path(p.get("rejects")) or results.with_name(f"{results.stem}.rejects.jsonl"),
        format=p.get("output_format"),
        report=bool(p.get("report", True)),
        metrics_file=_path(p.get("metrics_file")),
    )
    store = StoreSpec(path=store_location(p.get("store")), wait_s=float(p.get("store_wait_s", 0.0)))
    return RunSpec(inp, output, reuse, routing, money, execution, batch, rehearsal, ray, store)


KNOWN = frozenset(
    (
        "provider",
        "base_url",
        "concurrency",
        "fixed_concurrency",
        "timeout_s",
        "max_attempts",
        "rpm",
        "tpm",
        "budget",
        "budget_pool",
        "on_over_budget",
        "compare_with",
        "prices",
        "config",
        "input_format",
        "prompt_field",
        "id_field",
        "template",
        "system",
        "max_tokens",
        "on_bad_row",
        "strict_fields",
        "tag_by",
        "tags",
        "semantic",
        "semantic_threshold",
        "embedding_model",
        "semantic_audit",
        "engine",
        "ray_address",
        "ray_serve",
        "ray_servers",
        "model",
        "models",
        "route",
        "accept_regex",
        "accept_json_schema",
        "accept_nonempty",
        "accept_cmd",
        "fallback_model",
        "mode",
        "deadline_h",
        "wait",
        "batch_poll_s",
        "simulator_latency_ms",
        "simulator_faults",
        "simulator_rpm",
        "simulator_tpm",
        "simulator_seed",
        "simulator_limit_mode",
        "simulator_bad_answers",
        "output",
        "rejects",
        "output_format",
        "report",
        "metrics_file",
        "store",
        "store_wait_s",
    )
)


def default_results(input_path: Path) -> Path:
    """./<input name>.results.jsonl (stdin.results.jsonl for standard input)."""
    stem = "stdin" if is_stdin(input_path) else Source(input_path, "", {}).stem
    return Path.cwd() / f"{stem}.results.jsonl"


def _with_config_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    """costinfer.toml's [routing] fills the routing options the command line left unset."""
    out = dict(params)
    config = Config.load(_path(out.get("config")))
    for name, value in config.routing.items():
        if name.startswith("accept_") and out.get("route") not in (None, *CHECKED):
            continue  # --route cheapest or budget on the command line: the file's cascade checks do not apply
        if out.get(name) in (None, False, [], "", ()):
            out[name] = list(value) if name == "models" else value
    return out


def _names(text: str | None) -> list[str]:
    return [k.strip() for k in (text or "").split(",") if k.strip()]


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def parse_budget(text: str | Decimal | float | None) -> Decimal | None:
    """--budget as exact dollars ("50", "$0.25"); its range is checked with the other options."""
    if text is None:
        return None
    if isinstance(text, (Decimal, int, float)):
        text = str(text)
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise ConfigError(f"--budget must be a number of dollars, got '{text}'") from None
    if not value.is_finite():
        raise ConfigError(f"--budget must be a number of dollars, got '{text}'")
    return value


def parse_tags(items: list[str]) -> dict[str, str]:
    """--tag team=search --tag env=prod as a dict; anything but KEY=VALUE is a configuration error."""
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--tag must be KEY=VALUE, got '{item}'")
        if "," in item or "=" in value:  # a row's tag is "k=v,k=v": a comma or '=' inside would read as two tags
            raise ConfigError(f"--tag {item}: a tag's key and value cannot hold ',' or '='; give --tag once per tag")
        tags[key.strip()] = value.strip()
    return tags
