"""``costinfer doctor``: is a server ready for a run? One check per line, each with what to do when it fails.

For any OpenAI-compatible server: reachable, and the model served (``/v1/models``). For a server that counts and
reports its load (vLLM): its context length, its tokenizer (``/tokenize``), its queue (``/metrics``), and one
one-token call (free on your own hardware; never made on a paid provider).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio

from costinfer.backends.base import Backend
from costinfer.errors import BackendError


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable to this server
    detail: str


def diagnose(backend: Backend, model: str | None) -> list[Check]:
    return anyio.run(_diagnose, backend, model)


async def _diagnose(backend: Backend, model: str | None) -> list[Check]:
    checks: list[Check] = []
    async with backend:
        started = time.perf_counter()
        try:
            served = await backend.served_models()
        except BackendError as exc:
            hints = {
                "cannot_connect": "start the server, or fix --base-url",
                "timeout": "it accepts connections but does not answer: is it still loading, or hung? (--timeout)",
                "auth_error": "check the key",
            }
            hint = hints.get(exc.error_class, "is this the server's OpenAI-compatible base URL (ending in /v1)?")
            what = str(exc) or exc.__class__.__name__
            return [Check("reachable", False, f"{backend.base_url}: {exc.error_class}: {what}; {hint}")]
        ms = (time.perf_counter() - started) * 1000
        checks.append(Check("reachable", True, f"{backend.base_url}/models answered in {ms:.0f} ms"))
        names = ", ".join(served) or "none"
        if model is None:
            model = next(iter(served), None)
            checks.append(Check("model served", model is not None, f"serves {names}; pass --model to pick one"))
        else:
            ok = model in served
            checks.append(
                Check(
                    "model served", ok, f"'{model}' is served" if ok else f"'{model}' is not served; it serves {names}"
                )
            )
        if not backend.exact_counts or model is None:
            checks.append(Check("tokenizer, metrics", None, f"{backend.name} does not count prompts or report load"))
            return checks
        limit = served.get(model)
        checks.append(Check("context", True if limit else None, f"max_model_len {limit}" if limit else "not reported"))
        await _check(checks, "tokenizer", _tokenize(backend, model), "/tokenize: 'Hello, world' is {} tokens")
        await _check(checks, "metrics", _load(backend), "/metrics: {}")
        if backend.self_hosted:
            await _check(checks, "one call", _call(backend, model), "a one-token answer in {}")
    return checks


async def _check(checks: list[Check], name: str, work: Any, template: str) -> None:
    try:
        checks.append(Check(name, True, template.format(await work)))
    except BackendError as exc:
        checks.append(Check(name, False, str(exc)))


async def _tokenize(backend: Backend, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello, world"}]}
    return await backend.tokenize(body)


async def _load(backend: Backend) -> str:
    load = await backend.load()
    kv = "" if load.kv_cache is None else f", KV cache {load.kv_cache:.0%} used"
    return f"{load.running:g} running, {load.waiting:g} waiting{kv}"


async def _call(backend: Backend, model: str) -> str:
    started = time.perf_counter()
    await backend.complete({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"
