"""Redaction of secrets: the one place that decides what is sensitive.

Logs, progress events, XCom values, error messages and web responses pass through here.
Values are masked fully (no leading or trailing characters survive).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

SENSITIVE_KEYS: frozenset[str] = frozenset(
    {
        "access_token", "accesstoken", "api_key", "apikey", "api_token", "apitoken",
        "authorization", "bearer", "client_secret", "clientsecret", "code", "cookie",
        "credentials", "key", "password", "passwd", "private_key", "privatekey",
        "refresh_token", "refreshtoken", "secret", "signing_secret", "token",
        "webhook_secret", "webhooksecret", "x-api-key", "set-cookie", "jwt",
    }
)
_SENSITIVE_FRAGMENTS = ("secret", "token", "password", "apikey", "api_key", "private")


def is_sensitive_key(key: str) -> bool:
    """Return True when a mapping key names a secret."""
    norm = key.lower().replace("-", "_")
    if norm in SENSITIVE_KEYS or norm.replace("_", "") in SENSITIVE_KEYS:
        return True
    return any(f in norm for f in _SENSITIVE_FRAGMENTS)


def redact(obj: Any, *, secrets: Iterable[str] = ()) -> Any:
    """Return a copy of ``obj`` with sensitive keys masked and known secret values replaced."""
    values = [s for s in secrets if isinstance(s, str) and len(s) >= 4]
    return _redact(obj, values)


def _redact(obj: Any, values: list[str]) -> Any:
    if isinstance(obj, Mapping):
        return {
            k: (MASK if isinstance(k, str) and is_sensitive_key(k) and v not in (None, "")
                else _redact(v, values))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(_redact(v, values) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj, values)
    return obj


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace each known secret value in ``text`` and mask bearer tokens."""
    for s in sorted((s for s in secrets if isinstance(s, str) and len(s) >= 4), key=len, reverse=True):
        text = text.replace(s, MASK)
    return _BEARER.sub(r"\1" + MASK, text)


_BEARER = re.compile(r"((?:Bearer|Basic|token)\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)


def sanitize_url(url: str) -> str:
    """Drop user info and mask sensitive query parameters of ``url``."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = urlencode(
        [(k, MASK if is_sensitive_key(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secret_values(credentials: Mapping[str, Any] | None, extra_keys: Iterable[str] = ()) -> list[str]:
    """Collect the string values stored under sensitive keys (or ``extra_keys``) of a credentials map."""
    extra = {k.lower() for k in extra_keys}
    out: list[str] = []

    def walk(v: Any, sensitive: bool) -> None:
        if isinstance(v, str):
            if sensitive and len(v) >= 4:
                out.append(v)
        elif isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, sensitive or (isinstance(k, str) and (is_sensitive_key(k) or k.lower() in extra)))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, sensitive)

    walk(credentials or {}, False)
    return out
