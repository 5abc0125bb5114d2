"""A circuit breaker: a server that keeps failing gets a rest instead of a stream of retries.

After ``threshold`` failures in a row (5xx, timeouts, dropped connections, malformed answers; not 429s, which the
rate limiter handles), every worker waits ``cooldown_s``; the cooldown doubles each time the breaker opens again
without a success in between, up to ``max_cooldown_s``. One success closes it.

Where there is somewhere else to go (a fallback model), the breaker is half-open once the cooldown has passed: one
request at a time probes the failing server (``allow_probe``) while the others keep going elsewhere; a failed probe
opens it again at once. Without that, every worker went back to the failing server together and spent its attempts
there, which made a model's outage cost rows their answers on a slow machine.
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
        self.half_open = False  # it opened and has not seen a success since: probe one request at a time
        self.probing = False  # a probe is in flight

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def success(self) -> None:
        self.failures = 0
        self.cooldown_s = self.base_cooldown_s
        self.half_open = self.probing = False

    def allow_probe(self) -> bool:
        """Whether a request may go to the failing server now: always while closed; once the cooldown has passed,
        one at a time (the probe); never while open."""
        if self.is_open:
            return False
        if not self.half_open:
            return True
        if self.probing:
            return False
        self.probing = True
        return True

    def probe_done(self) -> None:
        """An attempt on the server ended without telling whether it is back (a 429, the request's own fault)."""
        self.probing = False

    def failure(self) -> None:
        if self.half_open and self.probing:  # the probe failed: open again at once, for longer
            self.probing = False
            self._open()
            return
        self.failures += 1
        if self.failures >= self.threshold and not self.is_open:
            self._open()

    def _open(self) -> None:
        self.open_until = time.monotonic() + self.cooldown_s
        self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
        self.failures = 0
        self.half_open = True

    async def wait(self) -> None:
        delay = self.open_until - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
