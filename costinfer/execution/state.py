"""What an executor is configured with (``ExecConfig``) and what it tells the runner when it ends (``Outcomes``):
shared by the online executor (``executor.py``) and the batch executor (``batch.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from costinfer.errors import AuthError, BackendError


@dataclass(frozen=True, slots=True)
class Tuning:
    """How patiently and how often the online executor acts: not options a user sets, but what tests shorten."""

    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    commit_interval_s: float = 0.02
    commit_duty: float = 4.0  # wait at least this many times the last commit's duration before the next
    # how often the server's queue is read: while filling its batch, then once it is full. vLLM renders /metrics
    # (about 50 KB) in 0.2-0.3 s of its own CPU on the CPU test server: read more often, it slows the server
    load_poll_s: float = 0.25
    settled_poll_s: float = 2.0
    # a server that refuses every connection stops the run: after this many refusals in a row when nothing has
    # answered yet, or after ``unreachable_s`` of nothing but refusals once something has
    unreachable_after: int = 3
    unreachable_s: float = 10.0
    claim_poll_s: float = 0.2  # a shared store: how often the keys another run holds are asked about again


@dataclass(frozen=True, slots=True)
class ExecConfig:
    concurrency: int = 16
    max_attempts: int = 4
    rpm: float | None = None
    tpm: float | None = None
    fallback_model: str | None = None  # sent instead while the circuit breaker is open
    tagged: bool = False  # rows carry tags: each call records its paying row's
    follow_load: bool = False  # the server reports its queue: calls in flight follow it, ``concurrency`` the ceiling
    known_batch: float | None = None  # the server's running batch as an earlier run saw it: where to start
    tuning: Tuning = Tuning()


class Outcomes:
    """What an executor (online or batch) tells the runner when it ends: why it stopped, what failed for good, and
    what this invocation made durable."""

    def __init__(self) -> None:
        self.stop_reason: str | None = None
        self.auth_error: AuthError | None = None
        self.fatal_error: BackendError | None = None
        self.store_error: BaseException | None = None  # the store could not commit (a full disk): the run stopped
        self.lost = 0  # answers paid for whose commit failed: the rerun pays for them again
        self.unreachable: str | None = None  # why the server cannot be reached at all: the run stopped
        self.calls_done = 0  # durable outcomes of this invocation
        self.retries = 0  # attempts that failed and were tried again
        self.cost_done = Decimal(0)  # durable billed dollars of this invocation
