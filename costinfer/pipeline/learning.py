"""The learned router of a run (``--route learned``), made from its spec: its candidates and prices, the checks it
learns from, and the embedder of the semantic tier (the same model and engine, the same stored vectors)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from costinfer.pricing.catalog import ModelPrice
from costinfer.progress import ProgressSink
from costinfer.reuse.embeddings import Embedder, missing_dependency
from costinfer.routing.checks import Acceptance
from costinfer.routing.learned import LearnedRouter
from costinfer.spec import RunSpec
from costinfer.store import Store


def learned_router(
    spec: RunSpec,
    store: Store,
    run_id: str,
    prices: dict[str, ModelPrice],
    endpoint: str,
    acceptance: Acceptance | None,
    progress: ProgressSink,
) -> LearnedRouter | None:
    """The run's router, or None when its policy is not ``learned``."""
    routing = spec.routing
    if not (routing.routed and routing.policy == "learned" and acceptance is not None):
        return None
    embed: Callable[[list[str]], np.ndarray] | None = None
    if missing_dependency() is None:
        ray = spec.ray
        embed = Embedder(store, spec.reuse.embedding_model, ray.engine, ray.address, progress).embed
    return LearnedRouter(store, run_id, list(routing.models), prices, endpoint, acceptance.fingerprint(), embed)
