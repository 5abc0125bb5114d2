"""The protocols the simulator speaks besides OpenAI's chat completions and Anthropic's Messages: Google's Gemini
``generateContent`` and Azure OpenAI's deployment paths, each with its documented error bodies and checks.

- Gemini (https://ai.google.dev/api/generate-content): ``POST /v1beta/models/{model}:generateContent``, the key in
  ``x-goog-api-key``; ``contents``/``systemInstruction``/``generationConfig`` in, ``candidates`` and
  ``usageMetadata`` (``promptTokenCount``, ``candidatesTokenCount``, ``thoughtsTokenCount`` for the thinking models,
  ``cachedContentTokenCount``) out; errors as ``{"error": {"code", "message", "status", "details"}}``: a bad key is a
  400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``, a rate limit a 429 ``RESOURCE_EXHAUSTED`` with a
  ``RetryInfo`` delay.
- Azure OpenAI (https://learn.microsoft.com/azure/ai-services/openai/reference):
  ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` with ``api-key`` (or a bearer token);
  OpenAI's request and answer; a missing ``api-version`` is a 404 ``Resource not found``, a bad key a 401 with code
  ``401``.
"""

from __future__ import annotations

import re
from typing import Any

from costinfer.simulator.answers import text_of

GEMINI_THINKING = re.compile(r"^gemini-2\.5-(?:flash|pro)(?!-lite)")  # 2.5 Flash and Pro think by default
_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}


def error_body(protocol: str, status: int, kind: str, message: str, retry_s: float | None = None) -> dict[str, Any]:
    """An error in the protocol's shape: OpenAI's (Azure's too), Anthropic's or Google's."""
    if protocol == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    if protocol == "gemini":
        details: list[dict[str, Any]] = []
        if kind == "API_KEY_INVALID":
            details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com"})  # fmt: skip
        if retry_s is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_s:g}s"})
        status_name = _GEMINI_STATUS.get(status, "UNKNOWN")
        return {"error": {"code": status, "message": message, "status": status_name, "details": details}}
    code = str(status) if protocol == "azure" else None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def gemini_as_chat(body: Any, model: str) -> dict[str, Any]:
    """A generateContent request checked as the API checks it, in OpenAI's chat shape (for counting and answers)."""
    if not isinstance(body, dict) or not isinstance(body.get("contents"), list) or not body["contents"]:
        raise ValueError("* GenerateContentRequest.contents: contents is not specified")
    chat: list[dict[str, Any]] = []
    system = body.get("systemInstruction")
    if system:
        chat.append({"role": "system", "content": text_of(system.get("parts") or [])})
    for content in body["contents"]:
        role = content.get("role", "user")
        if role not in ("user", "model"):
            raise ValueError(f"Please use a valid role: user, model (got '{role}')")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise ValueError("* GenerateContentRequest.contents.parts: contents.parts must not be empty")
        chat.append({"role": "assistant" if role == "model" else "user", "content": text_of(parts)})
    config = body.get("generationConfig") or {}
    out: dict[str, Any] = {"model": model, "messages": chat}
    if config.get("maxOutputTokens"):
        out["max_tokens"] = int(config["maxOutputTokens"])
    return out


def gemini_answer(
    digest: str,
    model: str,
    text: str,
    finish: str,
    prompt_tokens: int,
    completion_tokens: int,
    thinking: int,
    cached: int,
) -> dict[str, Any]:
    """``completion_tokens`` counts the thinking too; Gemini reports the answer's and the thoughts' apart."""
    usage = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": completion_tokens - thinking,
        "totalTokenCount": prompt_tokens + completion_tokens,
    }
    if thinking:
        usage["thoughtsTokenCount"] = thinking
    if cached:
        usage["cachedContentTokenCount"] = cached
    return {
        "candidates": [
            {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": _FINISH[finish], "index": 0}
        ],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": f"sim-{digest[:24]}",
    }
