"""Where a run's time went, phase by phase: reported in the summary (``timings``) so a slow run can be explained."""

from __future__ import annotations

import time


class Stopwatch:
    """Seconds per named phase; a phase runs from the previous mark to this one."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._last = self.started
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> float:
        now = time.monotonic()
        spent = now - self._last
        self.phases[phase] = self.phases.get(phase, 0.0) + spent
        self._last = now
        return spent

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rounded(self) -> dict[str, float]:
        return {name: round(seconds, 3) for name, seconds in self.phases.items()}
