"""Pacing calls within a provider's requests-per-minute and tokens-per-minute limits, adapting to its headers.

Providers meter with a token bucket: a full bucket of a minute's allowance that refills continuously (Anthropic
documents it; OpenAI's ``x-ratelimit-remaining-*`` headers report it). Two ways to pace, per run:

- **Bucket** (while the server reports what remains): spend the capacity it reports, then go at the refill rate. The
  extra above the refill rate starts at one call and doubles every second (like TCP's slow start) rather than
  sending the whole bucket at once, because some servers also enforce the minute over short windows (OpenAI
  quantizes 60,000 RPM as 1,000 per second): such a server answers the first call past its short window with a 429,
  and the slow start keeps that to about one call before the limiter falls back to even spacing.
- **Even spacing** (no headers, or after a 429 that the reported capacity did not predict): calls ``60 / limit``
  seconds apart at ``SAFETY`` of the limit, with no bursts: a provider counting over any window sees a steady rate.

Limits come from the user (``--rpm``, ``--tpm``); a server's ``x-ratelimit-*`` (OpenAI) or ``anthropic-ratelimit-*``
headers fill in those the user did not give. A ``remaining`` of zero pauses everyone until the reported reset, and a
429's ``Retry-After`` pauses everyone too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import anyio

SAFETY = 0.97
# The bucket mode's extra above the refill rate doubles every this many seconds: a full bucket of N calls is spent
# within about log2(N) of them (7 s for 120 calls, 12 s for 10,000 at 10,000 RPM)
DOUBLING_S = 1.0
# Longest sleep between looks at the bucket: new headers may make a waiting call's turn come sooner
_POLL_S = 0.05
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def parse_reset(value: str, now: float | None = None) -> float | None:
    """Seconds until a reset: OpenAI's '6m0s' / '1s' / '20ms', or Anthropic's RFC 3339 time."""
    value = value.strip()
    match = _DURATION.match(value)
    if match and any(match.groups()):
        h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
        return h * 3600 + m * 60 + s + ms / 1000
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


@dataclass
class _Bucket:
    """One metered quantity (requests or tokens) as the server last reported it, counted forward locally."""

    level: float  # what the server said remains, less what was in flight then
    at: float  # when it said so
    sent: float = 0.0  # sent since then

    def credit(self, per_second: float, capacity: float, now: float) -> float:
        return min(self.level + per_second * (now - self.at), capacity) - self.sent


class RateLimiter:
    def __init__(self, rpm: float | None = None, tpm: float | None = None, probe_first: bool = True) -> None:
        """``probe_first``: with no limit known, send one call and read its headers before the others (a provider's
        limits may be smaller than the concurrency); a self-hosted server has no such headers to wait for."""
        self.rpm = rpm
        self.tpm = tpm
        self.learned = False  # limits taken from the server's headers
        self.even = False  # after a 429 the reported capacity did not predict: even spacing for the rest of the run
        self._next_request = 0.0
        self._next_tokens = 0.0
        self._paused_until = 0.0
        self._buckets: dict[str, _Bucket] = {}  # "requests"/"tokens" -> the server's last report
        self._in_flight = {"requests": 0.0, "tokens": 0.0}
        self._ramp_start: float | None = None
        self._heard = not probe_first  # a call has come back: its headers, if any, were read
        self._ramp_sent = {"requests": 0.0, "tokens": 0.0}

    # --- taking a turn ------------------------------------------------------------------------------------------

    async def acquire(self, tokens: int) -> None:
        """Wait for this call's turn. ``tokens``: what the provider counts, prompt plus max_tokens. Every acquire is
        followed by one ``release`` with the same ``tokens`` when the call is answered (or fails)."""
        if self._ramp_start is None:  # the slow start counts from the first call, whichever way it was paced
            self._ramp_start = time.monotonic()
        while True:
            now = time.monotonic()
            if self._paused_until > now:
                await anyio.sleep(self._paused_until - now)
                continue
            if not self._heard and self._in_flight["requests"] > 0 and not self._limits():
                # nothing known of the server's limits yet: one call first, to read its headers, rather than a
                # burst of the whole concurrency into limits that may be smaller
                await anyio.sleep(_POLL_S / 5)
                continue
            if not self._bursting():
                start = self._even_slot(tokens, now)
                self._count(tokens)  # counted when its slot is taken, not when it wakes: a burst must see it
                if start > now:
                    await anyio.sleep(start - now)
                if self._paused_until > time.monotonic():  # a 429 came meanwhile: take a slot after the pause
                    self.release(tokens)
                    self._ramp_sent["requests"] -= 1
                    self._ramp_sent["tokens"] -= tokens
                    continue
                break
            wait = self._bucket_wait(tokens, now)
            if wait <= 0:
                self._take(tokens)
                self._count(tokens)
                break
            await anyio.sleep(min(wait, _POLL_S))

    def _count(self, tokens: int) -> None:
        self._in_flight["requests"] += 1
        self._in_flight["tokens"] += tokens
        self._ramp_sent["requests"] += 1
        self._ramp_sent["tokens"] += tokens

    def release(self, tokens: int) -> None:
        self._heard = True
        self._in_flight["requests"] -= 1
        self._in_flight["tokens"] -= tokens

    def _limits(self) -> dict[str, float]:
        out = {}
        if self.rpm:
            out["requests"] = float(self.rpm)
        if self.tpm:
            out["tokens"] = float(self.tpm)
        return out

    def _bursting(self) -> bool:
        limits = self._limits()
        return not self.even and bool(limits) and all(kind in self._buckets for kind in limits)

    def _bucket_wait(self, tokens: int, now: float) -> float:
        """Seconds until the server's reported capacity and the ramp both allow this call (0: go now)."""
        t = now - (self._ramp_start or now)
        wait = 0.0
        for kind, limit in self._limits().items():
            cost = 1.0 if kind == "requests" else float(tokens)
            per_second = limit / 60
            credit = self._buckets[kind].credit(per_second, limit, now)
            if credit < cost:
                wait = max(wait, (cost - credit) / per_second)
            # the slow start: cumulative sends allowed by now, the refill rate plus an extra that doubles
            step = max(1.0, limit / 3600)  # one call's worth of requests; about one call's worth of tokens
            allowed = per_second * t + step * 2 ** min(t / DOUBLING_S, 60.0)
            if self._ramp_sent[kind] + cost > allowed:
                wait = max(wait, _POLL_S)
        return wait

    def _take(self, tokens: int) -> None:
        for kind in self._limits():
            cost = 1.0 if kind == "requests" else float(tokens)
            self._buckets[kind].sent += cost

    def _even_slot(self, tokens: int, now: float) -> float:
        """The next evenly spaced slot, taken: when this call may start."""
        start = max(now, self._next_request, self._next_tokens)
        if self.rpm:
            self._next_request = start + 60.0 / (self.rpm * SAFETY)
        if self.tpm:
            self._next_tokens = start + 60.0 * tokens / (self.tpm * SAFETY)
        return start

    # --- what the server says ------------------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Everyone waits ``seconds`` (a 429's Retry-After, an exhausted window)."""
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until = until
            # evenly spaced calls resume after the pause, still spaced (not all at once when it ends)
            self._next_request = max(self._next_request, until)
            self._next_tokens = max(self._next_tokens, until)

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause as asked; if the bucket mode sent it, this server enforces shorter windows than the minute
        its headers report, so calls are evenly spaced from now on."""
        if self._bursting():
            self.even = True
        self.pause(retry_after if retry_after is not None else 1.0)

    def observe(self, headers: Mapping[str, str] | None) -> None:
        if not headers:
            return
        now = time.monotonic()
        for kind in ("requests", "tokens"):
            limit = _first(headers, f"x-ratelimit-limit-{kind}", f"anthropic-ratelimit-{kind}-limit")
            remaining = _first(headers, f"x-ratelimit-remaining-{kind}", f"anthropic-ratelimit-{kind}-remaining")
            reset = _first(headers, f"x-ratelimit-reset-{kind}", f"anthropic-ratelimit-{kind}-reset")
            attr = "rpm" if kind == "requests" else "tpm"
            if limit is not None and getattr(self, attr) is None:
                try:
                    setattr(self, attr, float(limit))
                    self.learned = True
                except ValueError:
                    pass
            if remaining is None:
                continue
            try:
                left = float(remaining)
            except ValueError:
                continue
            # calls in flight may not be counted in this report yet: count them as spent (the safe side)
            self._buckets[kind] = _Bucket(left - self._in_flight[kind], now)
            if left <= 0 and reset is not None:
                seconds = parse_reset(reset)
                per_minute = self.rpm if kind == "requests" else self.tpm
                if seconds and self._bursting() and per_minute:
                    # a bucket's reset is when it is full again; the next call's room comes after one refill step
                    seconds = min(seconds, 60 / per_minute)
                if seconds:
                    self.pause(seconds)


def _first(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            return value
    return None
