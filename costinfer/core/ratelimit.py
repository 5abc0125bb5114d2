"""Pacing calls within a provider's requests-per-minute and tokens-per-minute limits, adapting to its headers.

Calls are spaced evenly (no bursts): a provider counts over a sliding minute, so a burst on top of a steady rate is
what earns 429s. The pace is ``SAFETY`` of the limit. Limits come from the user (``--rpm``, ``--tpm``); a server's
``x-ratelimit-*`` (OpenAI) or ``anthropic-ratelimit-*`` headers fill in limits the user did not give, and a
``remaining`` of zero pauses everyone until the window resets. A 429's ``Retry-After`` pauses everyone too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime

import anyio

SAFETY = 0.97
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


class RateLimiter:
    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.learned = False  # limits taken from the server's headers
        self._next_request = 0.0
        self._next_tokens = 0.0
        self._paused_until = 0.0
        self.waited_s = 0.0
        self.pauses = 0

    async def acquire(self, tokens: int) -> None:
        """Wait for this call's turn. ``tokens``: what the provider counts, prompt plus max_tokens."""
        now = time.monotonic()
        start = max(now, self._paused_until, self._next_request, self._next_tokens)
        if self.rpm:
            self._next_request = start + 60.0 / (self.rpm * SAFETY)
        if self.tpm:
            self._next_tokens = start + 60.0 * tokens / (self.tpm * SAFETY)
        if start > now:
            self.waited_s += start - now
            await anyio.sleep(start - now)

    def pause(self, seconds: float) -> None:
        """Everyone waits ``seconds`` (a 429's Retry-After, an exhausted window)."""
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    def observe(self, headers: Mapping[str, str] | None) -> None:
        if not headers:
            return
        for kind in ("requests", "tokens"):
            limit = _first(headers, f"x-ratelimit-limit-{kind}", f"anthropic-ratelimit-{kind}-limit")
            remaining = _first(headers, f"x-ratelimit-remaining-{kind}", f"anthropic-ratelimit-{kind}-remaining")
            reset = _first(headers, f"x-ratelimit-reset-{kind}", f"anthropic-ratelimit-{kind}-reset")
            if limit is not None and getattr(self, "rpm" if kind == "requests" else "tpm") is None:
                try:
                    setattr(self, "rpm" if kind == "requests" else "tpm", float(limit))
                    self.learned = True
                except ValueError:
                    pass
            if remaining is not None and reset is not None and remaining.strip() == "0":
                seconds = parse_reset(reset)
                if seconds:
                    self.pause(seconds)


def _first(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            return value
    return None
