"""One chunk of raw rows to the tables ingestion stores: items, new request bodies, rejects.

A chunk is processed on its own (it needs nothing from other chunks), so chunks can be processed inline or in worker
processes (``ingest.py`` decides). What spans chunks is settled in SQL when ingestion ends: a request seen in several
chunks is stored once, and a row id seen before makes the later row a reject.

Row positions here are local to the chunk (0 = its first row); ingestion adds the chunk's offset. A row without an
id has ``row_id`` null and takes its position as its identity when stored.
"""

from __future__ import annotations

import gc
import importlib.abc
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from costinfer.errors import ConfigError
from costinfer.pricing.catalog import Catalog, ModelPrice
from costinfer.reading.allocator import keep_freed_memory
from costinfer.reading.formats import RawRow, jsonl_block_rows, read_span
from costinfer.reading.keys import KeyMaker
from costinfer.reading.provider_files import BadLine, as_row
from costinfer.reading.request import Reject, Request
from costinfer.reading.rows import RowSpec, build
from costinfer.reading.tokens import TokenCounter


@dataclass(frozen=True)
class ChunkJob:
    """What every chunk of one ingestion is processed with (picklable: it is sent to worker processes)."""

    spec: RowSpec
    endpoint: str
    provider: str
    catalog: Catalog
    fast_count: bool = False


@dataclass
class ChunkResult:
    rows: int  # rows read from the chunk, good or bad
    items: pa.Table  # row_idx, line, row_id (null: the position), key, metadata, priority
    requests: pa.Table | None  # one per request first seen in this chunk: body, counts, tier keys
    rejects: pa.Table | None  # row_idx, line, row_id, id_default, field, reason
    opt_out: list[str] = field(default_factory=list)  # keys with a row that must not take a semantic answer
    own_model: list[str] = field(default_factory=list)  # routing on: keys with a row that named its own model
    models: list[str] = field(default_factory=list)  # priced models the chunk's rows name
    notes: list[str] = field(default_factory=list)  # the token counter's notes (estimates, substitutes)
    unknown_fields: dict[str, int] = field(default_factory=dict)  # a field costinfer does not read -> its first line


def protocol_of(provider: str) -> Any:
    """The provider's backend class (``refuses``, ``drops``), or None for a provider not installed here."""
    from costinfer.backends.base import provider_class

    return provider_class(provider)


