"""The model decision on its own: the requested model, or the fallback while the breaker is open."""

from __future__ import annotations

from costinfer.execution.breaker import CircuitBreaker
from costinfer.execution.fallback import Choice, Router


def test_the_requested_model_answers_until_the_breaker_opens_then_the_fallback_does() -> None:
    router = Router("gpt-4o-mini", CircuitBreaker(threshold=2, cooldown_s=30))
    assert router.candidates("gpt-4o") == ["gpt-4o", "gpt-4o-mini"]
    assert router.choose("gpt-4o") == Choice("gpt-4o", substitute=False)
    router.failed(Choice("gpt-4o", False), server_fault=False)  # the request's own fault: the server is fine
    router.failed(Choice("gpt-4o", False), server_fault=True)
    assert router.choose("gpt-4o").model == "gpt-4o"
    router.failed(Choice("gpt-4o", False), server_fault=True)
    assert router.choose("gpt-4o") == Choice("gpt-4o-mini", substitute=True)
    # what the fallback's own calls do teaches nothing about the requested model's server
    router.failed(Choice("gpt-4o-mini", True), server_fault=True)
    router.answered(Choice("gpt-4o-mini", True))
    assert router.breaker.is_open


def test_without_a_fallback_the_requested_model_is_the_only_candidate() -> None:
    router = Router(None, CircuitBreaker(threshold=1, cooldown_s=30))
    router.failed(Choice("m", False), server_fault=True)
    assert router.candidates("m") == ["m"] and router.choose("m") == Choice("m", substitute=False)


def test_after_the_cooldown_one_request_at_a_time_probes_the_failing_model() -> None:
    import time

    router = Router("gpt-4o-mini", CircuitBreaker(threshold=2, cooldown_s=0.05))
    for _ in range(2):
        router.failed(Choice("gpt-4o", False), server_fault=True)
    assert router.choose("gpt-4o").substitute  # open: everyone to the fallback
    time.sleep(0.06)
    probe = router.choose("gpt-4o")
    assert probe == Choice("gpt-4o", substitute=False)  # the cooldown passed: one probe...
    assert router.choose("gpt-4o").substitute and router.choose("gpt-4o").substitute  # ...while the rest go elsewhere
    router.failed(probe, server_fault=True)  # the probe failed: open again at once, for longer
    assert router.breaker.is_open and router.breaker.cooldown_s == 0.2  # open again, for twice as long
    time.sleep(0.11)
    probe = router.choose("gpt-4o")
    router.failed(probe, server_fault=False)  # a 429 or the request's own fault says nothing: the next may probe
    probe = router.choose("gpt-4o")
    assert not probe.substitute
    router.answered(probe)  # the model is back: closed, everyone returns
    assert [router.choose("gpt-4o").substitute for _ in range(3)] == [False, False, False]
