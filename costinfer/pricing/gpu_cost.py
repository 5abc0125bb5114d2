"""What a run on your own GPUs cost: the GPU time it measured, not a per-token guess.

A self-hosted model priced in ``costinfer.toml`` (``[self_hosted."name"] gpu_hour_usd``, ``gpus`` per server) is
planned and budgeted at per-token prices derived from its stated throughput. Once the calls are done, the ledger gets
the measured cost instead: the calls phase's wall time x the servers (replicas) x their GPUs x the hourly price,
spread over the run's calls by their tokens (input plus output); when several such models shared the time, each gets
the share of it its tokens took.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from costinfer.pricing.catalog import ModelPrice
from costinfer.store.faces import GpuTime

_HOUR = Decimal(3600)


def attribute_gpu_time(
    store: GpuTime,
    run_id: str,
    since: datetime.datetime,
    prices: dict[str, ModelPrice],
    seconds: float,
    servers: int,
) -> str | None:
    """Rewrite the cost of this invocation's self-hosted calls from the measured GPU time; returns a line saying
    what it was, or None when no call was on a GPU-priced model."""
    called = [(m, n, t) for m, n, t in store.calls_since(run_id, since) if prices.get(m) and prices[m].gpu_hour_usd]
    tokens_all = sum(t for _, _, t in called)
    if not called or not tokens_all:
        return None
    hours = Decimal(str(seconds)) / _HOUR
    total = Decimal(0)
    for model, _, tokens in called:
        price = prices[model]
        assert price.gpu_hour_usd is not None
        cost = price.gpu_hour_usd * price.gpus * servers * hours * tokens / tokens_all
        store.attribute_cost(run_id, since, model, cost)
        total += cost
    gpus = sum(prices[m].gpus for m, _, _ in called[:1]) * servers
    return (
        f"GPU time: {seconds:.1f} s on {gpus} GPU{'s' if gpus != 1 else ''} = ${total:.6f}, spread over "
        f"{sum(n for _, n, _ in called)} calls by their tokens"
    )
