"""What the stage tests share: an in-memory store, made-up rows read through the real reading stage, and
``ScriptedBackend``, a fake model server named for what it is (no HTTP: it answers from a function, bills what it is
told, and fails the requests it is told to fail), so that a stage's own tests take milliseconds."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import anyio
import orjson

from costinfer.backends.base import Backend, BackendConfig, Completion
from costinfer.errors import BackendError
from costinfer.execution.online import Executor
from costinfer.execution.state import ExecConfig, Tuning
from costinfer.planning.budget import BudgetGuard
from costinfer.pricing.catalog import Catalog, ModelPrice
from costinfer.progress import NullProgress
from costinfer.reading.ingest import Ingest
from costinfer.reading.rows import RowSpec
from costinfer.reuse.tiers import resolve
from costinfer.store import Store

CATALOG = Catalog.load()
FAST = Tuning(backoff_base_s=0.001, commit_interval_s=0.001)


def price(model: str) -> ModelPrice:
    return CATALOG.lookup(model, "openai")


def read_rows(
    store: Store,
    folder: Path,
    rows: list[dict[str, Any]],
    *,
    model: str = "gpt-4o-mini",
    max_tokens: int = 64,
    route_models: tuple[str, ...] = (),
) -> tuple[str, Ingest]:
    """A run of ``rows`` in the store, read, keyed and de-duplicated (the normalized tier; no embeddings)."""
    run_id = uuid.uuid4().hex
    path = folder / f"{run_id}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    store.create_run(run_id, run_id, {"input_path": str(path), "provider": "openai", "endpoint": "openai"})
    spec = RowSpec(model=model, max_tokens=max_tokens, route_models=route_models)
    ingest = Ingest(store, run_id, path, "jsonl", spec, "openai", "openai", CATALOG, str(path))
    store.reset_ingest(run_id)
    ingest.run(NullProgress())
    store.finish_ingest(run_id)
    resolve(store, run_id, None)
    return run_id, ingest


class ScriptedBackend(Backend):
    """A fake model server. ``answer(body)`` gives the text; ``usage(body)`` the billed (input, output) tokens
    (default: 10 and 5); a request whose last message is in ``fail`` gets a 400, one in ``flaky`` a 503 the first
    time."""

    name: ClassVar[str] = "openai"  # priced as OpenAI's models

    def __init__(
        self,
        answer: Callable[[dict[str, Any]], str] | None = None,
        usage: Callable[[dict[str, Any]], tuple[int, int]] | None = None,
        fail: set[str] | None = None,
        flaky: set[str] | None = None,
    ) -> None:
        super().__init__(BackendConfig(base_url="http://scripted.invalid"))
        self.answer = answer or (lambda body: f"answer to {body['messages'][-1]['content']}")
        self.usage = usage or (lambda body: (10, 5))
        self.fail = fail or set()
        self.flaky = set(flaky or ())
        self.sent: list[dict[str, Any]] = []

    async def complete(self, body: dict[str, Any], *, cache_prefix: bool = False) -> Completion:
        self.sent.append(body)
        await anyio.sleep(0)
        text = body["messages"][-1]["content"]
        if text in self.fail:
            raise BackendError("HTTP 400: bad request", error_class="bad_request", status=400)
        if text in self.flaky:
            self.flaky.discard(text)
            raise BackendError("HTTP 503: overloaded", error_class="server_error", status=503, retryable=True)
        tokens_in, tokens_out = self.usage(body)
        return Completion(self.answer(body), tokens_in, tokens_out, finish_reason="stop", model=body["model"])


def call_online(
    store: Store, run_id: str, backend: Backend, budget: Decimal | None = None, concurrency: int = 4
) -> Executor:
    """Every pending request of the run through the real online executor."""
    models = store.run_models(run_id)
    executor = Executor(
        store,
        run_id,
        backend,
        {m: price(m) for m in models},
        BudgetGuard(budget),
        ExecConfig(concurrency=concurrency, max_attempts=3, tuning=FAST),
    )
    anyio.run(executor.run, store.pending(run_id))
    return executor
