"""Several servers of the same model as one backend (``--base-url`` given more than once): each call goes to the
replica with the fewest calls in flight; a replica that refuses connections, drops them or does not answer within the
timeout rests (5 s, doubling to a minute while it keeps failing) and its calls go to the others at once; the run
stops only when none answers.

The request key is the first replica's (the model and the first URL), so adding or losing a replica does not change
what is cached. Each replica's calls, output tokens and failures are counted for the run's summary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from costinfer.backends.base import Backend, BackendConfig, Completion, ServerLoad
from costinfer.errors import BackendError

REST_S = 5.0
MAX_REST_S = 60.0
# a replica that refuses, drops or holds a call past --timeout rests, and the call goes to another at once (a retry
# that went back to a server that never answers failed a row whose four attempts all went there)
_GONE = ("cannot_connect", "connection_error", "timeout")


@dataclass
class Replica:
    backend: Backend
    in_flight: int = 0
    calls: int = 0
    output_tokens: int = 0
    failures: int = 0
    rest_s: float = REST_S
    down_until: float = 0.0
    first_call: float | None = None
    last_call: float | None = None

    @property
    def url(self) -> str:
        return self.backend.base_url

    def throughput(self) -> float:
        if self.first_call is None or self.last_call is None or self.last_call <= self.first_call:
            return 0.0
        return self.calls / (self.last_call - self.first_call)


class Replicas(Backend):
    """Several servers of one provider as one backend: a subclass of the provider's own class (``connect`` makes
    it), so its name, capabilities, request shape and batch client are the provider's, and every call that goes to
    a server (answers, load, prompt counts, served models) goes to the least busy replica that is up."""

    def __init__(self, members: list[Backend]) -> None:
        assert len(members) >= 2
        super().__init__(members[0].config)  # the first replica names the run's endpoint and request key
        self.replicas = [Replica(b) for b in members]
        self._turn = 0

    def servers(self) -> int:
        return len(self.replicas)

    def use_models(self, prices: Mapping[str, Any]) -> None:
        super().use_models(prices)
        for r in self.replicas:
            r.backend.use_models(prices)

    async def start(self) -> None:
        for r in self.replicas:
            await r.backend.start()

    async def close(self) -> None:
        for r in self.replicas:
            await r.backend.close()
        await super().close()

    def _up(self) -> Backend:
        """A replica that is not resting (the least busy), for what any of them can answer."""
        i = self._pick(set())
        return self.replicas[0 if i is None else i].backend

    async def served_models(self) -> dict[str, int | None]:
        return await self._up().served_models()

    async def tokenize(self, body: dict[str, Any]) -> int:
        return await self._up().tokenize(body)

    async def count_tokens(self, bodies: list[dict[str, Any]]) -> list[int]:
        return await self._up().count_tokens(bodies)

    def _pick(self, tried: set[int]) -> int | None:
        now = time.monotonic()
        up = [i for i, r in enumerate(self.replicas) if i not in tried and r.down_until <= now]
        if not up:
            return None
        self._turn += 1
        return min(up, key=lambda i: (self.replicas[i].in_flight, (i - self._turn) % len(self.replicas)))

    async def complete(self, body: dict[str, Any], *, cache_prefix: bool = False) -> Completion:
        tried: set[int] = set()
        last: BackendError | None = None
        while (i := self._pick(tried)) is not None:
            replica = self.replicas[i]
            replica.in_flight += 1
            try:
                if cache_prefix:
                    done = await replica.backend.complete(body, cache_prefix=True)
                else:
                    done = await replica.backend.complete(body)
            except BackendError as exc:
                if exc.error_class not in _GONE:
                    raise
                replica.failures += 1
                replica.down_until = time.monotonic() + replica.rest_s
                replica.rest_s = min(replica.rest_s * 2, MAX_REST_S)
                tried.add(i)
                last = exc
                continue
            finally:
                replica.in_flight -= 1
            now = time.monotonic()
            replica.calls += 1
            replica.output_tokens += done.output_tokens
            replica.rest_s = REST_S
            replica.first_call = replica.first_call or now
            replica.last_call = now
            return done
        raise last or BackendError("every replica is resting after failures", error_class="cannot_connect",
                                   retryable=True)  # fmt: skip

    async def load(self) -> ServerLoad:
        """The replicas' queues added up (those that answer)."""
        running = waiting = 0.0
        kv: list[float] = []
        answered = 0
        for r in self.replicas:
            if r.down_until > time.monotonic():
                continue
            try:
                load = await r.backend.load()
            except BackendError:
                continue
            answered += 1
            running += load.running
            waiting += load.waiting
            if load.kv_cache is not None:
                kv.append(load.kv_cache)
        if not answered:
            raise BackendError("no replica reports its load", error_class="cannot_connect")
        return ServerLoad(running, waiting, max(kv) if kv else None)

    def server_report(self) -> list[str]:
        """One line per replica: its calls, output tokens, throughput and failures."""
        return [
            f"replica {r.url}: {r.calls} calls, {r.output_tokens} output tokens, {r.throughput():.1f} calls/s"
            + (f", {r.failures} connection failures" if r.failures else "")
            for r in self.replicas
        ]


def connect(cls: type[Backend], configs: list[BackendConfig]) -> Backend:
    """One backend of ``cls``, or, for several servers of the same model, their replicas behind one backend: an
    instance of ``cls`` too, whose calls go to the replicas."""
    if len(configs) == 1:
        return cls(configs[0])
    replicated = type(f"Replicated{cls.__name__}", (Replicas, cls), {})
    return cast(Backend, replicated([cls(c) for c in configs]))
