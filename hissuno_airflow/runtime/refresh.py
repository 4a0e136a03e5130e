"""Access-token refresh: before expiry, on a 401, once per connection across processes.

OAuth 2.0 plugins refresh with their refresh token (or their own ``refresh``); ``github_app`` plugins
mint an installation access token with the app JWT (tokens live one hour, nothing to rotate).

Single flight: the refresh runs under a PostgreSQL advisory lock keyed on the connection id, taken
on a dedicated connection to the store, so it holds across processes and machines. After taking the
lock the credentials are read again: when another process refreshed meanwhile, its result is used
and no request is sent (a provider that rotates refresh tokens rejects a used one, so a second
refresh would kill the connection). The new tokens, including a rotated refresh token, are saved
before the lock is released and before anyone uses them.

Credentials use the keys ``access_token``, ``refresh_token`` and ``expires_at`` (ISO 8601 UTC).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ..kit.errors import ProviderAuthError, ProviderUnavailable

if TYPE_CHECKING:
    from ..kit.auth import GitHubAppAuth, OAuth2Auth
    from ..kit.define import PluginDef
    from ..store.connections import ConnectionRow
    from ..store.db import Store

LOCK_TIMEOUT_S = 120
HTTP_TIMEOUT_S = 30.0


class CredentialSource(Protocol):
    """Where one connection's credentials are read and written, and HTTP clients that do not sign with
    the connection's own token (``ConnectionServices`` provides it)."""

    def load(self) -> dict[str, Any]: ...
    def save(self, credentials: dict[str, Any]) -> None: ...
    def base_url(self, name: str) -> str: ...
    def http_client(self, base: str = "API", **kwargs: Any) -> Any: ...


def _expires_at(creds: dict[str, Any]) -> datetime | None:
    raw = creds.get("expires_at")
    if raw in (None, ""):
        return None
    if isinstance(raw, (int, float)):
        return datetime.fromtimestamp(raw, tz=UTC)
    value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def needs_refresh(creds: dict[str, Any], leeway_seconds: int, now: datetime | None = None) -> bool:
    """Whether the access token is missing or expires within ``leeway_seconds``."""
    if not creds.get("access_token"):
        return bool(creds.get("refresh_token"))
    expires = _expires_at(creds)
    if expires is None:
        return False
    now = now or datetime.now(UTC)
    return expires - now <= timedelta(seconds=leeway_seconds)