class ChunkProcessor:
    def __init__(self, job: ChunkJob) -> None:
        self.job = job
        self.keys = KeyMaker(job.endpoint)
        self.counter = TokenCounter(fast=job.fast_count)
        self.prices: dict[str, ModelPrice] = {}
        self._unpriced: dict[str, str] = {}
        self._known = job.spec.known_fields()
        self._protocol = protocol_of(job.provider)  # what the provider's protocol refuses, or does not send
        self._dropped: set[str] = set()

    def jsonl_block(self, first_line: int, block: bytes) -> ChunkResult:
        with _without_cyclic_gc():
            return self._process(jsonl_block_rows(first_line, block))

    def process(self, rows: list[RawRow]) -> ChunkResult:
        with _without_cyclic_gc():
            return self._process(rows)

    def _process(self, rows: list[RawRow]) -> ChunkResult:
        spec = self.job.spec
        id_field = spec.id_field
        items: list[Request] = []
        new: list[Request] = []  # the first row of each request new in this chunk
        later: list[Request] = []  # rows repeating a request new in this chunk: settled once it is counted
        rejects: list[Reject] = []
        first: dict[str, Reject | None] = {}  # key -> the reject its first row got (None: good)
        opt_out: list[str] = []
        own_model: list[str] = []
        routing = bool(spec.route_models)
        unknown: dict[str, int] = {}
        prices, keys, known, shape = self.prices, self.keys.keys, self._known, spec.shape
        for idx, raw in enumerate(rows):
            data = raw.data
            if raw.error is not None or data is None:
                fld, reason = raw.error or ("(line)", "unreadable")
                rejects.append(Reject(idx, raw.line, fld, reason))
                continue
            if shape != "plain":  # a provider batch-file line: the row it stands for
                try:
                    data = as_row(data, shape, id_field)
                except BadLine as bad:
                    rejects.append(Reject(idx, raw.line, bad.field, bad.reason))
                    continue
            if not data.keys() <= known:
                for name in data.keys() - known:
                    unknown.setdefault(name, raw.line)
            req = build(idx, raw.line, data, spec)
            if data.get(id_field) in (None, ""):
                req.id_default = True  # stored as its position once the chunk's offset is known
            if isinstance(req, Reject):
                rejects.append(req)
                continue
            model = req.body["model"]
            if model not in prices and self._price(model) is None:
                rejects.append(_reject(req, "model", self._unpriced[model]))
                continue
            if prices[model].reasoning:
                refused = _reasoning_refuses(req.body)
                if refused is not None:
                    rejects.append(_reject(req, *refused))
                    continue
            if self._protocol is not None:
                refused = self._protocol.refuses(req.body)
                if refused is not None:  # a bad row now, not a failed call later
                    rejects.append(_reject(req, *refused))
                    continue
                self._dropped.update(self._protocol.drops(req.body))
            key, req.norm_key, req.group_key = keys(req.body)
            req.key = key
            if req.extra and req.extra.get("semantic") is False:
                opt_out.append(key)  # this run's rows of the request take no semantic answer; it may lend its own
            if routing and data.get("model"):
                own_model.append(key)  # a row's own model always wins: the request is not routed
            if key in first:
                later.append(req)
            else:
                first[key] = None
                new.append(req)
        counts, bounds = self.counter.measure([r.body for r in new])
        accepted: list[Request] = []
        limits = {model: _limits_of(price) for model, price in prices.items()}
        for req, n, bound in zip(new, counts, bounds, strict=True):
            req.input_tokens = n
            req.input_bound = bound
            body = req.body
            max_in, max_out = limits[body["model"]]
            if n <= max_in and body["max_tokens"] <= max_out:
                accepted.append(req)  # within the model's limits: the commonest case, checked inline
                continue
            problem = self._limits(req, prices[body["model"]])
            if problem is not None and routing and req.key not in own_model and self._fits_a_candidate(req):
                problem = None  # too big for the cheapest candidate: routing sends it to one that takes it
            if problem is not None:
                first[req.key] = problem
                rejects.append(problem)
            else:
                accepted.append(req)
        for req in later:
            earlier = first[req.key]
            if earlier is not None:
                rejects.append(_reject(req, earlier.field, earlier.reason))
            else:
                items.append(req)
        items.extend(accepted)
        return ChunkResult(
            rows=len(rows),
            items=_items(items),
            requests=self._requests(accepted),
            rejects=_rejects(rejects),
            opt_out=opt_out,
            own_model=own_model,
            models=sorted(self.prices),
            notes=[*self.counter.notes(), *self._drop_notes()],
            unknown_fields=unknown,
        )

    def _drop_notes(self) -> list[str]:
        if not self._dropped:
            return []
        names = ", ".join(sorted(self._dropped))
        return [f"{self.job.provider} has no counterpart of {names}: not sent with the rows that set it"]

    def _price(self, model: str) -> ModelPrice | None:
        if model in self._unpriced:
            return None
        try:
            price = self.job.catalog.lookup(model, self.job.provider)
        except ConfigError as exc:
            self._unpriced[model] = str(exc)
            return None
        self.prices[model] = price
        return price

    def _fits_a_candidate(self, req: Request) -> bool:
        prices = [self._price(m) if m not in self.prices else self.prices[m] for m in self.job.spec.route_models]
        return any(p is not None and self._limits(req, p) is None for p in prices)

    def _limits(self, req: Request, price: ModelPrice) -> Reject | None:
        field_name = self.job.spec.prompt_field if len(req.body["messages"]) <= 2 else "messages"
        limit = price.max_input_tokens
        if limit is not None and req.input_tokens > limit:
            return _reject(
                req, field_name, f"the prompt is {req.input_tokens} tokens; {req.model} accepts at most {limit}"
            )
        out_limit = price.max_output_tokens
        if out_limit is not None and req.max_tokens > out_limit:
            return _reject(req, "max_tokens", f"{req.max_tokens} is more than {req.model} can write ({out_limit})")
        return None

    def _requests(self, new: list[Request]) -> pa.Table | None:
        if not new:
            return None
        return pa.table(
            {
                "key": pa.array([r.key for r in new], pa.string()),
                "endpoint": _few([self.job.endpoint] * len(new)),
                "model": _few([r.body["model"] for r in new]),
                "body": pa.array([orjson.dumps(r.body).decode() for r in new], pa.string()),
                "input_tokens": pa.array([r.input_tokens for r in new], pa.int32()),
                "max_tokens": pa.array([r.body["max_tokens"] for r in new], pa.int32()),
                "input_bound": pa.array([r.input_bound for r in new], pa.int32()),
                "norm_key": pa.array([r.norm_key for r in new], pa.string()),
                "group_key": _few([r.group_key for r in new]),
            }
        )


