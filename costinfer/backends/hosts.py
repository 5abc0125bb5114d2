"""The OpenAI-compatible hosts by name: ``--provider deepseek|together|groq|fireworks|mistral|openrouter`` (or a
catalog model name such as ``deepseek/deepseek-chat``, which names its host).

Each speaks OpenAI's chat-completions protocol at its own base URL, with its own key variable, and its models carry
the host's prefix in LiteLLM's price map (``together_ai/meta-llama/...``): the prefix prices the call and is taken
off the model name sent. Usage is OpenAI's (``prompt_tokens``, ``completion_tokens``, and cached prompt tokens under
``prompt_tokens_details.cached_tokens``, which Groq, Fireworks and OpenRouter report); DeepSeek reports its context
cache as ``prompt_cache_hit_tokens`` (https://api-docs.deepseek.com/guides/kv_cache), read as cached tokens. Rate
limits come back in OpenAI's ``x-ratelimit-*`` headers (Groq, Together, DeepSeek none: it queues) and ``retry-after``.
None of them is given a batch API here (Together, Groq, Mistral and Fireworks have one of their own; not yet).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from costinfer.backends.base import Backend, Completion
from costinfer.backends.completion import MALFORMED, malformed
from costinfer.backends.openai import parse_chat_completion


class OpenAICompatibleHost(Backend):
    """A named host: OpenAI's protocol, the host's URL, key variable and catalog prefix."""

    key_required: ClassVar[bool] = True

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        """The model's catalog prefix (``deepseek/``) is the price map's, not the host's name for it."""
        model = str(body.get("model") or "")
        prefix = f"{self.catalog_prefix}/"
        if model.startswith(prefix):
            body = {**body, "model": model[len(prefix) :]}
        return body

    def parse(self, raw: bytes) -> Completion:
        done = parse_chat_completion(raw)
        if not done.cached_tokens:
            try:
                hit = (orjson.loads(raw).get("usage") or {}).get("prompt_cache_hit_tokens")
            except MALFORMED as exc:
                raise malformed(raw, exc) from exc
            done.cached_tokens = int(hit or 0)
        return done


class DeepSeekBackend(OpenAICompatibleHost):
    name: ClassVar[str] = "deepseek"
    default_base_url: ClassVar[str | None] = "https://api.deepseek.com"
    api_key_env: ClassVar[str | None] = "DEEPSEEK_API_KEY"
    catalog_prefix: ClassVar[str | None] = "deepseek"
    model_names: ClassVar[str | None] = r"deepseek/"


class TogetherBackend(OpenAICompatibleHost):
    name: ClassVar[str] = "together"
    default_base_url: ClassVar[str | None] = "https://api.together.xyz/v1"
    api_key_env: ClassVar[str | None] = "TOGETHER_API_KEY"
    catalog_prefix: ClassVar[str | None] = "together_ai"
    model_names: ClassVar[str | None] = r"together_ai/"


class GroqBackend(OpenAICompatibleHost):
    name: ClassVar[str] = "groq"
    default_base_url: ClassVar[str | None] = "https://api.groq.com/openai/v1"
    api_key_env: ClassVar[str | None] = "GROQ_API_KEY"
    catalog_prefix: ClassVar[str | None] = "groq"
    model_names: ClassVar[str | None] = r"groq/"


class FireworksBackend(OpenAICompatibleHost):
    name: ClassVar[str] = "fireworks"
    default_base_url: ClassVar[str | None] = "https://api.fireworks.ai/inference/v1"
    api_key_env: ClassVar[str | None] = "FIREWORKS_API_KEY"
    catalog_prefix: ClassVar[str | None] = "fireworks_ai"
    model_names: ClassVar[str | None] = r"fireworks_ai/"


class MistralBackend(OpenAICompatibleHost):
    name: ClassVar[str] = "mistral"
    default_base_url: ClassVar[str | None] = "https://api.mistral.ai/v1"
    api_key_env: ClassVar[str | None] = "MISTRAL_API_KEY"
    catalog_prefix: ClassVar[str | None] = "mistral"
    model_names: ClassVar[str | None] = r"mistral/"


class OpenRouterBackend(OpenAICompatibleHost):
    name: ClassVar[str] = "openrouter"
    default_base_url: ClassVar[str | None] = "https://openrouter.ai/api/v1"
    api_key_env: ClassVar[str | None] = "OPENROUTER_API_KEY"
    catalog_prefix: ClassVar[str | None] = "openrouter"
    model_names: ClassVar[str | None] = r"openrouter/"


HOSTS: tuple[type[OpenAICompatibleHost], ...] = (
    DeepSeekBackend, TogetherBackend, GroqBackend, FireworksBackend, MistralBackend, OpenRouterBackend,
)  # fmt: skip
