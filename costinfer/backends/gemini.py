"""Google's Gemini API (``--provider gemini``): ``generateContent``, from the API reference
(https://ai.google.dev/api/generate-content).

A request goes to ``{base}/v1beta/models/{model}:generateContent`` with the key in ``x-goog-api-key``
(``GEMINI_API_KEY``). The neutral (OpenAI) chat request becomes ``contents`` (roles ``user`` and ``model``), a
``systemInstruction``, ``generationConfig`` (``maxOutputTokens``, ``temperature``, ``topP``, ``stopSequences``,
``seed``, ``responseMimeType``/``responseJsonSchema``) and ``tools`` (``functionDeclarations``). The answer's
``usageMetadata`` is billed as Google bills it: ``promptTokenCount`` (the cached part, ``cachedContentTokenCount``, at
the cached rate: implicit caching reports it too) and, as output, ``candidatesTokenCount`` plus
``thoughtsTokenCount`` (thinking is billed as output). A rejected key is a 400 ``API_KEY_INVALID`` there, an
authentication error here; a 429 ``RESOURCE_EXHAUSTED`` is a rate limit, its ``RetryInfo.retryDelay`` the wait
(both read by the transport, ``http_error``).

Batch Mode (``--mode batch``, at the catalog's ``gemini/`` batch prices): ``backends/gemini_batch.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from costinfer.backends.base import Backend, Completion
from costinfer.backends.batch_api import BatchClient
from costinfer.backends.completion import MALFORMED, malformed
from costinfer.backends.gemini_batch import GeminiBatches

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
           "PROHIBITED_CONTENT": "content_filter", "BLOCKLIST": "content_filter", "SPII": "content_filter",
           "MALFORMED_FUNCTION_CALL": "stop", "LANGUAGE": "content_filter"}  # fmt: skip
_CONFIG = {"temperature": "temperature", "top_p": "topP", "seed": "seed", "presence_penalty": "presencePenalty",
           "frequency_penalty": "frequencyPenalty", "n": "candidateCount"}  # fmt: skip
_SENT = {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "tools", "tool_choice",
         "response_format", *_CONFIG}  # fmt: skip


class GeminiBackend(Backend):
    name: ClassVar[str] = "gemini"
    supports_batch: ClassVar[bool] = True
    default_base_url: ClassVar[str | None] = "https://generativelanguage.googleapis.com"
    api_key_env: ClassVar[str | None] = "GEMINI_API_KEY"
    key_required: ClassVar[bool] = True
    catalog_prefix: ClassVar[str | None] = "gemini"
    model_names: ClassVar[str | None] = r"(?:gemini/)?gemini-"

    def headers(self) -> dict[str, str]:
        key = self.api_key()
        return {"x-goog-api-key": key} if key else {}

    def url_for(self, body: dict[str, Any]) -> str:
        model = str(body.get("model") or "").removeprefix("gemini/").removeprefix("models/")
        return f"{self.base_url}/v1beta/models/{model}:generateContent"

    @classmethod
    def drops(cls, body: dict[str, Any]) -> list[str]:
        return sorted(k for k in body if k not in _SENT)

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        return gemini_request(body)

    def parse(self, raw: bytes) -> Completion:
        return parse_gemini(raw)

    def batch_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A GenerateContentRequest naming its model (``models/...``), as Batch Mode's inline requests take it."""
        model = str(body.get("model") or "").removeprefix("gemini/").removeprefix("models/")
        return {"model": f"models/{model}", **gemini_request(body)}

    def batches(self) -> BatchClient | None:
        return GeminiBatches(self)


def gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """The neutral chat request in generateContent's shape."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role, text = message.get("role"), _text(message.get("content"))
        if role in ("system", "developer"):
            system.append(text)
            continue
        part: dict[str, Any] = {"text": text}
        if role == "tool":  # a function's result goes back as the user's functionResponse
            part = {"functionResponse": {"name": message.get("name") or "tool", "response": {"content": text}}}
        contents.append({"role": "model" if role == "assistant" else "user", "parts": [part]})
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = int(limit)
    for name, theirs in _CONFIG.items():
        if body.get(name) is not None:
            config[theirs] = body[name]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema
    if config:
        out["generationConfig"] = config
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
    if tools:
        out["tools"] = [{"functionDeclarations": [
            {k: v for k, v in f.items() if k in ("name", "description", "parameters")} for f in tools
        ]}]  # fmt: skip
    return out


def parse_gemini(raw: bytes) -> Completion:
    try:
        data = orjson.loads(raw)
        usage = data.get("usageMetadata") or {}
        thoughts = int(usage.get("thoughtsTokenCount") or 0)
        candidates = data.get("candidates") or []
        text: str | None = None
        finish = "content_filter" if (data.get("promptFeedback") or {}).get("blockReason") else None
        if candidates:
            first = candidates[0]
            parts = (first.get("content") or {}).get("parts") or []
            calls = [p["functionCall"] for p in parts if "functionCall" in p]
            texts = [str(p["text"]) for p in parts if "text" in p and not p.get("thought")]
            text = orjson.dumps(calls).decode() if calls and not texts else "".join(texts)
            finish = _FINISH.get(str(first.get("finishReason") or "STOP"), "stop")
        return Completion(
            text=text,
            input_tokens=int(usage.get("promptTokenCount") or 0) + int(usage.get("toolUsePromptTokenCount") or 0),
            output_tokens=int(usage.get("candidatesTokenCount") or 0) + thoughts,
            cached_tokens=int(usage.get("cachedContentTokenCount") or 0),
            reasoning_tokens=thoughts,
            finish_reason=finish,
            model=data.get("modelVersion"),
        )
    except MALFORMED as exc:
        raise malformed(raw, exc) from exc


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)
