"""OpenAI's chat-completions protocol, for OpenAI and every compatible server (vLLM, TGI's Messages API, the
simulator)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

import orjson

from costinfer.backends.base import Backend, Completion
from costinfer.backends.transport import MALFORMED, malformed
from costinfer.errors import ConfigError


class OpenAIBackend(Backend):
    name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    key_required: ClassVar[bool] = True
    supports_batch: ClassVar[bool] = True
    prompt_cache: ClassVar[bool] = True

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's shape is the neutral one, but a reasoning model refuses ``max_tokens`` and takes
        ``max_completion_tokens``, which bounds its hidden reasoning too."""
        if body.get("model") in self.reasoning_models and "max_tokens" in body:
            body = dict(body)
            body["max_completion_tokens"] = body.pop("max_tokens")
        return body

    def parse(self, raw: bytes) -> Completion:
        return parse_chat_completion(raw)

    def batches(self) -> Any | None:
        if not self.supports_batch:
            return None
        from costinfer.backends.openai_batch import OpenAIBatches

        return OpenAIBatches(self)


def parse_chat_completion(raw: bytes) -> Completion:
    try:
        data = orjson.loads(raw)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        output_details = usage.get("completion_tokens_details") or {}
        message = choice.get("message") or {}
        text = message.get("content")
        if text is None and message.get("tool_calls"):
            text = orjson.dumps(message["tool_calls"]).decode()
        return Completion(
            text=text,
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            cached_tokens=int(details.get("cached_tokens") or 0),
            reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            model=data.get("model"),
        )
    except MALFORMED as exc:
        raise malformed(raw, exc) from exc


class SimulateBackend(OpenAIBackend):
    """costinfer's own simulator: deterministic answers, realistic usage, no key, no cost beyond the rehearsal. With
    no --base-url, the run starts one in-process (``local_server``)."""

    name: ClassVar[str] = "simulate"
    default_base_url: ClassVar[str | None] = None
    api_key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = False
    supports_batch: ClassVar[bool] = True  # the simulator implements OpenAI's Batch API
    prompt_cache: ClassVar[bool] = True  # ... and reports cached prompt tokens as OpenAI does
    rehearsal: ClassVar[bool] = True

    @property
    def endpoint(self) -> str:
        return "simulate"

    @classmethod
    def local_server(cls, settings: Mapping[str, Any]) -> AbstractContextManager[str] | None:
        """The in-process simulator, from the run's ``simulator_*`` settings (latency, faults, limits, seed)."""
        from costinfer.simulator import SimulatorConfig
        from costinfer.simulator.faults import LIMIT_MODES, parse_bad_answers, parse_faults

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
            bad_answers=bad,
            seed=settings.get("seed"),
        )
        return _serving(config)


@contextmanager
def _serving(config: Any) -> Iterator[str]:
    from costinfer.simulator import running_in_thread

    with running_in_thread(config) as sim:
        yield sim.url
