"""Azure OpenAI (``--provider azure``): OpenAI's chat-completions protocol behind a resource's deployments, from the
Azure OpenAI REST reference (https://learn.microsoft.com/azure/ai-services/openai/reference).

``--base-url`` is the resource's endpoint (``https://NAME.openai.azure.com``); a request goes to
``/openai/deployments/{deployment}/chat/completions?api-version=...``. The deployment is the model's name unless
costinfer.toml maps it (``[providers.azure] deployments = { "gpt-4o-mini" = "mini-prod" }``); the API version is
``[providers.azure] api_version``, else ``AZURE_OPENAI_API_VERSION``, else ``DEFAULT_API_VERSION`` (the GA version).
The key goes in the ``api-key`` header (``AZURE_OPENAI_API_KEY``), or a Microsoft Entra token as a bearer
(``AZURE_OPENAI_AD_TOKEN``). Prices are the catalog's ``azure/`` entries. Usage, errors and rate-limit headers
(``x-ratelimit-remaining-requests``/``-tokens``, ``retry-after-ms``) are OpenAI's.

Global Batch (``--mode batch``, at the catalog's ``azure/`` batch prices): OpenAI's Batch API under ``/openai/files``
and ``/openai/batches`` with the same ``api-version``, each line's ``url`` ``/chat/completions`` and its ``model`` the
deployment (a Global-Batch deployment of the model: map it in ``deployments``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from costinfer.backends.base import Backend, Completion
from costinfer.backends.batch_api import BatchClient
from costinfer.backends.openai import parse_chat_completion
from costinfer.backends.openai_batch import OpenAIBatches
from costinfer.errors import ConfigError

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIBackend(Backend):
    name: ClassVar[str] = "azure"
    supports_batch: ClassVar[bool] = True
    api_key_env: ClassVar[str | None] = "AZURE_OPENAI_API_KEY"
    key_required: ClassVar[bool] = True
    catalog_prefix: ClassVar[str | None] = "azure"
    model_names: ClassVar[str | None] = r"azure/"

    @property
    def base_url(self) -> str:
        url = self.config.base_url
        if not url:
            raise ConfigError(
                "provider 'azure' needs --base-url: the resource's endpoint, e.g. https://NAME.openai.azure.com"
            )
        return url.rstrip("/")

    def api_key(self) -> str | None:
        if os.environ.get("AZURE_OPENAI_AD_TOKEN") and not self.config.api_key:
            return os.environ["AZURE_OPENAI_AD_TOKEN"]
        return super().api_key()

    def headers(self) -> dict[str, str]:
        key = self.api_key()
        if not key:
            return {}
        if os.environ.get("AZURE_OPENAI_AD_TOKEN") == key:
            return {"authorization": f"Bearer {key}"}
        return {"api-key": key}

    @property
    def api_version(self) -> str:
        given = self.config.settings.get("api_version") or os.environ.get("AZURE_OPENAI_API_VERSION")
        return str(given or DEFAULT_API_VERSION)

    def deployment(self, model: str) -> str:
        model = model.removeprefix("azure/")
        deployments = self.config.settings.get("deployments") or {}
        return str(deployments.get(model) or deployments.get(f"azure/{model}") or model)

    def url_for(self, body: dict[str, Any]) -> str:
        deployment = self.deployment(str(body.get("model") or ""))
        return f"{self.base_url}/openai/deployments/{deployment}/chat/completions?api-version={self.api_version}"

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        """The deployment names the model; the body's ``model`` is left out, as Azure's reference shows it. A
        reasoning model takes ``max_completion_tokens``, as on OpenAI."""
        out = {k: v for k, v in body.items() if k != "model"}
        if body.get("model") in self.reasoning_models and "max_tokens" in out:
            out["max_completion_tokens"] = out.pop("max_tokens")
        return out

    def parse(self, raw: bytes) -> Completion:
        return parse_chat_completion(raw)

    def batch_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**self.translate(body), "model": self.deployment(str(body.get("model") or ""))}

    def batches(self) -> BatchClient | None:
        return AzureBatches(self)


class AzureBatches(OpenAIBatches):
    """OpenAI's Batch API as Azure serves it: under ``/openai``, with the ``api-version`` on every path."""

    endpoint = "/chat/completions"

    def __init__(self, backend: AzureOpenAIBackend) -> None:
        super().__init__(backend)
        self.azure = backend

    def _url(self, path: str) -> str:
        joiner = "&" if "?" in path else "?"
        return f"{self.azure.base_url}/openai{path}{joiner}api-version={self.azure.api_version}"
