"""Turn raw dataset rows into chat requests, or into rejects that name the field and the reason.

A row carries ``prompt`` (text) or ``messages`` (OpenAI chat format), and optionally ``id``, ``system``, ``model``,
``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``response_format``, ``tools``, ``tool_choice``,
``metadata`` and ``priority`` (an integer; with ``--on-over-budget partial`` higher priorities run first).
CSV cells are text: numbers are parsed, and JSON-valued fields (``messages``, ``stop`` as a list,
``response_format``, ``tools``, ``metadata``) are parsed from JSON text.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Any

import orjson

from costinfer.reading.request import Reject, Request

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_JSON_FIELDS = ("messages", "response_format", "tools", "tool_choice", "metadata", "stop")
# Every row field costinfer reads, besides the prompt and id columns (--prompt-field, --id-field) and the columns a
# --template names. Anything else is not sent: a warning lists such fields once per run, --strict-fields rejects them.
KNOWN_FIELDS = frozenset(
    {
        "prompt",
        "messages",
        "id",
        "system",
        "model",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "stop",
        "response_format",
        "tools",
        "tool_choice",
        "metadata",
        "priority",
        "difficulty",
        "semantic",
    }
)


@dataclass(frozen=True, slots=True)
class RowSpec:
    """How to read a dataset's columns, and the defaults a row may override."""

    model: str
    max_tokens: int
    prompt_field: str = "prompt"
    id_field: str = "id"
    template: str | None = None
    system: str | None = None
    text_cells: bool = False  # CSV: every cell is a string
    strict_fields: bool = False  # a field outside ``known_fields`` rejects the row
    shape: str = "plain"  # or a provider's batch-file line ("openai-batch", "anthropic-batch"): see batchfiles.py
    route_models: tuple[str, ...] = ()  # --models: rows without a model of their own are routed among these

    def template_fields(self) -> list[str]:
        if not self.template:
            return []
        return [name for _, name, _, _ in string.Formatter().parse(self.template) if name]

    def known_fields(self) -> frozenset[str]:
        """The fields a row of this dataset may carry without a warning."""
        columns = [name.split(".")[0].split("[")[0] for name in self.template_fields()]
        return KNOWN_FIELDS | {self.prompt_field, self.id_field, *columns}


