"""The simulator's prompt cache, reported the way each provider reports it.

OpenAI's protocol: a request whose leading messages (all but the last, then fewer) were seen in the last five minutes
reads them from the cache, if they are 1,024 tokens or more, in steps of 128 (``prompt_tokens_details.cached_tokens``).
Anthropic's protocol: only up to the last ``cache_control`` breakpoint, from the model's minimum; the first request
writes it (``cache_creation_input_tokens``), later ones read it (``cache_read_input_tokens``). Prefixes are counted
with the same tokenizer as the whole prompt, a message at a time.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from costinfer.backends.prompt_cache import AUTOMATIC_PREFIX, BREAKPOINT
from costinfer.reading.tokens import TokenCounter

TTL_S = 300.0


class PromptCache:
    def __init__(self, counter: TokenCounter, ttl_s: float = TTL_S) -> None:
        self.counter = counter
        self.ttl_s = ttl_s
        self._seen: dict[bytes, tuple[int, float]] = {}  # prefix digest -> (its tokens, when it expires)

    def openai(self, body: dict[str, Any]) -> int:
        """Cached tokens of an OpenAI chat request; remembers its prefixes for the next ones."""
        messages = body["messages"]
        if len(messages) < 2:
            return 0
        now = time.monotonic()
        hit = 0
        for k in range(len(messages) - 1, 0, -1):
            digest = _digest(body["model"], messages[:k])
            seen = self._seen.get(digest)
            if seen is not None and seen[1] > now:
                hit = max(hit, seen[0])
                self._seen[digest] = (seen[0], now + self.ttl_s)
                break
        prefix = messages[:-1]
        digest = _digest(body["model"], prefix)
        if digest not in self._seen or self._seen[digest][1] <= now:
            self._seen[digest] = (self._tokens(body["model"], prefix), now + self.ttl_s)
        return AUTOMATIC_PREFIX.cached_tokens(hit)

    def anthropic(self, body: dict[str, Any], chat_prefix: list[dict[str, Any]] | None) -> tuple[int, int]:
        """(read, written) tokens of an Anthropic request whose chat-shaped prefix up to its last breakpoint is
        ``chat_prefix`` (None: no breakpoint)."""
        if not chat_prefix:
            return 0, 0
        model = str(body["model"])
        tokens = self._tokens(model, chat_prefix)
        if tokens < BREAKPOINT.min_prefix_tokens(model):
            return 0, 0
        now = time.monotonic()
        digest = _digest(model, chat_prefix)
        seen = self._seen.get(digest)
        self._seen[digest] = (tokens, now + self.ttl_s)
        if seen is not None and seen[1] > now:
            return tokens, 0
        return 0, tokens

    def _tokens(self, model: str, messages: list[dict[str, Any]]) -> int:
        # the prefix as a prompt of its own, less the few tokens that prime the reply
        return max(0, self.counter.count_body({"model": model, "messages": messages}) - 3)


def _digest(model: Any, messages: list[dict[str, Any]]) -> bytes:
    return hashlib.sha256(orjson.dumps([model, messages], option=orjson.OPT_SORT_KEYS)).digest()
