"""Which model answers a request: the one decision the executor asks for before every attempt.

Today's policy: the requested model, or the fallback model (``--fallback-model``) while the circuit breaker is open
because the provider keeps failing. The routing issue adds policies (cheapest, cascade, budget) as new classes with
the same three questions: which models may a request go to (the budget reserves the dearest), which one now, and
what the outcome of an attempt teaches.
"""

from __future__ import annotations

from dataclasses import dataclass

from costinfer.execution.breaker import CircuitBreaker


@dataclass(frozen=True, slots=True)
class Choice:
    model: str
    substitute: bool  # not the requested model: the answer is cached under its own request and lent to the original


class Router:
    def __init__(self, fallback_model: str | None = None, breaker: CircuitBreaker | None = None) -> None:
        self.fallback_model = fallback_model
        self.breaker = breaker or CircuitBreaker()

    def candidates(self, model: str) -> list[str]:
        """Every model a request for ``model`` may be sent to: the budget reserves the dearest worst case."""
        return [model, self.fallback_model] if self.fallback_model else [model]

    def choose(self, model: str) -> Choice:
        # a request for the fallback model itself is sent as it is: it is nobody's substitute
        if self.fallback_model and model != self.fallback_model and not self.breaker.allow_probe():
            return Choice(self.fallback_model, substitute=True)
        return Choice(model, substitute=False)

    async def ready(self, choice: Choice) -> None:
        """Wait until the chosen model may be called (the requested one rests while the breaker is open)."""
        if not choice.substitute:
            await self.breaker.wait()

    def answered(self, choice: Choice) -> None:
        if not choice.substitute:
            self.breaker.success()

    def failed(self, choice: Choice, *, server_fault: bool) -> None:
        """An attempt failed; ``server_fault``: the kind that opens the breaker (5xx, timeouts, dropped or malformed
        answers; not 429s, which the rate limiter handles, nor the request's own fault)."""
        if choice.substitute:
            return
        if server_fault:
            self.breaker.failure()
        else:
            self.breaker.probe_done()
