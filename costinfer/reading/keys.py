"""The exact request key: everything that can change the answer, and nothing else.

The canonical form is documented in ``docs/request-key.md``; change it only with a new ``KEY_VERSION``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

import orjson

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The normalized tier's form: Unicode NFKC, case folded, runs of white space as one space, trimmed."""
    if text.isascii():  # NFKC changes no ASCII text, and casefold is lower: the same result, several times faster
        low = text.lower()
        if low.isprintable() and "  " not in low and low[:1] != " " and low[-1:] != " ":
            return low  # its only white space is single inner spaces: nothing to collapse or trim
        return " ".join(low.split())
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


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


# A text no dataset row holds: it marks where the last user message's text goes in a request's canonical bytes.
_SLOT = "\x00costinfer:last-user-text\x00"
_SLOT_JSON = orjson.dumps(_SLOT)
_MEMO_LIMIT = 4096


class KeyMaker:
    """The exact, normalized and group keys of many requests, the same values as ``request_key``,
    ``normalized_key`` and ``semantic_parts`` (a property test holds them equal), several times faster.

    Rows of a dataset usually differ only in the text of their last user message. The canonical bytes of such a
    request are ``head + json(text) + tail``, where head and tail depend on everything else (model, parameters, the
    messages before it): they are computed once per distinct "everything else" and kept in a small memo, so each row
    costs one JSON string, one or two SHA-256 and the text's normalization.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # everything but the last text -> (head, tail, normalized head, normalized tail, group key), or None when the
        # request has no such shape
        self._memo: dict[bytes | tuple[str, int], tuple[bytes, bytes, bytes, bytes, str] | None] = {}

    def keys(self, body: dict[str, Any]) -> tuple[str, str, str | None]:
        """(exact key, normalized key, group key or None): see ``request_key``, ``normalized_key``,
        ``semantic_parts``."""
        messages = body["messages"]
        last = messages[-1]
        text = last.get("content")
        if last.get("role") != "user" or not isinstance(text, str) or len(last) != 2:
            return self._reference(body)
        model, max_tokens = body.get("model"), body.get("max_tokens")
        if len(body) == 3 and len(messages) == 1 and type(model) is str and type(max_tokens) is int:
            # the commonest request, one prompt: everything but the text is the model and the cap
            memo_key: bytes | tuple[str, int] = (model, max_tokens)
        else:
            try:
                memo_key = orjson.dumps({**body, "messages": messages[:-1]})
            except TypeError:  # a value orjson cannot write: the reference functions say what happens
                return self._reference(body)
        if memo_key in self._memo:
            parts = self._memo[memo_key]
        else:
            parts = self._template(body)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[memo_key] = parts
        if parts is None:
            return self._reference(body)
        head, tail, norm_head, norm_tail, group = parts
        exact = hashlib.sha256(head + orjson.dumps(text) + tail).hexdigest()
        normal = normalize_text(text)
        if normal == text and norm_head == head and norm_tail == tail:
            return exact, exact, group
        return exact, hashlib.sha256(norm_head + orjson.dumps(normal) + norm_tail).hexdigest(), group

    def _reference(self, body: dict[str, Any]) -> tuple[str, str, str | None]:
        endpoint = self.endpoint
        return request_key(body, endpoint), normalized_key(body, endpoint), semantic_key(body, endpoint)

    def _template(self, body: dict[str, Any]) -> tuple[bytes, bytes, bytes, bytes, str] | None:
        messages = body["messages"]
        slotted = {**body, "messages": [*messages[:-1], {"role": "user", "content": _SLOT}]}
        canon = canonical(slotted, self.endpoint)
        normalized = [
            {**m, "content": normalize_text(m["content"])} if isinstance(m.get("content"), str) else m
            for m in messages[:-1]
        ]
        norm_canon = canonical({**body, "messages": [*normalized, {"role": "user", "content": _SLOT}]}, self.endpoint)
        if canon.count(_SLOT_JSON) != 1 or norm_canon.count(_SLOT_JSON) != 1:
            return None  # the marker also appears elsewhere: the reference functions do these rows
        head, tail = canon.split(_SLOT_JSON)
        norm_head, norm_tail = norm_canon.split(_SLOT_JSON)
        group = semantic_key(body, self.endpoint)
        assert group is not None
        return head, tail, norm_head, norm_tail, group


def semantic_key(body: dict[str, Any], endpoint: str) -> str | None:
    parts = semantic_parts(body, endpoint)
    return parts[0] if parts else None