@contextmanager
def connection_lock(store: Store, connection_id: str) -> Iterator[None]:
    """Hold ``pg_advisory_lock(hashtext('hissuno-refresh:<id>'))`` on a connection of its own.

    A pooled connection would keep the session-level lock after being returned, so the lock gets a
    dedicated connection that is closed (releasing it) even if the holder dies.
    """
    import psycopg

    key = f"hissuno-refresh:{connection_id}"
    with psycopg.connect(store.url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def ensure_fresh(
    plugin: PluginDef, connection: ConnectionRow, source: CredentialSource, store: Store, *,
    force: bool = False, now: datetime | None = None, creds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return usable credentials, refreshing the OAuth access token first when it is (nearly) expired.

    Args:
        plugin: the connection's plugin; non-OAuth plugins get their credentials back unchanged.
        connection: the connection row (its id keys the lock).
        source: where the credentials are read and saved.
        store: the hissuno store (for the advisory lock).
        force: refresh even if the token looks valid (the provider answered 401). Skipped when
            another process already replaced the token this caller saw.
        now: the current time (tests).
        creds: the credentials the caller already holds (the ones a 401 answered), saving a read;
            default: read from ``source``.

    Returns:
        The current credentials.

    Raises:
        ProviderAuthError: the refresh was refused; the user must reconnect.
        ProviderUnavailable: the token endpoint could not be reached or failed (5xx); retriable.
    """
    from ..kit.auth import GitHubAppAuth, OAuth2Auth

    creds = source.load() if creds is None else creds
    auth = plugin.auth
    if not isinstance(auth, (OAuth2Auth, GitHubAppAuth)):
        return creds
    app = isinstance(auth, GitHubAppAuth)

    def stale(c: dict[str, Any]) -> bool:
        if app and not c.get("access_token"):
            return True  # an installation has no token until the first one is minted
        return needs_refresh(c, auth.refresh_leeway_seconds, now)

    if not force and not stale(creds):
        return creds
    seen_token = creds.get("access_token")
    with connection_lock(store, connection.id):
        latest = source.load()
        if force:
            if latest.get("access_token") != seen_token:
                return latest
        elif not stale(latest):
            return latest
        if isinstance(auth, GitHubAppAuth):
            fresh = _installation_token(plugin, auth, connection, latest, source)
        elif not latest.get("refresh_token") and auth.refresh is None:
            msg = (f"{plugin.id}: the access token expired and no refresh token is stored; "
                   f"reconnect {connection.id!r}")
            raise ProviderAuthError(msg, provider=plugin.id, status=401)
        else:
            fresh = _refresh(plugin, auth, connection, latest, source)
        merged = {**latest, **fresh}
        # Persist before anyone uses the new tokens: a rotated refresh token lost now is lost forever.
        source.save(merged)
        return merged


def github_app_jwt(plugin: PluginDef) -> str:
    """The app JWT of a ``github_app`` plugin, from its App ID and private-key environment variables."""
    from ..kit.auth import GitHubAppAuth
    from ..kit.errors import NotConfigured
    from ..kit.github_app import app_jwt

    auth = plugin.auth
    if not isinstance(auth, GitHubAppAuth):
        msg = f"plugin {plugin.id!r} is not a GitHub App"
        raise NotConfigured(msg)
    app_id, key = os.environ.get(auth.app_id_env, ""), os.environ.get(auth.private_key_env, "")
    if not app_id or not key:
        missing = auth.app_id_env if not app_id else auth.private_key_env
        raise NotConfigured(f"{missing} is not set on the server")
    try:
        return app_jwt(app_id, key)
    except ValueError as exc:
        raise NotConfigured(f"{auth.private_key_env}: {exc}") from None


def _installation_token(
    plugin: PluginDef, auth: GitHubAppAuth, connection: ConnectionRow, creds: dict[str, Any],
    source: CredentialSource,
) -> dict[str, Any]:
    """``POST /app/installations/{id}/access_tokens`` with the app JWT, through the shared client."""
    from ..kit.errors import ProviderResponseError
    from ..kit.http.auth import BearerAuth
    installation = str(creds.get("installation_id") or "")
    if not installation.isdigit() and creds.get("access_token"):
        # The token alternative (a personal access token) cannot be minted again: it was revoked or expired.
        msg = f"{plugin.id}: the provider refused the stored access token (revoked or expired); reconnect"
        raise ProviderAuthError(msg, provider=plugin.id, status=401)
    if not installation.isdigit():
        msg = f"{plugin.id}: no installation id is stored; reconnect {connection.id!r}"
        raise ProviderAuthError(msg, provider=plugin.id, status=401)
    base, _, path = auth.token_url.removeprefix("{").partition("}")
    token = github_app_jwt(plugin)
    client = source.http_client(base, secrets=[token], auth=BearerAuth(token), timeout=HTTP_TIMEOUT_S)
    try:
        with client:
            body = client.post_json(path.replace("{installation_id}", str(int(installation))),
                                    headers={"Accept": "application/vnd.github+json"})
    except ProviderAuthError as exc:
        if exc.status != 403:
            raise
        # What GitHub answers for a suspended installation: "403 Forbidden" alone would not say what to do.
        msg = (f"{plugin.id}: GitHub refused a token for installation {installation} (403): the installation is"
               " suspended (unsuspend it on GitHub) or no longer grants the app's permissions")
        raise ProviderAuthError(msg, provider=plugin.id, status=403) from None
    except ProviderResponseError as exc:
        if exc.status != 404:
            raise
        msg = f"{plugin.id}: installation {installation} is gone (the app was uninstalled); reconnect"
        raise ProviderAuthError(msg, provider=plugin.id, status=404) from None
    if not isinstance(body, dict) or not body.get("token"):
        raise ProviderAuthError(f"{plugin.id}: the installation token answer has no token", provider=plugin.id)
    expires = _expires_at({"expires_at": body.get("expires_at")})
    return {"access_token": body["token"], "expires_at": expires.isoformat() if expires else None}


def _refresh(plugin: PluginDef, auth: OAuth2Auth, connection: ConnectionRow, creds: dict[str, Any],
             source: CredentialSource) -> dict[str, Any]:
    if auth.refresh is not None:
        from ..kit.context import AuthCtx

        ctx = AuthCtx(plugin_id=plugin.id, project_id=connection.project_id, services=source,
                      connection_id=connection.id)
        out = auth.refresh(dict(creds), ctx)
        if inspect.isawaitable(out):
            out = asyncio.run(_await(out))
        return _normalize(dict(out))
    return _standard_grant(plugin, auth, creds)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _authlib_http_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """The (status error, transport error) classes authlib's client may raise.

    authlib 1.9 runs on ``httpx2`` whenever that package is installed (other packages pull it in, e.g.
    huggingface_hub) and on ``httpx`` otherwise; its exceptions then come from that module, so both are
    caught: a 403 from a token endpoint must read as a refused grant whichever is installed.
    """
    import httpx

    status: list[type[Exception]] = [httpx.HTTPStatusError]
    transport: list[type[Exception]] = [httpx.TransportError]
    try:
        import httpx2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        status.append(httpx2.HTTPStatusError)
        transport.append(httpx2.TransportError)
    return tuple(status), tuple(transport)


def _standard_grant(plugin: PluginDef, auth: OAuth2Auth, creds: dict[str, Any]) -> dict[str, Any]:
    """POST ``grant_type=refresh_token`` to the plugin's token URL through authlib (form or JSON body, as
    the plugin's ``token_body`` declares)."""
    import httpx
    from authlib.integrations.httpx_client import OAuthError

    from .oauth_client import oauth_client
    from .urls import resolve_url

    url = resolve_url(plugin, auth.token_url)
    client = oauth_client(
        auth, client_id=os.environ.get(auth.client_id_env), client_secret=os.environ.get(auth.client_secret_env),
        timeout=HTTP_TIMEOUT_S, trust_env=False,
    )
    path = httpx.URL(url).path
    status_errors, transport_errors = _authlib_http_errors()
    try:
        with client:
            token = client.refresh_token(url, refresh_token=creds.get("refresh_token"), **auth.extra_token_params)
    except OAuthError as exc:
        msg = f"{plugin.id} POST {path}: token refresh refused ({exc.error}); reconnect the account"
        raise ProviderAuthError(msg, provider=plugin.id, status=400) from None
    except status_errors as exc:
        status = exc.response.status_code  # type: ignore[attr-defined]
        msg = f"{plugin.id} POST {path}: token refresh failed with {status}"
        if status >= 500 or status == 429:
            raise ProviderUnavailable(msg, provider=plugin.id, status=status) from None
        raise ProviderAuthError(msg + "; reconnect the account", provider=plugin.id, status=status) from None
    except transport_errors as exc:
        msg = f"{plugin.id} POST {path}: token endpoint unreachable ({type(exc).__name__})"
        raise ProviderUnavailable(msg, provider=plugin.id) from None
    if not token.get("access_token"):
        msg = f"{plugin.id} POST {path}: token refresh answered without an access_token"
        raise ProviderAuthError(msg, provider=plugin.id)
    return _normalize(dict(token))


def _normalize(token: dict[str, Any]) -> dict[str, Any]:
    """Keep the credential keys hissuno stores; ``expires_at`` as ISO 8601 UTC."""
    out = {k: v for k, v in token.items() if k in ("access_token", "refresh_token", "token_type", "scope")}
    if not out.get("refresh_token"):
        out.pop("refresh_token", None)
    expires = token.get("expires_at")
    if expires is None and token.get("expires_in") is not None:
        expires = datetime.now(UTC) + timedelta(seconds=float(token["expires_in"]))
    if expires is not None:
        parsed = _expires_at({"expires_at": expires})
        out["expires_at"] = parsed.isoformat() if parsed else None
    for key, value in token.items():
        # Plugin-specific keys a custom refresh returns (e.g. an instance URL) are kept as given.
        if key not in out and key not in ("expires_in", "expires_at"):
            out.setdefault(key, value)
    return out
