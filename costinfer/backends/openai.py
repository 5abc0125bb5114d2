"""OpenAI's chat-completions protocol, for OpenAI and every compatible server (vLLM, TGI's Messages API, the
simulator)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from costinfer.backends.base import Backend, Completion
from costinfer.backends.completion import MALFORMED, malformed
from costinfer.backends.prompt_cache import AUTOMATIC_PREFIX, PromptCache

if TYPE_CHECKING:
    from costinfer.backends.batch_api import BatchClient


class OpenAIBackend(Backend):
    name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    key_required: ClassVar[bool] = True
    supports_batch: ClassVar[bool] = True
    prompt_cache: ClassVar[PromptCache | None] = AUTOMATIC_PREFIX
    model_names: ClassVar[str | None] = r"(?:openai/)?(?:gpt-|chatgpt-|o\d|ft:gpt-|davinci|babbage)"
    ray_servable: ClassVar[bool] = True

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's shape is the neutral one, but a reasoning model refuses ``max_tokens`` and takes
        ``max_completion_tokens``, which bounds its hidden reasoning too."""
        if body.get("model") in self.reasoning_models and "max_tokens" in body:
            body = dict(body)
            body["max_completion_tokens"] = body.pop("max_tokens")
        return body

    def parse(self, raw: bytes) -> Completion:
        return parse_chat_completion(raw)

    def batches(self) -> BatchClient | None:
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
