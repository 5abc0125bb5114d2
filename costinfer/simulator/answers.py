"""What the simulator answers: deterministic text derived from the request, usage counted as the provider counts
it (reasoning models think first), and OpenAI's refusals for what its reasoning models do not accept."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson

from costinfer.simulator.config import SimulatorConfig

# Common English words that are one token each in both cl100k_base and o200k_base (with their leading space).
_WORDS = [
    "the",
    "answer",
    "is",
    "that",
    "this",
    "request",
    "was",
    "handled",
    "by",
    "a",
    "simple",
    "model",
    "which",
    "can",
    "give",
    "good",
    "short",
    "replies",
    "about",
    "many",
    "topics",
    "such",
    "as",
    "money",
    "time",
    "work",
    "people",
    "data",
    "and",
    "more",
    "so",
    "you",
    "may",
    "use",
    "it",
    "to",
    "test",
    "your",
    "pipeline",
    "before",
    "paying",
]


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def chat_completion(
    digest: str,
    model: str,
    text: str,
    finish: str,
    prompt_tokens: int,
    completion_tokens: int,
    created: float,
    reasoning_tokens: int = 0,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-sim-{digest[:24]}",
        "object": "chat.completion",
        "created": int(created),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        },
    }


def anthropic_message(
    digest: str,
    model: str,
    text: str,
    finish: str,
    prompt_tokens: int,
    completion_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
) -> dict[str, Any]:
    """``prompt_tokens`` counts the whole prompt; Anthropic's ``input_tokens`` leave out what was read from or written
    to the cache."""
    return {
        "id": f"msg_sim{digest[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if finish == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens - cache_read - cache_write,
            "output_tokens": completion_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        },
    }


def body_digest(body: dict[str, Any]) -> str:
    """The digest the request log records for a body: SHA-256 of its sorted-key JSON."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def answer_for(body: dict[str, Any], cfg: SimulatorConfig, reasoning: bool = False) -> tuple[str, int, str, int]:
    """The deterministic answer to a request: its text, its output tokens (reasoning included), its finish reason
    and its hidden reasoning tokens. A reasoning model thinks first: the cap bounds thinking and answer together."""
    seed = hashlib.sha256(orjson.dumps([body.get("model"), body.get("messages")], option=orjson.OPT_SORT_KEYS)).digest()
    rng = random.Random(seed)
    length = rng.randint(cfg.answers.min_output_tokens, cfg.answers.max_output_tokens)
    thinking = rng.randint(cfg.answers.min_reasoning_tokens, cfg.answers.max_reasoning_tokens) if reasoning else 0
    cap = body.get("max_tokens") or body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(cap, int) and 0 < cap < thinking + length:
        thinking = min(thinking, cap)
        length, finish = cap - thinking, "length"
    words = [rng.choice(_WORDS) for _ in range(length)]
    return " ".join(words), thinking + length, finish, thinking


BAD_ANSWER = "I'm sorry, but I can't help with that."
BAD_ANSWER_TOKENS = 11


def answers_badly(body: dict[str, Any], cfg: SimulatorConfig) -> bool:
    """Whether the simulator answers this request badly (a refusal), as told: its model answers a seeded share of
    requests badly (``bad_answers``), and always those whose last message is one of ``bad_prompts``."""
    model = str(body.get("model"))
    share = dict(cfg.answers.bad_answers).get(model)
    if share is None:
        return False
    messages = body.get("messages") or []
    if messages and text_of(messages[-1].get("content") or "") in cfg.answers.bad_prompts:
        return True
    seed = orjson.dumps([cfg.seed, model, messages], option=orjson.OPT_SORT_KEYS)
    draw = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") / 2**64
    return draw < share


def reasoning_refusal(body: dict[str, Any]) -> str | None:
    """What OpenAI answers with a 400 for a reasoning model's request (max_tokens; sampling other than default)."""
    if "max_tokens" in body:
        return (
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
        )
    for name, default in (("temperature", 1), ("top_p", 1), ("presence_penalty", 0), ("frequency_penalty", 0)):
        value = body.get(name)
        if value is not None and value != default:
            return (
                f"Unsupported value: '{name}' does not support {value} with this model. "
                f"Only the default ({default}) value is supported."
            )
    return None
