"""Secrets kept out of everything a server says: a server may echo the key it was sent (in a 401, a 400, a 500, a
proxy's error page), and its text is shown on the terminal, stored in the ledger and the cache, and written into the
results and the report. Every server text passes through ``redact`` where it enters (the transport), so none of those
places can see a key: the run's own key by value, and anything shaped like a provider's key or a bearer token."""

from __future__ import annotations

import re

MASK = "***"
_KEY_SHAPES = re.compile(
    r"(?:\bsk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_\-]{8,}"  # OpenAI and Anthropic keys
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bAIza[0-9A-Za-z_\-]{30,}"  # Google API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"  # a bearer token
    r"|(?i:(?:api[-_]?key|x-api-key|access[-_]?token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{6,})"
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with each of ``secrets`` (8 characters or more) and anything shaped like a key replaced by ***."""
    for secret in secrets:
        if len(secret) >= 8:
            text = text.replace(secret, MASK)
    return _KEY_SHAPES.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    found = match.group(0)
    for sep in ("=", ":"):  # keep the name of a name=value pair, so the reader sees what was hidden
        head, cut, _ = found.partition(sep)
        if cut and not head.lower().startswith(("sk-", "bearer")):
            return f"{head}{sep}{MASK}"
    if found.lower().startswith("bearer"):
        return f"{found.split()[0]} {MASK}"
    return MASK
