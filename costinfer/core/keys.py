"""The exact request key: everything that can change the answer, and nothing else.

The canonical form is documented in ``docs/request-key.md``; change it only with a new ``KEY_VERSION``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

KEY_VERSION = 1

# Body fields that change the answer. Anything else in a body (row ids, metadata, API keys) never reaches the key.
ANSWER_FIELDS = (
    "model",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "n",
)


def canonical(body: dict[str, Any], endpoint: str) -> bytes:
    """The canonical bytes of a request: sorted keys, no whitespace, UTF-8, absent and null fields dropped."""
    kept = {name: body[name] for name in ANSWER_FIELDS if body.get(name) is not None}
    return orjson.dumps({"v": KEY_VERSION, "endpoint": endpoint, "body": kept}, option=orjson.OPT_SORT_KEYS)


def request_key(body: dict[str, Any], endpoint: str) -> str:
    """SHA-256 of the canonical form, as 64 hex digits."""
    return hashlib.sha256(canonical(body, endpoint)).hexdigest()


def normalized_key(body: dict[str, Any], endpoint: str) -> str:
    """The normalized tier's key: the exact key of the request with every text normalized (NFKC, case, spaces)."""
    from costinfer.core.guards import normalize_text

    messages = [
        {**m, "content": normalize_text(m["content"])} if isinstance(m.get("content"), str) else m
        for m in body["messages"]
    ]
    return request_key({**body, "messages": messages}, endpoint)


def semantic_parts(body: dict[str, Any], endpoint: str) -> tuple[str, str] | None:
    """(group key, text) for the semantic tier: two requests may share an answer only when everything but the text
    of their last user message is identical. None when the request does not end with a plain user message."""
    messages = body["messages"]
    last = messages[-1]
    if last.get("role") != "user" or not isinstance(last.get("content"), str) or len(last) != 2:
        return None
    rest = {**body, "messages": [*messages[:-1], {"role": "user", "content": None}]}
    return request_key(rest, endpoint), last["content"]
