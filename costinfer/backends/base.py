"""The provider interface, and the registry of providers by name.

A provider is one class per protocol: it turns a provider-neutral chat request (OpenAI's chat-completions shape) into
its own request, reads its own answer into a ``Completion``, and declares what it is with class attributes. HTTP is
the transport's (``transport.py``). Every provider, the built-in ones included, is found through the
``costinfer.backends`` entry-point group (see ``pyproject.toml``); a third party registers its own the same way.
"""

from __future__ import annotations

import functools
import os
from abc import ABC
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from costinfer.backends.completion import MALFORMED, Completion, ServerLoad, malformed
from costinfer.backends.prompt_cache import PromptCache
from costinfer.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from costinfer.backends.batch_api import BatchClient

__all__ = ["Backend", "BackendConfig", "Completion", "ServerLoad", "backend_class", "registry"]

ENTRY_POINT_GROUP = "costinfer.backends"


@dataclass(frozen=True, slots=True)
class BackendConfig:
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    concurrency: int = 16
    identity: str | None = None  # names the server in the request key instead of base_url (servers started per run)
    settings: Mapping[str, Any] = field(default_factory=dict)  # the provider's [providers.NAME] in costinfer.toml


class Backend(ABC):
    """One provider protocol. Subclasses declare what they are with class attributes and implement ``parse`` (and
    ``translate`` where their request is not OpenAI's chat shape)."""

    name: ClassVar[str]
    default_base_url: ClassVar[str | None] = None
    path: ClassVar[str] = "/chat/completions"  # posted to, under the base URL
    api_key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = False
    self_hosted: ClassVar[bool] = False  # the user's own hardware: a model missing from the catalog costs nothing
    supports_batch: ClassVar[bool] = False  # a provider batch API at batch prices
    prompt_cache: ClassVar[PromptCache | None] = None  # how the provider bills repeated prompt prefixes, if it does
    exact_counts: ClassVar[bool] = False  # the server counts prompt tokens itself (count_tokens, served_models)
    reports_load: ClassVar[bool] = False  # the server reports its queue (load): concurrency follows it
    rehearsal: ClassVar[bool] = False  # made-up answers, nothing billed: every output of the run says so
    # the model families this provider serves, by name (a regular expression matched at the start): a run that names
    # no --provider calls the provider of its models
    model_names: ClassVar[str | None] = None
    ray_servable: ClassVar[bool] = False  # --ray-serve can start servers that speak this protocol
    catalog_prefix: ClassVar[str | None] = None  # its models' prefix in LiteLLM's names (together_ai/..., azure/...)

    def __init__(self, config: BackendConfig) -> None:
        from costinfer.backends.transport import HttpTransport  # aiohttp: loaded by what calls, not by what reads

        self.config = config
        self.transport = HttpTransport(config.timeout_s, config.concurrency)
        self.reasoning_models: frozenset[str] = frozenset()

    # --- what the provider is -----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        url = self.config.base_url or self.default_base_url
        if not url:
            raise ConfigError(f"provider '{self.name}' needs --base-url")
        return url.rstrip("/")

    @property
    def endpoint(self) -> str:
        """What identifies the server in the request key: the same model on another server may answer differently."""
        if self.config.identity:
            return f"{self.name}:{self.config.identity}"
        if self.config.base_url and self.base_url != (self.default_base_url or "").rstrip("/"):
            return f"{self.name}:{self.base_url}"
        return self.name

    def api_key(self) -> str | None:
        """The key from the config or the provider's variable; a required one that is missing fails, naming it."""
        key = self.config.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if not key and self.key_required:
            raise ConfigError(
                f"provider '{self.name}' needs an API key: set the environment variable {self.api_key_env}, or pass "
                f"--provider simulate for a rehearsal that pays nothing; nothing was read or sent"
            )
        return key or None

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}  # the transport sets each request's content type
        key = self.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def use_models(self, prices: Mapping[str, Any]) -> None:
        """The run's models, priced (``ModelPrice``): a protocol may shape a request by what its model is (OpenAI's
        reasoning models take ``max_completion_tokens``)."""
        self.reasoning_models = frozenset(name for name, price in prices.items() if getattr(price, "reasoning", False))

    def server_report(self) -> list[str]:
        """Lines about the servers a run used (one per replica when there are several)."""
        return []

    def batches(self) -> BatchClient | None:
        """This provider's batch API client, or None where it has none (``supports_batch``)."""
        return None

    @classmethod
    def local_server(cls, settings: Mapping[str, Any]) -> AbstractContextManager[str] | None:
        """A server this provider starts itself when no --base-url is given (the simulator does): a context manager
        yielding its base URL, or None."""
        return None

    # --- calling ------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Backend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.transport.start(self.headers())

    async def close(self) -> None:
        await self.transport.close()

    async def complete(self, body: dict[str, Any], *, cache_prefix: bool = False) -> Completion:
        """One call. ``cache_prefix``: other requests share everything but this one's last message, so a protocol
        whose prompt cache needs a marker (Anthropic's ``cache_control``) sets one at the end of that prefix."""
        if not self.transport.started:
            await self.start()
        payload = self.translate(body)
        if cache_prefix:
            payload = self.mark_prefix(payload)
        raw, headers = await self.post(self.url_for(body), payload)
        try:
            done = self.parse(raw)
        except BackendError as exc:  # a body that is not an answer may echo the key, like an error's
            raise self.transport.redacted(exc) from exc
        done.headers = headers
        return done

    def url_for(self, body: dict[str, Any]) -> str:
        """Where a request is posted: one path under the base URL, or a path naming the model (Gemini, Azure)."""
        return f"{self.base_url}{self.path}"

    async def post(self, url: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
        """One request on the wire (a protocol that signs each request, such as Bedrock's, adds its headers)."""
        return await self.transport.post(url, payload)

    # --- what a server tells about itself (``exact_counts``, ``reports_load``) --------------------------------------

    def servers(self) -> int:
        """How many servers answer this backend's calls (replicas count each)."""
        return 1

    async def served_models(self) -> dict[str, int | None]:
        """The models the server lists at ``/models``, each with its context length when it says (vLLM's
        ``max_model_len``)."""
        if not self.transport.started:
            await self.start()
        data = await self.transport.json("GET", f"{self.base_url}/models")
        try:
            return {str(m["id"]): m.get("max_model_len") for m in data["data"]}
        except MALFORMED as exc:
            raise malformed(str(data).encode(), exc) from exc

    async def tokenize(self, body: dict[str, Any]) -> int:
        """The prompt tokens the server counts for a request (``exact_counts``)."""
        raise BackendError(f"provider '{self.name}' does not count prompts", error_class="bad_request")

    async def count_tokens(self, bodies: list[dict[str, Any]]) -> list[int]:
        raise BackendError(f"provider '{self.name}' does not count prompts", error_class="bad_request")

    async def load(self) -> ServerLoad:
        """The server's queue right now (``reports_load``)."""
        raise BackendError(f"provider '{self.name}' reports no load", error_class="bad_request")

    @classmethod
    def refuses(cls, body: dict[str, Any]) -> tuple[str, str] | None:
        """(field, reason) when this protocol cannot send the request at all: the row is bad before any call."""
        return None

    @classmethod
    def drops(cls, body: dict[str, Any]) -> list[str]:
        """The request's fields this protocol has no counterpart for and does not send (the run says so once)."""
        return []

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        """The provider-neutral request in this protocol's shape (OpenAI's chat shape is the neutral one)."""
        return body

    def batch_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request as this provider's batch API takes it: the translated request (Gemini and Azure name the
        model in the line where the online path names it in the URL)."""
        return self.translate(body)

    def mark_prefix(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The translated request with a prompt-cache marker after its shared prefix; most protocols cache without
        one (OpenAI, vLLM)."""
        return payload

    def parse(self, raw: bytes) -> Completion:
        """The answer's body as a ``Completion``; ``transport.malformed`` for a body that is not the protocol's.
        Every protocol implements it (a test double may override ``complete`` instead)."""
        raise NotImplementedError(f"provider '{self.name}' does not parse answers")