def did_you_mean(name: str, choices: frozenset[str]) -> str:
    """ " (did you mean 'max_tokens'?)" for a near miss, else ""."""
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Bad(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason


def build(row_idx: int, line: int, data: dict[str, Any], spec: RowSpec) -> Request | Reject:
    """One raw row to a ``Request``, or a ``Reject`` naming the first bad field."""
    if not spec.text_cells and spec.template is None:
        req = _build_plain(row_idx, line, data, spec)
        if req is not None:
            return req
    return build_any(row_idx, line, data, spec)


def _build_plain(row_idx: int, line: int, data: dict[str, Any], spec: RowSpec) -> Request | None:
    """The common row (a prompt, perhaps an id, a model, max_tokens, a system text, metadata), well formed: the same
    ``Request`` as ``build_any`` (a property test holds them equal) in a fraction of the time. None for any other row,
    which ``build_any`` then reads, and rejects with the reason when it is bad."""
    plain = _PLAIN_FIELDS.get((spec.prompt_field, spec.id_field))
    if plain is None:
        plain = _PLAIN_FIELDS[(spec.prompt_field, spec.id_field)] = frozenset(
            {spec.prompt_field, spec.id_field, "model", "max_tokens", "system", "metadata"}
        )
    if not data.keys() <= plain:
        return None
    prompt = data.get(spec.prompt_field)
    if type(prompt) is not str or not prompt.strip():
        return None
    row_id = data.get(spec.id_field)
    if row_id is None or row_id == "":
        row_id = str(row_idx)
    elif type(row_id) is int:
        row_id = str(row_id)
    elif type(row_id) is not str:
        return None
    # absent (None) takes the default; any other value is the row's own, checked as the reference checks it
    model = data.get("model")
    if model is None:
        model = spec.model
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        max_tokens = spec.max_tokens
    system = data.get("system")
    if system is None or system == "":
        system = spec.system
    metadata = data.get("metadata")
    if (
        type(model) is not str
        or not model.strip()
        or type(max_tokens) is not int
        or max_tokens < 1
        or (system is not None and type(system) is not str)
        or (metadata is not None and type(metadata) is not dict)
    ):
        return None
    user = {"role": "user", "content": prompt}
    messages = [{"role": "system", "content": system}, user] if system is not None else [user]
    body = {"model": model, "messages": messages, "max_tokens": max_tokens}
    return Request(row_idx, line, row_id, body, metadata)


_PLAIN_FIELDS: dict[tuple[str, str], frozenset[str]] = {}


def build_any(row_idx: int, line: int, data: dict[str, Any], spec: RowSpec) -> Request | Reject:
    """``build`` for every row: each field checked in turn; the reference for the fast path."""
    row_id: str | None = None
    try:
        row_id = _row_id(data, spec, row_idx)
        if spec.strict_fields:
            known = spec.known_fields()
            unknown = sorted(name for name in data if name not in known)
            if unknown:
                raise _Bad(
                    unknown[0],
                    f"unknown field{did_you_mean(unknown[0], known)}; costinfer would not send it. Put extra data "
                    f"under metadata, or run without --strict-fields to warn instead",
                )
        data = _parse_cells(data, spec.text_cells)
        model = _opt_str(data, "model")
        if model is not None and not model.strip():
            raise _Bad("model", "is empty: name a model, or leave the field out for --model's")
        body: dict[str, Any] = {"model": model or spec.model}
        body["messages"] = _messages(data, spec)
        # zero is a value, not an absence: the providers refuse max_tokens 0, so the row is rejected, never resized
        max_tokens = _opt_int(data, "max_tokens", minimum=1)
        completion_cap = _opt_int(data, "max_completion_tokens", minimum=1)
        if completion_cap is not None:  # OpenAI's newer name for the same cap: the request keeps one neutral name
            if max_tokens is not None and max_tokens != completion_cap:
                raise _Bad("max_completion_tokens", f"is {completion_cap} but max_tokens is {max_tokens}: give one")
            max_tokens = completion_cap
        body["max_tokens"] = spec.max_tokens if max_tokens is None else max_tokens
        for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
            value = _opt_float(data, name, low, high)
            if value is not None:
                body[name] = value
        for name in ("frequency_penalty", "presence_penalty"):
            value = _opt_float(data, name, -2.0, 2.0)
            if value is not None:
                body[name] = value
        seed = _opt_int(data, "seed")
        if seed is not None:
            body["seed"] = seed
        stop = _stop(data)
        if stop is not None:
            body["stop"] = stop
        response_format = _opt_dict(data, "response_format")
        if response_format is not None:
            if not isinstance(response_format.get("type"), str):
                raise _Bad("response_format", "must be an object with a 'type' such as \"json_object\"")
            body["response_format"] = response_format
        tools = data.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
                raise _Bad("tools", f"must be a list of objects, got {_kind(tools)}")
            body["tools"] = tools
        if data.get("tool_choice") is not None:
            body["tool_choice"] = data["tool_choice"]
        metadata = _opt_dict(data, "metadata")
        difficulty = _opt_float(data, "difficulty", -1e12, 1e12)
        if difficulty is not None:  # the budget policy's order after priority: kept with the row's metadata
            metadata = {**(metadata or {}), "difficulty": difficulty}
        priority = _opt_int(data, "priority")
        priority = 0 if priority is None else priority
        semantic = data.get("semantic", True)
        if isinstance(semantic, str):
            semantic = semantic.strip().lower() not in ("false", "0", "no")
        if not isinstance(semantic, bool):
            raise _Bad("semantic", f"must be true or false, got {_kind(semantic)}")
    except _Bad as bad:
        return Reject(row_idx, line, bad.field, bad.reason, row_id)
    req = Request(row_idx=row_idx, line=line, row_id=row_id, body=body, metadata=metadata, priority=priority)
    if not semantic:
        req.extra["semantic"] = False  # this row opts out of the semantic tier
    return req


def _row_id(data: dict[str, Any], spec: RowSpec, row_idx: int) -> str:
    value = data.get(spec.id_field)
    if value is None or value == "":
        return str(row_idx)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad(spec.id_field, f"must be a string or an integer, got {_kind(value)}")
    return str(value)


def _parse_cells(data: dict[str, Any], text_cells: bool) -> dict[str, Any]:
    """JSON-valued fields may arrive as JSON text (CSV cells, Parquet string columns); CSV's empty cells are absent."""
    out = data
    for name in _JSON_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or value.lstrip()[:1] not in ("[", "{") or (name == "stop" and not text_cells):
            continue
        if out is data:
            out = dict(data)
        try:
            out[name] = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise _Bad(name, f"is not valid JSON: {exc.msg}") from None
    if text_cells:
        out = {name: (None if value == "" else value) for name, value in out.items()}
    return out


def _messages(data: dict[str, Any], spec: RowSpec) -> list[dict[str, Any]]:
    system = _opt_str(data, "system") or spec.system
    messages = data.get("messages")
    if spec.template:
        prompt: str | None = _render(spec.template, data)
    else:
        raw = data.get(spec.prompt_field)
        if raw is not None and not isinstance(raw, str):
            raise _Bad(spec.prompt_field, f"must be text, got {_kind(raw)}")
        prompt = raw
    if messages is not None and prompt is not None:
        raise _Bad(spec.prompt_field, "give either a prompt or messages, not both")
    if messages is None:
        if prompt is None:
            raise _Bad(spec.prompt_field, f"missing: the row needs '{spec.prompt_field}' (text) or 'messages'")
        if not prompt.strip():
            raise _Bad(spec.prompt_field, "is empty")
        out = [{"role": "user", "content": prompt}]
    else:
        out = _check_messages(messages)
    if system is not None:
        if out[0]["role"] == "system":
            raise _Bad("system", "the messages already start with a system message")
        out = [{"role": "system", "content": system}, *out]
    return out


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _Bad("messages", f"must be a non-empty list of {{role, content}} objects, got {_kind(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _Bad(f"messages[{i}]", f"must be an object, got {_kind(message)}")
        role = message.get("role")
        if role not in ROLES:
            raise _Bad(f"messages[{i}].role", f"must be one of {', '.join(sorted(ROLES))}, got {role!r}")
        content = message.get("content")
        if content is None and not message.get("tool_calls"):
            raise _Bad(f"messages[{i}].content", "missing")
        if content is not None and not isinstance(content, (str, list)):
            raise _Bad(f"messages[{i}].content", f"must be text or a list of parts, got {_kind(content)}")
    return messages


def _render(template: str, data: dict[str, Any]) -> str:
    values: dict[str, Any] = {}
    for _, name, _, _ in string.Formatter().parse(template):
        if not name:
            continue
        column = name.split(".")[0].split("[")[0]
        if data.get(column) is None:
            raise _Bad(column, "missing: the template needs this column")
        values[column] = data[column]
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise _Bad("(template)", f"cannot fill the template: {exc}") from None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _opt_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Bad(name, f"must be text, got {_kind(value)}")
    return value


def _opt_int(data: dict[str, Any], name: str, minimum: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise _Bad(name, f"must be an integer, got {value!r}") from None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(name, f"must be an integer, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise _Bad(name, f"must be at least {minimum}, got {value}")
    return value


def _opt_float(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _Bad(name, f"must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _Bad(name, f"must be a number, got {_kind(value)}")
    if not low <= value <= high:
        raise _Bad(name, f"must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def _opt_dict(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Bad(name, f"must be an object, got {_kind(value)}")
    return value


def _stop(data: dict[str, Any]) -> str | list[str] | None:
    value = data.get("stop")
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and 1 <= len(value) <= 4:
        return value
    raise _Bad("stop", "must be text or a list of 1 to 4 strings")
