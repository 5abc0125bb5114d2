"""Provider batch files as datasets: OpenAI's batch input lines (``custom_id``, ``method``, ``url``, ``body``) and
Anthropic's (``custom_id``, ``params``) become ordinary rows (the ``custom_id`` their id), so a pipeline built on the
provider's batch console drops into costinfer unchanged. Detected from the first line, or named with ``--format``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from costinfer.reading.formats import open_input

SHAPES = ("openai-batch", "anthropic-batch")


def detect_shape(path: Path) -> str:
    """'openai-batch' or 'anthropic-batch' when the file's first non-blank line is such a request, else 'plain'."""
    try:
        with open_input(path) as fh:
            for raw in fh:
                if raw.strip():
                    first = orjson.loads(raw)
                    break
            else:
                return "plain"
    except (OSError, ValueError, EOFError):
        return "plain"  # the reader reports what is wrong with the file, line by line
    if not isinstance(first, dict) or "custom_id" not in first:
        return "plain"
    if isinstance(first.get("body"), dict) and "url" in first:
        return "openai-batch"
    if isinstance(first.get("params"), dict):
        return "anthropic-batch"
    return "plain"


class BadLine(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason


def as_row(data: dict[str, Any], shape: str, id_field: str = "id") -> dict[str, Any]:
    """One batch line as a costinfer row (OpenAI's chat shape with ``id``); ``BadLine`` names what is wrong."""
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise BadLine("custom_id", "missing: every batch line needs a custom_id")
    if shape == "openai-batch":
        body = data.get("body")
        if not isinstance(body, dict):
            raise BadLine("body", "must be an object (the chat request)")
        if data.get("url") not in ("/v1/chat/completions", "/chat/completions"):
            raise BadLine("url", f"only /v1/chat/completions requests can run here, got {data.get('url')!r}")
        return {**body, id_field: custom_id}
    params = data.get("params")
    if not isinstance(params, dict):
        raise BadLine("params", "must be an object (the Messages request)")
    row: dict[str, Any] = {id_field: custom_id}
    for name in ("model", "max_tokens", "temperature", "top_p", "metadata"):
        if name in params:
            row[name] = params[name]
    if "system" in params:
        system = params["system"]
        row["system"] = system if isinstance(system, str) else "".join(b.get("text", "") for b in system)
    if "stop_sequences" in params:
        row["stop"] = params["stop_sequences"]
    messages = params.get("messages")
    if not isinstance(messages, list):
        raise BadLine("params.messages", "must be a list of messages")
    row["messages"] = [
        {"role": m.get("role"), "content": _text(m.get("content"))} if isinstance(m, dict) else m for m in messages
    ]
    return row


def _text(content: Any) -> Any:
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return content