# What OpenAI's reasoning models refuse with a 400 on every call: sampling parameters other than their defaults
_REASONING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def _reasoning_refuses(body: dict[str, object]) -> tuple[str, str] | None:
    """(field, reason) when a request for a reasoning model sets what the provider would refuse, else None."""
    for name, default in _REASONING_DEFAULTS.items():
        value = body.get(name)
        if value is not None and value != default:
            return name, (
                f"{body['model']} is a reasoning model: OpenAI accepts only the default {name} ({default:g}) and "
                f"would refuse {value:g} on every call; remove the field or pick a model that takes it"
            )
    return None


def _limits_of(price: ModelPrice) -> tuple[float, float]:
    """(most input tokens, most output tokens) a model accepts; infinite when the catalog does not say."""
    inf = float("inf")
    max_in = price.max_input_tokens if price.max_input_tokens is not None else inf
    return max_in, price.max_output_tokens if price.max_output_tokens is not None else inf


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """A chunk builds tens of thousands of small objects and no reference cycles: the cyclic collector, run over and
    over meanwhile, only costs time (about a tenth of it). Reference counting frees the chunk afterwards."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _reject(req: Request, field_name: str, reason: str) -> Reject:
    return Reject(req.row_idx, req.line, field_name, reason, req.row_id, req.id_default)


def _few(values: list[str | None]) -> pa.Array:
    """A column of few distinct strings (an endpoint, models, group keys), dictionary-encoded: each string once, and
    an index per row. What a worker sends of a plan of 1,000,000 rows is a fifth smaller (the request tables: 382 MB
    against 479 MB), and DuckDB stores it a little faster."""
    return pa.array(values, pa.string()).dictionary_encode()


def _items(items: list[Request]) -> pa.Table:
    return pa.table(
        {
            "row_idx": pa.array([r.row_idx for r in items], pa.int64()),
            "line": pa.array([r.line for r in items], pa.int64()),
            "row_id": pa.array([None if r.id_default else r.row_id for r in items], pa.string()),
            "key": pa.array([r.key for r in items], pa.string()),
            "metadata": pa.array(
                [orjson.dumps(r.metadata).decode() if r.metadata is not None else None for r in items], pa.string()
            ),
            "priority": pa.array([r.priority for r in items], pa.int32()),
        }
    )


def _rejects(rejects: list[Reject]) -> pa.Table | None:
    if not rejects:
        return None
    return pa.table(
        {
            "row_idx": pa.array([r.row_idx for r in rejects], pa.int64()),
            "line": pa.array([r.line for r in rejects], pa.int64()),
            "row_id": pa.array([None if r.id_default else r.row_id for r in rejects], pa.string()),
            "id_default": pa.array([r.id_default for r in rejects], pa.bool_()),
            "field": pa.array([r.field for r in rejects], pa.string()),
            "reason": pa.array([r.reason for r in rejects], pa.string()),
        }
    )


# --- worker processes -----------------------------------------------------------------------------------------------

_WORKER: ChunkProcessor | None = None


def start_worker(job: ChunkJob, parent: int | None = None) -> None:
    """A worker process's initializer: one processor (key memo, loaded encoders) for all the chunks it gets. The
    worker leaves when its parent does, even when the parent was killed (SIGKILL leaves no time to stop it): Ctrl-C
    is the parent's to handle."""
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _follow_parent(parent)
    keep_freed_memory()  # each block allocates and frees what the one before did
    sys.meta_path.insert(0, _NoPandas())
    _WORKER = ChunkProcessor(job)


class _NoPandas(importlib.abc.MetaPathFinder):
    """pandas is not imported in a worker. pyarrow imports it (0.15 s of a worker's start) on a process's first
    ``pa.array`` only to ask whether the input is a pandas object; a worker builds its tables from lists."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.partition(".")[0] == "pandas":
            raise ModuleNotFoundError("costinfer's ingest workers do not import pandas", name=fullname)
        return None


def _follow_parent(parent: int) -> None:
    """Exit when ``parent`` is gone (its pid is no longer this process's parent), within half a second."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="costinfer-parent-watch", daemon=True).start()


def worker_jsonl_block(first_line: int, block: bytes) -> ChunkResult:
    assert _WORKER is not None, "start_worker was not called in this process"
    return _WORKER.jsonl_block(first_line, block)


def worker_jsonl_span(path: str, first_line: int, offset: int, length: int) -> ChunkResult:
    """A block of an uncompressed file, read here: its bytes do not go through the parent and a pipe."""
    assert _WORKER is not None, "start_worker was not called in this process"
    return _WORKER.jsonl_block(first_line, read_span(path, offset, length))
