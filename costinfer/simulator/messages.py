"""Anthropic's Messages requests as the simulator reads them: checked as the API checks them, in OpenAI's chat shape
(for counting and answers), and their prompt-cache prefix up to the last breakpoint."""

from __future__ import annotations

from typing import Any

from costinfer.simulator.answers import text_of


def messages_as_chat(body: Any) -> dict[str, Any]:
    """An Anthropic Messages request checked as the API checks it, in OpenAI's chat shape (for counting and answers)."""
    if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
        raise ValueError("a messages request needs 'model' and 'messages'")
    if not isinstance(body.get("max_tokens"), int):
        raise ValueError("max_tokens: Field required")
    if any(m.get("role") not in ("user", "assistant") for m in body["messages"]):
        raise ValueError("messages: roles must be 'user' or 'assistant' (system is a top-level field)")
    system = body.get("system")
    chat = [{"role": "system", "content": text_of(system)}] if system else []
    chat += [{"role": m["role"], "content": text_of(m["content"])} for m in body["messages"]]
    return {"model": body["model"], "messages": chat, "max_tokens": body["max_tokens"]}


def anthropic_prefix(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The chat-shaped prefix of a Messages request up to its last ``cache_control`` breakpoint, or None."""
    parts: list[tuple[str, int, dict[str, Any]]] = []  # (role, message index, block); the system is index -1
    system = body.get("system")
    if isinstance(system, list):
        parts += [("system", -1, b) for b in system if isinstance(b, dict)]
    for i, m in enumerate(body["messages"]):
        content = m.get("content")
        if isinstance(content, list):
            parts += [(m["role"], i, b) for b in content if isinstance(b, dict)]
    marked = [n for n, (_, _, b) in enumerate(parts) if b.get("cache_control")]
    if not marked:
        return None
    upto = parts[: marked[-1] + 1]
    last_index = upto[-1][1]
    chat: list[dict[str, Any]] = []
    if isinstance(system, str) and last_index >= 0:
        chat.append({"role": "system", "content": system})
    elif isinstance(system, list):
        chat.append({"role": "system", "content": "".join(b.get("text", "") for r, _, b in upto if r == "system")})
    for i, m in enumerate(body["messages"][: last_index + 1] if last_index >= 0 else []):
        if i < last_index:
            chat.append({"role": m["role"], "content": text_of(m["content"])})
        else:
            text = "".join(b.get("text", "") for _, j, b in upto if j == i)
            chat.append({"role": m["role"], "content": text})
    return chat
