"""What a run's spec resolves to before any row is read: the dataset's format, the price catalog, the provider
(``--provider``, or the one that serves the run's models), the cascade's check; and the run's fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from costinfer.backends.base import Backend, backend_class, registry
from costinfer.errors import ConfigError
from costinfer.pipeline.preflight import check
from costinfer.pricing.catalog import Catalog
from costinfer.pricing.config_file import Config
from costinfer.reading.formats import detect_format
from costinfer.reading.ingest import FAST_COUNT_BYTES, ingest_workers
from costinfer.reading.provider_files import SHAPES as BATCH_SHAPES
from costinfer.reading.source import Source
from costinfer.reading.tokens import warm_up
from costinfer.routing.checks import Acceptance
from costinfer.routing.provider import choose_provider
from costinfer.spec import RunSpec


@dataclass(frozen=True)
class Setup:
    fmt: str
    config: Config
    catalog: Catalog
    backend_cls: type[Backend]
    provider: str  # --provider, or the provider of the run's models
    acceptance: Acceptance | None = None  # --route cascade: the check an answer must pass


def load_setup(spec: RunSpec, planning: bool = False) -> Setup:
    """Everything checked before anything is read or sent: an unknown model, provider or file fails here. A plan may
    price models of several providers side by side (``planning``); a run calls one."""
    config = Config.load(spec.money.config)
    routing, inp = spec.routing, spec.input
    catalog = Catalog.load(spec.money.prices, config)
    provider = spec.execution.provider or choose_provider(
        None, routing.named_models, catalog, registry(), several=planning
    )
    cls = backend_class(provider)
    check(spec, cls)
    file_format = None if inp.format in BATCH_SHAPES else inp.format  # batch files are JSONL
    fmt = detect_format(inp.path, file_format) if not inp.from_stdin else (file_format or "jsonl")
    if inp.from_stdin and fmt == "parquet":
        raise ConfigError("a Parquet dataset cannot come from standard input: name the file")
    for model in [*routing.named_models, *([spec.money.compare_with] if spec.money.compare_with else [])]:
        catalog.lookup(model, cls.name)  # an unknown model fails before anything is read or sent
    acceptance = None
    if routing.checks:
        a = routing.accept
        acceptance = Acceptance(a.regex, a.json_schema, a.nonempty, a.cmd)
    size = 0 if inp.from_stdin else inp.path.stat().st_size
    if fmt != "jsonl" or not ingest_workers(size):  # this process counts: load its encoder while reading starts
        warm_up(routing.default_model, fast=size >= FAST_COUNT_BYTES)
    return Setup(fmt, config, catalog, cls, provider, acceptance)


def fingerprint(spec: RunSpec, source: Source, fmt: str, endpoint: str) -> str:
    """What makes the same command the same run: the dataset, and every option that shapes its requests."""
    inp, reuse, routing = spec.input, spec.reuse, spec.routing
    accept = routing.accept
    parts = {
        **source.identity,
        "format": fmt,
        "endpoint": endpoint,
        "model": routing.model,
        "max_tokens": inp.max_tokens,
        "prompt_field": inp.prompt_field,
        "id_field": inp.id_field,
        "template": inp.template,
        "system": inp.system,
        "on_bad_row": inp.on_bad_row,
        "strict_fields": inp.strict_fields,
        "tags": [list(inp.tag_by), dict(inp.tags)],
        "semantic": [reuse.semantic, reuse.threshold, reuse.embedding_model],
        "routing": [list(routing.models), routing.policy, accept.regex, str(accept.json_schema or ""),
                    accept.nonempty, accept.cmd] if routing.routed else None,
    }  # fmt: skip
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
