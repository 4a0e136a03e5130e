"""Request authentication strategies as ``httpx.Auth`` objects whose secrets never show in a repr."""

from __future__ import annotations

import base64
from collections.abc import Generator

import httpx
from pydantic import SecretStr


def _secret(value: str | SecretStr) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(value)


class SecretAuth(httpx.Auth):
    """Base of the kit's auth strategies: knows its secret values so the client can redact them."""

    def secret_values(self) -> list[str]:
        """Every string this auth sends that must never appear in logs or errors."""
        return []


class BearerAuth(SecretAuth):
    """``Authorization: Bearer <token>`` (or another scheme, e.g. GitHub's ``token``)."""

    def __init__(self, token: str | SecretStr, *, scheme: str = "Bearer") -> None:
        """Wrap ``token``; it is unwrapped only when a request is signed."""
        self._token = _secret(token)
        self.scheme = scheme

    def __repr__(self) -> str:
        return f"BearerAuth(token=SecretStr('**********'), scheme={self.scheme!r})"

    def secret_values(self) -> list[str]:
        """The token."""
        return [self._token.get_secret_value()]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Set the Authorization header."""
        request.headers["Authorization"] = f"{self.scheme} {self._token.get_secret_value()}"
        yield request


class BasicAuth(SecretAuth):
    """HTTP Basic auth (Zendesk ``email/token:api_token``, Notion's token exchange)."""

    def __init__(self, username: str, password: str | SecretStr) -> None:
        """Wrap the password; the username is not treated as secret."""
        self.username = username
        self._password = _secret(password)

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=SecretStr('**********'))"

    def _encoded(self) -> str:
        raw = f"{self.username}:{self._password.get_secret_value()}".encode()
        return base64.b64encode(raw).decode("ascii")

    def secret_values(self) -> list[str]:
        """The password and the encoded header value (which would reveal it)."""
        return [self._password.get_secret_value(), self._encoded()]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Set the Authorization header."""
        request.headers["Authorization"] = f"Basic {self._encoded()}"
        yield request


class HeaderAuth(SecretAuth):
    """A secret in a named header, e.g. ``X-Api-Key`` (Fathom) or ``Notion-Version``-style pairs."""

    def __init__(self, name: str, value: str | SecretStr, *, prefix: str = "") -> None:
        """Send ``<prefix><value>`` in header ``name``."""
        self.name = name
        self.prefix = prefix
        self._value = _secret(value)

    def __repr__(self) -> str:
        return f"HeaderAuth(name={self.name!r}, value=SecretStr('**********'))"

    def secret_values(self) -> list[str]:
        """The header value."""
        return [self._value.get_secret_value()]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Set the header."""
        request.headers[self.name] = f"{self.prefix}{self._value.get_secret_value()}"
        yield request
