"""Read a dataset into the store, chunk by chunk: items, distinct request bodies and rejects.

Memory stays bounded by one chunk plus the set of keys and ids seen (needed to find duplicates), so a dataset larger
than memory ingests fine. Each distinct request is counted and priced once.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa

from costinfer.core.errors import ConfigError
from costinfer.core.keys import normalized_key, request_key, semantic_parts
from costinfer.core.prices import Catalog, ModelPrice
from costinfer.core.progress import ProgressSink
from costinfer.core.reader import RawRow, read_chunks
from costinfer.core.request import Reject, Request
from costinfer.core.rows import RowSpec, build
from costinfer.core.store import Store
from costinfer.core.tokens import TokenCounter

# From this size on, counting uses quicktok's batch counter: it loads 0.25 s slower than tiktoken, then counts faster.
FAST_COUNT_BYTES = 16 * 1024 * 1024


@dataclass
class Ingest:
    store: Store
    run_id: str
    path: Path
    fmt: str
    spec: RowSpec
    endpoint: str
    provider: str
    catalog: Catalog
    counter: TokenCounter = field(default_factory=TokenCounter)
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    _ids: set[str] = field(default_factory=set)
    _keys: dict[str, Reject | None] = field(default_factory=dict)  # key -> the reject its first row got, if any
    _unpriced: dict[str, str] = field(default_factory=dict)
    _chunk_keys: set[str] = field(default_factory=set)  # keys first seen in the chunk being read
    semantic_opt_out: set[str] = field(default_factory=set)  # keys with a row that must not take a semantic answer

    def run(self, progress: ProgressSink) -> None:
        progress.phase("reading", None)
        if self.path.stat().st_size >= FAST_COUNT_BYTES:
            self.counter = TokenCounter(fast=True)
        row_idx = 0
        # One chunk is written to the store (DuckDB works without the GIL) while the next one is parsed.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="costinfer-ingest") as writer:
            pending: Future[None] | None = None
            for chunk in read_chunks(self.path, self.fmt):
                tables = self._chunk(chunk, row_idx)
                row_idx += len(chunk)
                if pending is not None:
                    pending.result()
                pending = writer.submit(self.store.add_chunk, self.run_id, *tables)
                progress.advance(row_idx, Decimal(0))
            if pending is not None:
                pending.result()

    def _chunk(self, chunk: list[RawRow], start: int) -> tuple[pa.Table, pa.Table | None, pa.Table | None]:
        items: list[Request] = []
        new: list[Request] = []
        rejects: list[Reject] = []
        later: list[Request] = []  # duplicates of a request first seen in this chunk: settled after counting
        for offset, raw in enumerate(chunk):
            row_idx = start + offset
            if raw.error is not None or raw.data is None:
                fld, reason = raw.error or ("(line)", "unreadable")
                rejects.append(Reject(row_idx, raw.line, fld, reason))
                continue
            req = self._row(row_idx, raw.line, raw.data)
            if isinstance(req, Reject):
                rejects.append(req)
            elif req.key not in self._keys:
                self._keys[req.key] = None
                new.append(req)
            elif req.key in self._chunk_keys:
                later.append(req)
            else:
                earlier = self._keys[req.key]
                if earlier is not None:
                    rejects.append(Reject(row_idx, raw.line, earlier.field, earlier.reason, req.row_id))
                else:
                    items.append(req)
        counts = self.counter.count_bodies([r.body for r in new])
        accepted: list[Request] = []
        for req, n in zip(new, counts, strict=True):
            parts = semantic_parts(req.body, self.endpoint) if req.extra.get("semantic", True) else None
            if parts is not None:
                req.extra["group_key"] = parts[0]
            req.input_tokens = n
            req.input_bound = self.counter.input_bound(req.body, n)
            problem = self._limits(req, self.prices[req.model])
            self._keys[req.key] = problem
            if problem is not None:
                rejects.append(problem)
            else:
                accepted.append(req)
        for req in later:
            earlier = self._keys[req.key]
            if earlier is not None:
                rejects.append(Reject(req.row_idx, req.line, earlier.field, earlier.reason, req.row_id))
            else:
                items.append(req)
        self._chunk_keys.clear()
        items.extend(accepted)
        return self._items(items), self._requests(accepted), self._rejects(rejects)

    def _row(self, row_idx: int, line: int, data: dict[str, object]) -> Request | Reject:
        req = build(row_idx, line, data, self.spec)
        if isinstance(req, Reject):
            return req
        if req.row_id in self._ids:
            return Reject(row_idx, line, self.spec.id_field, f"duplicate id '{req.row_id}'", req.row_id)
        self._ids.add(req.row_id)
        if self._price(req.model) is None:
            return Reject(row_idx, line, "model", self._unpriced[req.model], req.row_id)
        req.key = request_key(req.body, self.endpoint)
        if req.extra.get("semantic") is False:
            self.semantic_opt_out.add(req.key)
        if req.key not in self._keys:
            self._chunk_keys.add(req.key)
        return req

    def _price(self, model: str) -> ModelPrice | None:
        if model in self.prices:
            return self.prices[model]
        if model in self._unpriced:
            return None
        try:
            price = self.catalog.lookup(model, self.provider)
        except ConfigError as exc:
            self._unpriced[model] = str(exc)
            return None
        self.prices[model] = price
        return price

    def _limits(self, req: Request, price: ModelPrice) -> Reject | None:
        field_name = self.spec.prompt_field if len(req.body["messages"]) <= 2 else "messages"
        limit = price.max_input_tokens
        if limit is not None and req.input_tokens > limit:
            return Reject(
                req.row_idx,
                req.line,
                field_name,
                f"the prompt is {req.input_tokens} tokens; {req.model} accepts at most {limit}",
                req.row_id,
            )
        out_limit = price.max_output_tokens
        if out_limit is not None and req.max_tokens > out_limit:
            return Reject(
                req.row_idx,
                req.line,
                "max_tokens",
                f"{req.max_tokens} is more than {req.model} can write ({out_limit})",
                req.row_id,
            )
        return None

    def _items(self, items: list[Request]) -> pa.Table:
        return pa.table(
            {
                "run_id": pa.array([self.run_id] * len(items), pa.string()),
                "row_idx": pa.array([r.row_idx for r in items], pa.int64()),
                "line": pa.array([r.line for r in items], pa.int64()),
                "row_id": pa.array([r.row_id for r in items], pa.string()),
                "key": pa.array([r.key for r in items], pa.string()),
                "metadata": pa.array(
                    [orjson.dumps(r.metadata).decode() if r.metadata is not None else None for r in items], pa.string()
                ),
                "priority": pa.array([r.priority for r in items], pa.int32()),
            }
        )

    def _requests(self, new: list[Request]) -> pa.Table | None:
        if not new:
            return None
        return pa.table(
            {
                "key": pa.array([r.key for r in new], pa.string()),
                "endpoint": pa.array([self.endpoint] * len(new), pa.string()),
                "model": pa.array([r.model for r in new], pa.string()),
                "body": pa.array([orjson.dumps(r.body).decode() for r in new], pa.string()),
                "input_tokens": pa.array([r.input_tokens for r in new], pa.int32()),
                "max_tokens": pa.array([r.max_tokens for r in new], pa.int32()),
                "input_bound": pa.array([r.input_bound for r in new], pa.int32()),
                "norm_key": pa.array([normalized_key(r.body, self.endpoint) for r in new], pa.string()),
                "group_key": pa.array([r.extra.get("group_key") for r in new], pa.string()),
                # the semantic text is the last message's content, read back from `body` when needed: not stored twice
                "sem_text": pa.nulls(len(new), pa.string()),
            }
        )

    def _rejects(self, rejects: list[Reject]) -> pa.Table | None:
        if not rejects:
            return None
        return pa.table(
            {
                "run_id": pa.array([self.run_id] * len(rejects), pa.string()),
                "row_idx": pa.array([r.row_idx for r in rejects], pa.int64()),
                "line": pa.array([r.line for r in rejects], pa.int64()),
                "row_id": pa.array([r.row_id for r in rejects], pa.string()),
                "field": pa.array([r.field for r in rejects], pa.string()),
                "reason": pa.array([r.reason for r in rejects], pa.string()),
            }
        )
