"""What the simulator does wrong on purpose: injected faults, and enforced rate limits with OpenAI's headers."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Fractions of requests (0 to 1) answered with each fault, drawn independently per request."""

    rate_429: float = 0.0  # 429 with Retry-After
    rate_5xx: float = 0.0  # 500, 502 or 503 (529 on the Anthropic protocol)
    rate_timeout: float = 0.0  # an answer slower than any sane client timeout
    rate_drop: float = 0.0  # the connection closed without an answer
    rate_malformed: float = 0.0  # 200 with a body that is not JSON
    rate_truncated: float = 0.0  # 200 whose body stops short of its Content-Length
    retry_after_s: float = 1.0
    slow_s: float = 120.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        total = sum(
            (self.rate_429, self.rate_5xx, self.rate_timeout, self.rate_drop, self.rate_malformed, self.rate_truncated)
        )
        if total > 1 or min(self.rate_429, self.rate_5xx, self.rate_timeout, self.rate_drop) < 0:
            raise ValueError("fault rates must be between 0 and 1 and add up to at most 1")
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        """The fault for the next request, or None for a good answer."""
        roll = self._rng.random()
        for name, rate in (
            ("429", self.rate_429),
            ("5xx", self.rate_5xx),
            ("timeout", self.rate_timeout),
            ("drop", self.rate_drop),
            ("malformed", self.rate_malformed),
            ("truncated", self.rate_truncated),
        ):
            if roll < rate:
                return name
            roll -= rate
        return None

    def pick(self, options: tuple[int, ...]) -> int:
        return self._rng.choice(options)


class RateWindow:
    """Requests and tokens per minute over a sliding 60-second window, as a provider enforces them."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._events: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - 60:
            _, tokens = self._events.popleft()
            self._tokens -= tokens

    def admit(self, tokens: int) -> float | None:
        """Count a request of ``tokens`` (prompt plus max_tokens) if it fits; else the seconds until it would."""
        now = time.monotonic()
        self._expire(now)
        waits = []
        if self.rpm is not None and len(self._events) + 1 > self.rpm:
            waits.append(self._events[0][0] + 60 - now)
        if self.tpm is not None and self._tokens + tokens > self.tpm and self._events:
            freed, t = 0, now
            for when, n in self._events:
                freed += n
                t = when
                if self._tokens - freed + tokens <= self.tpm:
                    break
            waits.append(t + 60 - now)
        if waits:
            return max(max(waits), 0.001)
        self._events.append((now, tokens))
        self._tokens += tokens
        return None

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the window's current state."""
        now = time.monotonic()
        self._expire(now)
        out: dict[str, str] = {}
        reset = _duration(self._events[0][0] + 60 - now) if self._events else "0s"
        if self.rpm is not None:
            out["x-ratelimit-limit-requests"] = str(self.rpm)
            out["x-ratelimit-remaining-requests"] = str(max(self.rpm - len(self._events), 0))
            out["x-ratelimit-reset-requests"] = reset
        if self.tpm is not None:
            out["x-ratelimit-limit-tokens"] = str(self.tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(self.tpm - self._tokens, 0))
            out["x-ratelimit-reset-tokens"] = reset
        return out


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '6m0s', '1s', '20ms'."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 1)}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"


