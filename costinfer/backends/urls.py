"""A server's base URL: checked before anything is read or sent, and never shown or stored with a credential."""

from __future__ import annotations

import re

from costinfer.errors import ConfigError

_SECRET_PARAM = re.compile(r"(?i)(?:api[-_]?key|key|token|secret|password|passwd|sig|signature|auth\w*|code)$")


def check_url(url: str) -> None:
    """A base URL must be http(s)://host[:port][/path]: anything else fails here, not as an error on every call.
    It never carries credentials (user:password@, ?api-key=): they would be stored with the run and shown; keys come
    from the provider's variable."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"--base-url is not a URL: {redact_url(url)}: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"--base-url {redact_url(url)} carries credentials: leave them out of the URL and put the key in the "
            f"provider's variable (e.g. OPENAI_API_KEY); nothing was read or sent"
        )
    if any(_SECRET_PARAM.match(name) for name, _ in parse_qsl(parts.query, keep_blank_values=True)):
        raise ConfigError(
            f"--base-url {redact_url(url)} carries a credential in its query string: put the key in the provider's "
            f"variable (e.g. OPENAI_API_KEY) instead; nothing was read or sent"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--base-url '{redact_url(url)}' is not a URL: give http(s)://HOST[:PORT]/PATH, e.g. "
            f"http://127.0.0.1:8000/v1"
        )


def redact_url(url: str) -> str:
    """A URL fit to show: a password and credential-like query values replaced by '***'."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
        query = urlencode(
            [(k, "***" if _SECRET_PARAM.match(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
            safe="*",
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "(a URL that cannot be parsed)"
