"""How a provider's prompt cache works, declared by its backend (``Backend.prompt_cache``), so that planning and the
simulator ask the policy instead of branching on a provider's name.

``AutomaticPrefix`` (OpenAI and compatible servers): any prompt of 1,024 tokens or more is cached by itself, and hits
are reported in steps of 128 tokens (``usage.prompt_tokens_details.cached_tokens``).
``Breakpoint`` (Anthropic): caching up to a ``cache_control`` breakpoint the request sets, from a documented minimum
per model; the first write is billed above the input price (``cache_creation_input_tokens``), later reads far below
it (``cache_read_input_tokens``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from decimal import Decimal
from typing import Protocol


class CachePrices(Protocol):
    """The three per-token prices a prompt cache's saving depends on (a catalog's ``ModelPrice`` has them)."""

    @property
    def model(self) -> str: ...
    @property
    def input(self) -> Decimal: ...
    @property
    def cached_input(self) -> Decimal: ...
    @property
    def cache_write(self) -> Decimal: ...


class PromptCache(ABC):
    @abstractmethod
    def min_prefix_tokens(self, model: str) -> int:
        """The shortest prefix the provider caches for this model."""

    @abstractmethod
    def expected_saving(self, price: CachePrices, requests: int, prefix_tokens: int) -> Decimal:
        """What caching a prefix shared by ``requests`` requests sent back to back saves against no cache."""


class AutomaticPrefix(PromptCache):
    MIN_TOKENS = 1024
    STEP = 128

    def min_prefix_tokens(self, model: str) -> int:
        return self.MIN_TOKENS

    def cached_tokens(self, prefix_tokens: int) -> int:
        """The tokens reported cached for a prompt whose first ``prefix_tokens`` were seen before."""
        if prefix_tokens < self.MIN_TOKENS:
            return 0
        return self.MIN_TOKENS + (prefix_tokens - self.MIN_TOKENS) // self.STEP * self.STEP

    def expected_saving(self, price: CachePrices, requests: int, prefix_tokens: int) -> Decimal:
        if requests < 2 or prefix_tokens < self.min_prefix_tokens(price.model):
            return Decimal(0)
        return (requests - 1) * self.cached_tokens(prefix_tokens) * (price.input - price.cached_input)


class Breakpoint(PromptCache):
    # Anthropic's documented minimum cacheable prefix per model family (checked through the search tool, 2026-12);
    # anything not listed: 1,024
    MINIMUMS = (
        (re.compile(r"claude-(?:opus-4-[5-9]|haiku-4-5|opus-5|haiku-5)"), 4096),
        (re.compile(r"claude-(?:sonnet-4-6|3-5-haiku|3-haiku|haiku-3)"), 2048),
    )
    DEFAULT_MIN = 1024

    def min_prefix_tokens(self, model: str) -> int:
        return next((tokens for pattern, tokens in self.MINIMUMS if pattern.search(model)), self.DEFAULT_MIN)

    def expected_saving(self, price: CachePrices, requests: int, prefix_tokens: int) -> Decimal:
        """Every request after the first reads the prefix; the first one writes it, at a premium."""
        if requests < 2 or prefix_tokens < self.min_prefix_tokens(price.model):
            return Decimal(0)
        reads = (requests - 1) * prefix_tokens * (price.input - price.cached_input)
        return reads - prefix_tokens * (price.cache_write - price.input)


AUTOMATIC_PREFIX = AutomaticPrefix()
BREAKPOINT = Breakpoint()