class TokenBucket:
    """Requests and tokens metered as providers document it: a bucket holding a minute's allowance, full at the start,
    refilled continuously at limit/60 per second. The headers report what the bucket holds."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        now = time.monotonic()
        self._level = {"requests": float(rpm or 0), "tokens": float(tpm or 0)}
        self._at = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._at
        self._at = now
        for kind, limit in (("requests", self.rpm), ("tokens", self.tpm)):
            if limit is not None:
                self._level[kind] = min(float(limit), self._level[kind] + elapsed * limit / 60)

    def admit(self, tokens: int) -> float | None:
        now = time.monotonic()
        self._refill(now)
        waits = []
        if self.rpm is not None and self._level["requests"] < 1:
            waits.append((1 - self._level["requests"]) * 60 / self.rpm)
        if self.tpm is not None and self._level["tokens"] < tokens:
            waits.append((tokens - self._level["tokens"]) * 60 / self.tpm)
        if waits:
            return max(max(waits), 0.001)
        self._level["requests"] -= 1
        self._level["tokens"] -= tokens
        return None

    def headers(self) -> dict[str, str]:
        self._refill(time.monotonic())
        out: dict[str, str] = {}
        for kind, limit in (("requests", self.rpm), ("tokens", self.tpm)):
            if limit is None:
                continue
            level = max(self._level[kind], 0.0)
            out[f"x-ratelimit-limit-{kind}"] = str(limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(int(level))
            out[f"x-ratelimit-reset-{kind}"] = _duration((limit - level) * 60 / limit)
        return out


class PerSecondWindow(TokenBucket):
    """A server that reports a minute's bucket in its headers but enforces the limit over one-second windows
    (limit/60 requests each second), as OpenAI says it may: a burst the headers allow still earns 429s."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        super().__init__(rpm, tpm)
        self._second = -1
        self._count = 0
        self._tokens = 0

    def admit(self, tokens: int) -> float | None:
        now = time.monotonic()
        second = int(now)
        if second != self._second:
            self._second, self._count, self._tokens = second, 0, 0
        over = (self.rpm is not None and self._count + 1 > max(self.rpm / 60, 1)) or (
            self.tpm is not None and self._tokens + tokens > max(self.tpm / 60, tokens)
        )
        if over:
            return max(second + 1 - now, 0.001)
        wait = super().admit(tokens)
        if wait is None:
            self._count += 1
            self._tokens += tokens
        return wait


LIMIT_MODES: dict[str, type[RateWindow] | type[TokenBucket]] = {
    "window": RateWindow,
    "bucket": TokenBucket,
    "second": PerSecondWindow,
}


def rate_meter(mode: str, rpm: int | None, tpm: int | None) -> RateWindow | TokenBucket:
    """The enforcement a simulator applies: 'window' (a sliding minute), 'bucket' (a token bucket, full at the start)
    or 'second' (one-second windows behind a bucket's headers)."""
    if mode not in LIMIT_MODES:
        raise ValueError(f"unknown limit mode '{mode}'; known: {', '.join(LIMIT_MODES)}")
    meter: RateWindow | TokenBucket = LIMIT_MODES[mode](rpm, tpm)
    return meter


FAULT_NAMES = ("429", "5xx", "timeout", "drop", "malformed", "truncated")


def parse_faults(
    spec: str | None, seed: int | None = None, retry_after_s: float = 1.0, slow_s: float = 120.0
) -> Faults:
    """``"429=0.05,5xx=0.1,timeout=0.02,malformed=0.01,drop=0.01,truncated=0.01"`` to ``Faults``."""
    rates: dict[str, float] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault '{name}' in '{spec}'; known: {', '.join(FAULT_NAMES)}")
        try:
            rates[name] = float(value)
        except ValueError:
            raise ValueError(f"fault '{name}' needs a rate between 0 and 1, got '{value}'") from None
    return Faults(
        rate_429=rates.get("429", 0.0),
        rate_5xx=rates.get("5xx", 0.0),
        rate_timeout=rates.get("timeout", 0.0),
        rate_drop=rates.get("drop", 0.0),
        rate_malformed=rates.get("malformed", 0.0),
        rate_truncated=rates.get("truncated", 0.0),
        retry_after_s=retry_after_s,
        slow_s=slow_s,
        seed=seed,
    )


def parse_bad_answers(text: str | None) -> tuple[tuple[str, float], ...]:
    """ "gpt-4o-mini=0.3,gpt-4.1-nano=0.5": the share of each model's requests the simulator answers badly."""
    out = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        model, sep, share = part.rpartition("=")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not sep or not model.strip() or not 0 <= value <= 1:
            raise ValueError(f"give MODEL=SHARE with a share from 0 to 1, e.g. gpt-4o-mini=0.3; got '{part}'")
        out.append((model.strip(), value))
    return tuple(out)