def registry() -> dict[str, type[Backend]]:
    """Every provider known by name, each found through the entry-point group (read once per process: reading the
    installed distributions' entry points takes some 15 ms, and every price lookup asks for a provider's prefix)."""
    return dict(_registry())


@functools.cache
def _registry() -> dict[str, type[Backend]]:
    return {ep.name: _provider(ep) for ep in entry_points(group=ENTRY_POINT_GROUP)}


@functools.cache
def provider_class(name: str) -> type[Backend] | None:
    """One provider's class, or None for a name no installed provider has. Only that provider's module is loaded
    (``registry`` loads every provider's, aiohttp and the simulator's server with them): what reading a dataset asks
    of a provider (what its protocol refuses, its prefix in the price catalog) needs no other."""
    found = [_provider(ep) for ep in entry_points(group=ENTRY_POINT_GROUP, name=name)]
    return found[-1] if found else None  # as in ``registry``: of two plugins of one name, the last


def _provider(ep: EntryPoint) -> type[Backend]:
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plugin must not pass for a working one
        raise ConfigError(f"the provider plugin '{ep.name}' ({ep.value}) cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"the provider plugin '{ep.name}' ({ep.value}) is not a costinfer Backend class")
    return cls


def backend_class(name: str) -> type[Backend]:
    backends = registry()
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none (is costinfer installed? pip install -e .)"
        raise ConfigError(f"unknown provider '{name}'; known providers: {known}")
    return backends[name]
