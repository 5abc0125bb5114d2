"""The simulator as a provider (``--provider simulate``): OpenAI's protocol, served in-process by costinfer's own
simulator when no --base-url is given. It lives with the simulator, not among the backends, so that no real
protocol depends on the test double; it registers through the same entry-point group as any plugin."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

from costinfer.backends.openai import OpenAIBackend
from costinfer.backends.prompt_cache import AUTOMATIC_PREFIX, PromptCache
from costinfer.errors import ConfigError
from costinfer.simulator.config import Answers, SimulatorConfig
from costinfer.simulator.faults import LIMIT_MODES, parse_bad_answers, parse_faults
from costinfer.simulator.server import running_in_thread


class SimulateBackend(OpenAIBackend):
    """costinfer's own simulator: deterministic answers, realistic usage, no key, no cost beyond the rehearsal. With
    no --base-url, the run starts one in-process (``local_server``)."""

    name: ClassVar[str] = "simulate"
    default_base_url: ClassVar[str | None] = None
    api_key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = False
    supports_batch: ClassVar[bool] = True  # the simulator implements OpenAI's Batch API
    prompt_cache: ClassVar[PromptCache | None] = AUTOMATIC_PREFIX  # ... and reports cached prompt tokens as OpenAI does
    rehearsal: ClassVar[bool] = True
    model_names: ClassVar[str | None] = None  # only when asked for by name: a run never rehearses by default
    ray_servable: ClassVar[bool] = False

    @property
    def endpoint(self) -> str:
        return "simulate"

    @classmethod
    def local_server(cls, settings: Mapping[str, Any]) -> AbstractContextManager[str] | None:
        """The in-process simulator, from the run's ``simulator_*`` settings (latency, faults, limits, seed)."""
        try:
            faults = parse_faults(
                settings.get("faults"), settings.get("seed"), slow_s=float(settings.get("timeout_s", 60.0)) * 2
            )
        except ValueError as exc:
            raise ConfigError(f"--sim-faults: {exc}") from None
        mode = str(settings.get("limit_mode") or "window")
        if mode not in LIMIT_MODES:
            raise ConfigError(f"--sim-limit-mode must be one of {', '.join(LIMIT_MODES)}")
        try:
            bad = parse_bad_answers(settings.get("bad_answers"))
        except ValueError as exc:
            raise ConfigError(f"--sim-bad-answers: {exc}") from None
        config = SimulatorConfig(
            latency_ms=float(settings.get("latency_ms") or 0.0),
            faults=faults,
            rpm=settings.get("rpm"),
            tpm=settings.get("tpm"),
            limit_mode=mode,
            answers=Answers(bad_answers=bad),
            seed=settings.get("seed"),
        )
        return _serving(config)


@contextmanager
def _serving(config: SimulatorConfig) -> Iterator[str]:
    with running_in_thread(config) as sim:
        yield sim.url
