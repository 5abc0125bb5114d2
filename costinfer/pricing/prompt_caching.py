"""Provider prompt caches: how long a shared prefix must be before a provider caches it, and what caching it saves.

OpenAI caches any prompt of 1,024 tokens or more by itself and reports hits in steps of 128 tokens
(``usage.prompt_tokens_details.cached_tokens``). Anthropic caches up to a ``cache_control`` breakpoint the request
sets, from a documented minimum per model, and bills the first write above the input price
(``cache_creation_input_tokens``) and later reads far below it (``cache_read_input_tokens``).
"""

from __future__ import annotations

import re
from decimal import Decimal

from costinfer.pricing.catalog import ModelPrice

OPENAI_MIN_TOKENS = 1024
OPENAI_STEP = 128

# Anthropic's documented minimum cacheable prefix per model family (checked through the search tool, 2026-12);
# anything not listed: 1,024
_ANTHROPIC_MIN = [
    (re.compile(r"claude-(?:opus-4-[5-9]|haiku-4-5|opus-5|haiku-5)"), 4096),
    (re.compile(r"claude-(?:sonnet-4-6|3-5-haiku|3-haiku|haiku-3)"), 2048),
]


def min_prefix_tokens(model: str, provider: str) -> int:
    if provider == "anthropic":
        for pattern, tokens in _ANTHROPIC_MIN:
            if pattern.search(model):
                return tokens
    return OPENAI_MIN_TOKENS


def openai_cached(prefix_tokens: int) -> int:
    """The tokens OpenAI reports cached for a prompt whose first ``prefix_tokens`` were seen before."""
    if prefix_tokens < OPENAI_MIN_TOKENS:
        return 0
    return OPENAI_MIN_TOKENS + (prefix_tokens - OPENAI_MIN_TOKENS) // OPENAI_STEP * OPENAI_STEP


def expected_saving(price: ModelPrice, requests: int, prefix_tokens: int, provider: str) -> Decimal:
    """What caching a prefix shared by ``requests`` requests sent back to back saves against no cache: every request
    after the first reads it; on Anthropic the first one writes it, at a premium."""
    if requests < 2 or prefix_tokens < min_prefix_tokens(price.model, provider):
        return Decimal(0)
    if provider == "anthropic":
        reads = (requests - 1) * prefix_tokens * (price.input - price.cached_input)
        return reads - prefix_tokens * (price.cache_write - price.input)
    cached = openai_cached(prefix_tokens)
    return (requests - 1) * cached * (price.input - price.cached_input)
