"""The backend interface and the registry of backends by name.

A backend turns one provider-neutral chat request (OpenAI's chat-completions shape) into one ``Completion``, or raises
``BackendError``. Built-in backends are registered through the ``costinfer.backends`` entry-point group, exactly as a
third party registers its own (see ``pyproject.toml``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

from costinfer.core.errors import ConfigError

ENTRY_POINT_GROUP = "costinfer.backends"


@dataclass(slots=True)
class Completion:
    text: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0  # input tokens read from the provider's prompt cache (part of input_tokens)
    cache_write_tokens: int = 0  # input tokens written to it (part of input_tokens; Anthropic bills them higher)
    reasoning_tokens: int = 0  # hidden reasoning tokens (part of output_tokens, billed as output)
    finish_reason: str | None = None
    model: str | None = None
    http_status: int = 200
    headers: dict[str, str] | None = None  # the rate-limit headers of the answer


@dataclass(frozen=True, slots=True)
class BackendConfig:
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    concurrency: int = 16


class Backend(ABC):
    """One kind of server. Subclasses declare what they are with class attributes."""

    name: ClassVar[str]
    default_base_url: ClassVar[str | None] = None
    api_key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = True

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.reasoning_models: frozenset[str] = frozenset()

    def use_models(self, prices: Mapping[str, Any]) -> None:
        """The run's models, priced (``ModelPrice``): a protocol may shape a request by what its model is (OpenAI's
        reasoning models take ``max_completion_tokens``)."""
        self.reasoning_models = frozenset(name for name, price in prices.items() if getattr(price, "reasoning", False))

    @property
    def endpoint(self) -> str:
        """What identifies the server in the request key: the same model on another server may answer differently."""
        return self.name

    async def __aenter__(self) -> Backend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once before the first ``complete``."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Close connections."""

    @abstractmethod
    async def complete(self, body: dict[str, Any]) -> Completion: ...


def registry() -> dict[str, type[Backend]]:
    """Every backend known by name: the built-in ones and any installed through the entry-point group."""
    found: dict[str, type[Backend]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not break the built-in backends
            raise ConfigError(f"the backend plugin '{ep.name}' ({ep.value}) cannot be loaded: {exc}") from exc
    if "openai" not in found:  # running from a source tree that was never installed
        from costinfer.backends.anthropic import AnthropicBackend
        from costinfer.backends.openai import OpenAIBackend, SimulateBackend, VLLMBackend

        for cls in (OpenAIBackend, VLLMBackend, SimulateBackend, AnthropicBackend):
            found.setdefault(cls.name, cls)
    return found


def backend_class(name: str) -> type[Backend]:
    backends = registry()
    if name not in backends:
        known = ", ".join(sorted(backends))
        raise ConfigError(f"unknown provider '{name}'; known providers: {known}")
    return backends[name]
