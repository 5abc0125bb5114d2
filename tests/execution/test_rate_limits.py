"""The rate limiter's pacing and header adaptation, and the circuit breaker."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from costinfer.execution.breaker import CircuitBreaker
from costinfer.execution.rate_limits import SAFETY, RateLimiter, parse_reset
from costinfer.simulator import RateWindow, SimulatorConfig, running_in_thread
from tests.conftest import Cli, sim_log, write_jsonl


def test_parse_reset_formats() -> None:
    assert parse_reset("6m0s") == 360 and parse_reset("1s") == 1 and parse_reset("20ms") == 0.02
    assert parse_reset("2026-11-27T19:12:00Z", now=parse_reset_epoch("2026-11-27T19:11:30Z")) == 30
    assert parse_reset("soon") is None


def parse_reset_epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_pacing_is_even_and_under_the_limit() -> None:
    limiter = RateLimiter(rpm=1200)  # 20/s: 50 ms apart (at 97%: 51.5 ms)
    interval = 60 / (1200 * SAFETY)
    starts: list[float] = []

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)

    async def one() -> None:
        await limiter.acquire(10)
        starts.append(time.monotonic())

    t0 = time.monotonic()
    anyio.run(go)
    starts.sort()
    # the i-th call never starts before its slot: a burst would break this, a late wake-up cannot
    for i, start in enumerate(starts):
        assert start - t0 >= i * interval * 0.99, i


def test_headers_teach_limits_and_pause_on_an_empty_window() -> None:
    limiter = RateLimiter()
    limiter.observe(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2s",
            "x-ratelimit-limit-tokens": "30000",
        }
    )
    assert limiter.rpm == 500 and limiter.tpm == 30000 and limiter.learned
    paused_until = limiter._paused_until
    assert paused_until > time.monotonic()  # the empty window: everyone waits (one refill step of the bucket)
    limiter.observe({"anthropic-ratelimit-requests-remaining": "3", "anthropic-ratelimit-requests-reset": "1s"})
    assert limiter._paused_until == paused_until  # requests remain: no new pause


def test_the_simulator_window_matches_what_the_client_reads() -> None:
    window = RateWindow(rpm=2, tpm=None)
    assert window.admit(5) is None and window.admit(5) is None
    wait = window.admit(5)
    assert wait is not None and 59 < wait <= 60
    headers = window.headers()
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 59 < (parse_reset(headers["x-ratelimit-reset-requests"]) or 0) <= 60


def test_breaker_opens_after_a_run_of_failures_and_backs_off() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=0.05, max_cooldown_s=0.2)
    for _ in range(3):
        breaker.failure()
    assert breaker.is_open and breaker.cooldown_s == 0.1  # open, and the next cooldown doubled
    t0 = time.monotonic()
    anyio.run(breaker.wait)
    assert time.monotonic() - t0 >= 0.04
    for _ in range(3):
        breaker.failure()
    assert breaker.is_open and breaker.cooldown_s == 0.2  # open again, its cooldown doubled twice, capped
    breaker.success()
    assert breaker.cooldown_s == 0.05 and breaker.failures == 0


def _paced_run(cli: Cli, tmp: Path, mode: str, rpm: int, n: int) -> tuple[float, Counter[object]]:
    data = write_jsonl(tmp / "d.jsonl", [{"prompt": f"q{i}", "max_tokens": 8} for i in range(n)])
    cfg = SimulatorConfig(rpm=rpm, limit_mode=mode, log_path=tmp / "log.jsonl")
    with running_in_thread(cfg) as sim:
        result = cli(
            "run", data, "--base-url", sim.url, "--store", tmp / "s.duckdb", "-o", tmp / "o.jsonl", "--json",
        )  # fmt: skip
        statuses = Counter(e["status"] for e in sim_log(sim))
    assert result.exit_code == 0, result.stderr
    return float(json.loads(result.stdout)["calls_elapsed_s"]), statuses


@pytest.mark.slow
def test_a_token_bucket_server_is_used_to_its_reported_capacity(cli: Cli, tmp_path: Path) -> None:
    """660 calls against a full bucket of 600/min: 600 may go at once, the rest at 10/s, so about 6 s are possible;
    spacing every call evenly would take 68 s. The limit is learned from the headers alone (no --rpm)."""
    elapsed, statuses = _paced_run(cli, tmp_path, "bucket", 600, 660)
    assert statuses[200] == 660 and statuses[429] == 0
    assert elapsed < 30, elapsed  # about 10 s with the slow start; the bound holds on a machine at half speed


@pytest.mark.slow
def test_a_server_enforcing_short_windows_costs_at_most_a_429_or_two(cli: Cli, tmp_path: Path) -> None:
    """The headers report a minute's bucket but the server allows 10 a second: the slow start's first call past the
    window earns a 429, and from then calls are evenly spaced."""
    elapsed, statuses = _paced_run(cli, tmp_path, "second", 600, 120)
    assert statuses[200] == 120 and statuses[429] <= 2, statuses
    assert elapsed < 30, elapsed


def test_a_bucket_limiter_spends_reported_room_then_paces_at_the_refill_rate() -> None:
    limiter = RateLimiter(rpm=60)  # 1/s
    limiter.observe({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0"})

    async def one() -> float:
        started = time.monotonic()
        await limiter.acquire(1)
        limiter.release(1)
        return time.monotonic() - started

    # an empty bucket: the next call waits one refill step (1 s), not the reset of the whole bucket
    assert 0.5 < anyio.run(one) < 1.6
    limiter.observe({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59"})
    assert anyio.run(one) < 0.5  # room reported: no wait
    limiter.rate_limited(0.0)  # a 429 the reported room did not predict: even spacing from now on
    assert limiter.even
