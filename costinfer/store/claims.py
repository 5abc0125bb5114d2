"""Claims: on a shared store, a run claims a request's key before calling it, so that concurrent runs (other
processes, other machines) pay for each distinct request once in all.

A claim is a row of ``claims`` with a lease its process renews (``keep_alive``). Another run that needs the same key
waits for its answer instead of calling; when the answer is stored, the claim is marked done in the same transaction,
so a run that claims after it finds the answer rather than the claim. A claim whose lease lapsed (its process died)
is taken over; so is a claim of the same run made by an earlier attempt of it (a run is resumed only when no live
process runs it). A store one process holds at a time (the DuckDB file) needs no claims.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

ENV_LEASE = "COSTINFER_CLAIM_LEASE_S"
DEFAULT_LEASE_S = 30.0


def lease_seconds() -> float:
    text = os.environ.get(ENV_LEASE, "")
    try:
        value = float(text) if text else DEFAULT_LEASE_S
    except ValueError:
        value = DEFAULT_LEASE_S
    return min(max(value, 1.0), 3600.0)


@dataclass
class Claimed:
    """What a claim found: keys this run now holds (call them), keys a live run holds (wait for their answers), and
    keys answered already (their answers are now in this run's store: nothing to call)."""

    mine: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)


class ClaimStore(Protocol):
    """What claims need of a shared store (``SharedStore``)."""

    def claim_keys(self, run_id: str, keys: list[str]) -> Claimed: ...

    def release_claims(self, keys: list[str] | None = None) -> None: ...

    def hold_claims(self, keys: list[str], seconds: float) -> None: ...


class SharedClaims:
    """The claims of one run on a shared store."""

    def __init__(self, store: ClaimStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    def claim(self, keys: list[str]) -> Claimed:
        return self.store.claim_keys(self.run_id, keys)

    def release(self, keys: list[str] | None = None) -> None:
        """Let go of what this run claimed and did not answer (a stop, a failure), or of these keys: others may call
        it now. Keys in a provider batch (``hold``) stay held."""
        self.store.release_claims(keys)

    def hold(self, keys: list[str], seconds: float) -> None:
        """Keep these claims for ``seconds`` whatever becomes of this process: requests in a provider batch, answered
        when the batch ends (collected by this run's next command, on any machine)."""
        self.store.hold_claims(keys, seconds)
