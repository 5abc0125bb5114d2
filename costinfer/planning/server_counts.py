"""Prompt tokens counted by a self-hosted server itself (vLLM's ``POST /tokenize``, with the model's chat template):
exactly what it will bill, for the plan and the budget, in place of costinfer's estimate. Each distinct request is
counted once and kept in the store (``requests.counted_by``), so a rerun or a resumed run asks nothing again.

A server that cannot count (down, an older vLLM) leaves the estimates in place, with a note saying so.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson

from costinfer.backends.base import Backend
from costinfer.errors import BackendError
from costinfer.progress import ProgressSink
from costinfer.store.faces import Planning


def count_on_server(store: Planning, run_id: str, backend: Backend, progress: ProgressSink) -> tuple[list[str], bool]:
    """Count the run's uncounted requests on the server; returns the notes for the plan, and whether the server
    counted them all (costinfer's own estimates are then gone)."""
    todo = store.uncounted(run_id)
    bodies = [orjson.loads(body) for _, body, _ in todo]
    try:
        counts, limits = anyio.run(_count, backend, bodies)
    except BackendError as exc:
        return [f"the server could not count the prompts ({exc}); the plan uses costinfer's estimates"], False
    store.set_server_counts([(key, n) for (key, _, _), n in zip(todo, counts, strict=True)])
    if todo:
        progress.note(f"{len(todo)} prompts counted by the server's /tokenize")
    too_long: dict[str, int] = {}
    for body, (_, _, cap), n in zip(bodies, todo, counts, strict=True):
        limit = limits.get(body["model"])
        if limit and n + cap > limit:
            too_long[body["model"]] = too_long.get(body["model"], 0) + 1
    return [
        f"{k} requests need more than {model}'s context of {limits[model]} tokens on the server (prompt + "
        f"max_tokens): it will refuse them; lower max_tokens or shorten the prompts"
        for model, k in too_long.items()
    ], True


async def _count(backend: Backend, bodies: list[dict[str, Any]]) -> tuple[list[int], dict[str, int | None]]:
    async with backend:
        limits = await backend.served_models() if bodies else {}
        return await backend.count_tokens(bodies), limits
