"""A circuit breaker: a server that keeps failing gets a rest instead of a stream of retries.

After ``threshold`` failures in a row (5xx, timeouts, dropped connections, malformed answers; not 429s, which the
rate limiter handles), every worker waits ``cooldown_s``; the cooldown doubles each time the breaker opens again
without a success in between, up to ``max_cooldown_s``. One success closes it.
"""

from __future__ import annotations

import time

import anyio


class CircuitBreaker:
    def __init__(self, threshold: int = 10, cooldown_s: float = 2.0, max_cooldown_s: float = 60.0) -> None:
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.failures = 0
        self.open_until = 0.0
        self.opened = 0  # how many times it opened

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def success(self) -> None:
        self.failures = 0
        self.cooldown_s = self.base_cooldown_s

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold and not self.is_open:
            self.open_until = time.monotonic() + self.cooldown_s
            self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
            self.failures = 0
            self.opened += 1

    async def wait(self) -> None:
        delay = self.open_until - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
