"""Calls in flight that follow a self-hosted server's queue instead of a fixed number (``Backend.reports_load``).

A vLLM server runs a batch of requests at once and queues the rest. Too few requests in flight leave the batch
part empty; too many build a queue that only adds latency and, on a crash, work to redo. The controller reads the
server's gauges (running, waiting, KV-cache use) four times a second until requests first wait, then every two
seconds (rendering /metrics costs the server CPU), and keeps the running batch full with a short queue behind it:
while nothing waits and the KV cache has room, it doubles the calls in flight (if they are all in use and all
running on the server: calls still on their way, on a busy client, are no sign of room); once more
requests wait than half of the batch (at least ``MARGIN``), it sets them to the batch plus that queue, the batch
being the most requests ever seen running at once. ``--concurrency`` is its ceiling.

Measured on the real vLLM CPU server (benchmarks/vllm_throughput.py, 128 running at most): 140, 192 and 256 calls in
flight ran 1,000 prompts in 16.9, 16.3 and 16.6 s, 64 in 20-39 s, 16 in 57-68 s: the batch must be full; the queue
behind it changes little (a queue of a quarter, a half or all of the batch measured 17.0-18.0, 17.7-18.0 and
16.6-17.8 s, within the noise), so half is kept.
"""

from __future__ import annotations

import math

import anyio

MARGIN = 4
QUEUE_SHARE = 0.5  # the queue kept behind the running batch, as a share of it
START = 16
KV_FULL = 0.9


class LoadControl:
    @staticmethod
    def start_for(batch: float | None) -> int:
        """Where to start: the batch a previous run saw on this server, with its queue; else ``START``."""
        if not batch:
            return START
        return math.ceil(batch + max(MARGIN, QUEUE_SHARE * batch))

    def __init__(self, ceiling: int, start: int = START) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = min(start, self.ceiling)
        self.in_flight = 0
        self._freed = anyio.Event()
        self._settled = False
        self.batch = 0.0  # the most requests seen running at once

    async def acquire(self) -> None:
        while self.in_flight >= self.limit:
            if self._freed.is_set():
                self._freed = anyio.Event()
            await self._freed.wait()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._freed.set()

    @property
    def settled(self) -> bool:
        """Requests have queued at least once: the batch's size is known (the executor then reads less often)."""
        return self._settled

    def observe(self, running: float, waiting: float, kv_cache: float | None) -> None:
        """One reading of the server's gauges (summed over replicas when there are several)."""
        if waiting > 0:
            self._settled = True
        # the batch's size is the most that ever ran: one reading may catch it half refilled, and a limit cut to
        # that would starve it until the next readings
        self.batch = max(self.batch, running)
        queue = max(MARGIN, QUEUE_SHARE * self.batch)
        if waiting > queue:
            target = math.ceil(self.batch + queue)
        elif (
            waiting == 0
            and (kv_cache is None or kv_cache < KV_FULL)
            and min(self.in_flight, running) >= 0.9 * self.limit
        ):
            target = self.limit * 2
        else:
            return
        self.set_limit(target)

    def set_limit(self, limit: int) -> None:
        self.limit = max(1, min(self.ceiling, int(limit)))
        self._freed.set()  # a larger limit lets waiting workers in
