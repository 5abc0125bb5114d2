"""Anthropic's native Messages API: ``x-api-key`` and ``anthropic-version`` headers, a top-level ``system``, a
required ``max_tokens``, and usage that reports cache reads and cache writes apart from ``input_tokens``.

The provider-neutral request (OpenAI's chat shape) is translated here: system messages become ``system``, ``stop``
becomes ``stop_sequences``, function tools become Anthropic tools. ``seed`` and the penalties have no Anthropic
counterpart and are not sent (the run says so); ``response_format``, tool-result messages and a conversation that
opens with the assistant are bad rows (``refuses``), found before any call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from costinfer.backends.base import Backend, Completion
from costinfer.backends.completion import MALFORMED, malformed
from costinfer.backends.prompt_cache import BREAKPOINT, PromptCache
from costinfer.errors import BackendError

if TYPE_CHECKING:
    from costinfer.backends.batch_api import BatchClient

ANTHROPIC_VERSION = "2023-06-01"
_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


class AnthropicBackend(Backend):
    name: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str | None] = "https://api.anthropic.com"
    api_key_env: ClassVar[str | None] = "ANTHROPIC_API_KEY"
    key_required: ClassVar[bool] = True
    path: ClassVar[str] = "/v1/messages"
    supports_batch: ClassVar[bool] = True
    prompt_cache: ClassVar[PromptCache | None] = BREAKPOINT
    model_names: ClassVar[str | None] = r"(?:anthropic/)?claude-"

    @property
    def base_url(self) -> str:
        url = super().base_url
        return url[: -len("/v1")] if url.endswith("/v1") else url

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        key = self.api_key()
        if key:
            headers["x-api-key"] = key
        return headers

    @classmethod
    def refuses(cls, body: dict[str, Any]) -> tuple[str, str] | None:
        """What the Messages API cannot take: response_format, roles other than system/user/assistant, and a
        conversation whose first message (after the system prompt) is not the user's."""
        if body.get("response_format"):
            return "response_format", "the Messages API has no response_format: ask for the format in the prompt"
        turns = [m for m in body.get("messages", []) if m.get("role") not in ("system", "developer")]
        for message in turns:
            if message.get("role") not in ("user", "assistant"):
                return "messages", f"the anthropic backend does not send '{message.get('role')}' messages"
        if turns and turns[0].get("role") != "user":
            return "messages", "the Messages API needs the first message (after the system prompt) to be the user's"
        return None

    @classmethod
    def drops(cls, body: dict[str, Any]) -> list[str]:
        return [name for name in _NOT_SENT if body.get(name) is not None]

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        return to_messages_request(body)

    def mark_prefix(self, payload: dict[str, Any]) -> dict[str, Any]:
        return mark_shared_prefix(payload)

    def batches(self) -> BatchClient | None:
        from costinfer.backends.anthropic_batch import AnthropicBatches

        return AnthropicBatches(self)

    def parse(self, raw: bytes) -> Completion:
        return parse_message(raw)


_NOT_SENT = ("frequency_penalty", "presence_penalty", "seed", "logprobs", "n")  # no Messages API counterpart


def to_messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's chat shape to Anthropic's Messages shape."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        role = message["role"]
        if role in ("system", "developer"):
            system.append(_text(message["content"]))
        elif role in ("user", "assistant"):
            messages.append({"role": role, "content": _content(message["content"])})
        else:
            raise BackendError(
                f"the anthropic backend does not translate '{role}' messages yet", error_class="bad_request"
            )
    if body.get("response_format"):
        raise BackendError("the anthropic backend does not support response_format", error_class="bad_request")
    out: dict[str, Any] = {"model": body["model"], "max_tokens": body["max_tokens"], "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [_tool(t) for t in body["tools"]]
        choice = body.get("tool_choice")
        if choice == "required":
            out["tool_choice"] = {"type": "any"}
        elif isinstance(choice, dict) and choice.get("function"):
            out["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
        elif choice in ("auto", None):
            out["tool_choice"] = {"type": "auto"}
    return out


_EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}


def mark_shared_prefix(payload: dict[str, Any]) -> dict[str, Any]:
    """A ``cache_control`` breakpoint at the end of what requests sent together share: everything before the last
    message (the system prompt, few-shot turns). A prefix shorter than the model's minimum is not cached, and not
    billed as a write: the marker costs nothing then."""
    messages = payload["messages"]
    if len(messages) > 1:
        before = messages[-2]
        content = before["content"]
        blocks: list[dict[str, Any]] = (
            [{"type": "text", "text": content}] if isinstance(content, str) else [dict(b) for b in content]
        )
        if not blocks:
            return payload
        blocks[-1]["cache_control"] = _EPHEMERAL
        return {**payload, "messages": [*messages[:-2], {**before, "content": blocks}, messages[-1]]}
    system = payload.get("system")
    if not system:
        return payload
    return {**payload, "system": [{"type": "text", "text": system, "cache_control": _EPHEMERAL}]}


def parse_message(raw: bytes) -> Completion:
    try:
        data = orjson.loads(raw)
        usage = data["usage"]
        text_parts = [b["text"] for b in data["content"] if b.get("type") == "text"]
        tool_uses = [b for b in data["content"] if b.get("type") == "tool_use"]
        cache_read = int(usage.get("cache_read_input_tokens") or 0)
        cache_write = int(usage.get("cache_creation_input_tokens") or 0)
        return Completion(
            text=orjson.dumps(tool_uses).decode() if tool_uses and not text_parts else "".join(text_parts),
            # Anthropic's input_tokens leave out the tokens read from or written to the cache: add them back
            input_tokens=int(usage["input_tokens"]) + cache_read + cache_write,
            output_tokens=int(usage["output_tokens"]),
            cached_tokens=cache_read,
            cache_write_tokens=cache_write,
            finish_reason=_STOP.get(str(data.get("stop_reason")), data.get("stop_reason")),
            model=data.get("model"),
        )
    except MALFORMED as exc:
        raise malformed(raw, exc) from exc


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append({"type": "text", "text": part["text"]})
        else:
            raise BackendError("the anthropic backend translates text parts only", error_class="bad_request")
    return parts


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out
