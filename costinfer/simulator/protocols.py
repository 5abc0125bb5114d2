"""The protocols the simulator speaks besides OpenAI's chat completions and Anthropic's Messages: Google's Gemini
``generateContent`` and Azure OpenAI's deployment paths, each with its documented error bodies and checks.

- Gemini (https://ai.google.dev/api/generate-content): ``POST /v1beta/models/{model}:generateContent``, the key in
  ``x-goog-api-key``; ``contents``/``systemInstruction``/``generationConfig`` in, ``candidates`` and
  ``usageMetadata`` (``promptTokenCount``, ``candidatesTokenCount``, ``thoughtsTokenCount`` for the thinking models,
  ``cachedContentTokenCount``) out; errors as ``{"error": {"code", "message", "status", "details"}}``: a bad key is a
  400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``, a rate limit a 429 ``RESOURCE_EXHAUSTED`` with a
  ``RetryInfo`` delay.
- AWS Bedrock's Converse (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html):
  ``POST /model/{modelId}/converse`` signed with Signature Version 4 (checked against the one key pair the simulator
  was given, ``--aws-key``, or for a well-formed signature of any key); ``messages`` of content blocks in,
  ``output.message``, ``stopReason`` and ``usage`` (``inputTokens``, ``outputTokens``, ``totalTokens``) out; errors as
  ``{"message": ...}`` with their type in ``x-amzn-ErrorType`` (a 429 ``ThrottlingException``, a 403
  ``UnrecognizedClientException`` or ``InvalidSignatureException``).
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
    if protocol == "bedrock":
        return {"message": message}
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


_BEDROCK_TYPES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
                  429: "ThrottlingException", 500: "InternalServerException", 502: "InternalServerException",
                  503: "ServiceUnavailableException"}  # fmt: skip


def bedrock_error_type(status: int, kind: str) -> str:
    """Bedrock's error type, as its ``x-amzn-ErrorType`` header names it."""
    return kind if kind.endswith("Exception") else _BEDROCK_TYPES.get(status, "InternalServerException")


def converse_as_chat(body: Any, model: str) -> dict[str, Any]:
    """A Converse request checked as the API checks it, in OpenAI's chat shape (for counting and answers)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise ValueError("1 validation error detected: Value at 'messages' failed to satisfy constraint")
    chat: list[dict[str, Any]] = []
    if body.get("system"):
        chat.append({"role": "system", "content": text_of(body["system"])})
    for message in body["messages"]:
        if message.get("role") not in ("user", "assistant"):
            raise ValueError("A conversation must alternate between user and assistant roles")
        chat.append({"role": message["role"], "content": text_of(message.get("content") or [])})
    out: dict[str, Any] = {"model": model, "messages": chat}
    limit = (body.get("inferenceConfig") or {}).get("maxTokens")
    if limit:
        out["max_tokens"] = int(limit)
    return out


def converse_answer(text: str, finish: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "max_tokens" if finish == "length" else "end_turn",
        "usage": {"inputTokens": prompt_tokens, "outputTokens": completion_tokens,
                  "totalTokens": prompt_tokens + completion_tokens},
        "metrics": {"latencyMs": 1},
    }  # fmt: skip


def sigv4_problem(method: str, url: str, headers: Any, body: bytes, keys: tuple[str, str] | None) -> str | None:
    """Why a request's Signature Version 4 does not hold, or None when it does: the header's form, the key's id,
    the service (bedrock), and, with the key pair known, the signature itself, recomputed over the same canonical
    request (botocore's implementation of AWS's algorithm)."""
    auth = headers.get("authorization") or ""
    match = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                     r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$", auth)  # fmt: skip
    if not match or not headers.get("x-amz-date"):
        return "UnrecognizedClientException: missing or malformed Signature Version 4 authorization"
    key_id, _, region, service, signed, signature = match.groups()
    if service != "bedrock":
        return f"InvalidSignatureException: Credential should be scoped to correct service: 'bedrock' (got {service})"
    if keys is None:
        return None
    if key_id != keys[0]:
        return "UnrecognizedClientException: The security token included in the request is invalid."
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    kept = {h: headers[h] for h in signed.split(";") if h != "host" and h in headers}
    request = AWSRequest(method=method, url=url, data=body, headers=kept)
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(keys[0], keys[1]), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if expected != signature:
        return ("InvalidSignatureException: The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method.")  # fmt: skip
    return None
