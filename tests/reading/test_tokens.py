"""Token counts: exact offline for OpenAI models, identical across counting paths, and a true bound for the budget."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from costinfer.reading.tokens import _PUBLISHED, TokenCounter, encoder_for, encoding_name_for, seed_tiktoken_cache
from tests.conftest import SAMPLE, read_jsonl


def test_model_encodings() -> None:
    assert encoding_name_for("gpt-4o-mini") == ("o200k_base", True)
    assert encoding_name_for("gpt-4.1-nano") == ("o200k_base", True)
    assert encoding_name_for("gpt-4-turbo") == ("cl100k_base", True)
    assert encoding_name_for("claude-sonnet-4-5") == ("cl100k_base", False)


def test_o200k_is_exact_offline_from_a_fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert seed_tiktoken_cache("o200k_base")
    url, sha256 = _PUBLISHED["o200k_base"]
    cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha256  # byte for byte OpenAI's published file
    enc = tiktoken.get_encoding("o200k_base")  # tiktoken itself, from the cache, no network
    assert enc.encode_ordinary("hello world") == [24912, 2375]
    assert not encoder_for("gpt-4o-mini").approximate


def test_a_damaged_cache_file_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url, sha256 = _PUBLISHED["cl100k_base"]
    cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    cached.write_bytes(b"dGVzdA== 0\n")  # a truncated or tampered file
    assert seed_tiktoken_cache("cl100k_base")
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha256
    assert tiktoken.get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]


def test_every_counting_path_agrees_on_the_sample() -> None:
    from costinfer.reading.rows import RowSpec, build

    bodies = [build(0, 1, r, RowSpec(model="gpt-4o-mini", max_tokens=16)).body for r in read_jsonl(SAMPLE)]
    one_by_one = [TokenCounter().count_body(b) for b in bodies]  # type: ignore[union-attr]
    assert TokenCounter().count_bodies(bodies) == one_by_one  # type: ignore[arg-type]
    assert TokenCounter(fast=True).count_bodies(bodies) == one_by_one  # type: ignore[arg-type]
    # with a non-OpenAI model, a response format and tools in the mix: measure() bounds like input_bound()
    mixed = [*bodies, {**bodies[0], "model": "claude-sonnet-4-5"}]
    mixed.append({**bodies[1], "response_format": {"type": "json_object"}})
    mixed.append({**bodies[2], "tools": [{"type": "function", "function": {"name": "f"}}]})
    counter = TokenCounter()
    counts, bounds = counter.measure(mixed)  # type: ignore[arg-type]
    assert counts == [counter.count_body(b) for b in mixed]  # type: ignore[arg-type]
    assert bounds == [counter.input_bound(b, n) for b, n in zip(mixed, counts, strict=True)]  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.text(min_size=0, max_size=300), min_size=1, max_size=4),
    model=st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-5"]),
)
def test_the_input_bound_is_never_below_the_count(texts: list[str], model: str) -> None:
    counter = TokenCounter()
    body = {"model": model, "messages": [{"role": "user", "content": t} for t in texts]}
    counted = counter.count_body(body)
    bound = counter.input_bound(body, counted)
    assert bound >= counted
    if counter.encoder(model).approximate:
        # not the model's own tokenizer: the byte bound must hold for any byte-level BPE
        for family in ("gpt-4-turbo", "gpt-4o"):
            count = TokenCounter().encoder(family).count
            assert bound >= sum(count(t) for t in texts), family
