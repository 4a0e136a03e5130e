"""Connect flows: ``api_key``, ``oauth2`` (authlib), ``github_app`` and ``custom``.

Every flow ends in the same place, ``save_auth_result``: one upsert per (project, plugin, external
account), so connecting the same account again is a reconnect; ``multi_instance=False`` refuses a
second account; the credentials go to the configured credential store, and a brand-new row is
removed again if they cannot be saved, so nothing is half-written.

Fixes over the original (reference 2.3): a failed ``test`` is a 400 carrying the plugin's message; the
OAuth state is encrypted and authenticated (Fernet), expires, is single-use (``oauth_states``) and bound
to the user who started the flow; a reconnect target must belong to the same project and plugin and
the provider account must not change; ``github_app`` works end to end; a custom plugin reads the
request body itself and has a return leg.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import registry, settings
from ..credentials import configured_backend, credential_store
from ..kit.auth import ApiKeyAuth, AuthResult, CustomAuth, GitHubAppAuth, OAuth2Auth, OAuthTokens
from ..kit.context import AuthCtx, Request
from ..kit.define import PluginDef
from ..kit.errors import HissunoError, InputError, NotFoundError, StoreError
from ..kit.redaction import redact_text, secret_values
from ..store import connections as repo
from ..store.connections import ConnectionRow
from ..store.db import Store
from .handlers import call_handler
from .services import make_http_client, resolve_base, resolve_url

log = logging.getLogger(__name__)
DEFAULT_STATE_TTL = 600


class ConnectFailed(InputError):
    """The provider (or the plugin's ``test``) refused the credentials."""

    code = "connect_failed"


class ConflictError(InputError):
    """The request conflicts with existing state (``multi_instance=False``, account changed)."""

    code = "conflict"
    http_status = 409


class NotConfigured(HissunoError):
    """An app-level setting the flow needs (client id, app slug) is missing on the server."""

    code = "not_configured"
    http_status = 503


class StateError(InputError):
    """An OAuth/app-install state token is invalid, expired, replayed or for someone else."""

    code = "invalid_state"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"state: {reason.replace('_', ' ')}", field="state")


def _oauth_client(**kwargs: Any) -> Any:
    import warnings

    with warnings.catch_warnings():
        # authlib 1.9 flags its httpx integration as moving to httpx2; the API used here is unchanged.
        warnings.simplefilter("ignore")
        from authlib.integrations.httpx_client import OAuth2Client
    return OAuth2Client(**kwargs)


# -- state tokens ---------------------------------------------------------------------------------


def _fernet() -> Any:
    from cryptography.fernet import Fernet

    key = base64.urlsafe_b64encode(hashlib.sha256(b"hissuno-oauth-state:" + settings.secret_key()).digest())
    return Fernet(key)


def state_ttl() -> int:
    """Lifetime of a state token in seconds (``HISSUNO_OAUTH_STATE_TTL``, default 600)."""
    try:
        return max(1, int(os.environ.get("HISSUNO_OAUTH_STATE_TTL", DEFAULT_STATE_TTL)))
    except ValueError:
        return DEFAULT_STATE_TTL


def issue_state(store: Store, data: Mapping[str, Any]) -> str:
    """Encrypt ``data`` (it may hold a PKCE verifier) with a fresh nonce recorded for single use."""
    nonce = secrets.token_urlsafe(18)
    ttl = state_ttl()
    with store.connection() as conn:
        conn.execute("DELETE FROM oauth_states WHERE expires_at < now() - interval '1 day'")
        conn.execute("INSERT INTO oauth_states (nonce, expires_at) VALUES (%s, now() + make_interval(secs => %s))",
                     (nonce, ttl))
    token: bytes = _fernet().encrypt(json.dumps({**data, "n": nonce}, separators=(",", ":")).encode())
    return token.decode()


def read_state(token: str) -> dict[str, Any]:
    """Decrypt and authenticate a state token, checking its age; no database access.

    Raises:
        StateError: invalid_state (tampered or foreign) or expired_state.
    """
    from cryptography.fernet import InvalidToken

    f = _fernet()
    try:
        raw = f.decrypt(token.encode())
    except (InvalidToken, ValueError, TypeError):
        raise StateError("invalid_state") from None
    try:
        f.decrypt(token.encode(), ttl=state_ttl())
    except InvalidToken:
        raise StateError("expired_state") from None
    data: dict[str, Any] = json.loads(raw)
    return data


def consume_state(store: Store, token: str) -> dict[str, Any]:
    """``read_state`` then mark its nonce used; a second use is ``replayed_state``."""
    data = read_state(token)
    with store.connection() as conn:
        cur = conn.execute(
            "UPDATE oauth_states SET used_at = now() WHERE nonce = %s AND used_at IS NULL AND expires_at > now()",
            (data.get("n"),),
        )
    if cur.rowcount != 1:
        raise StateError("replayed_state")
    return data


# -- persistence ----------------------------------------------------------------------------------


def _as_result(value: Any, plugin: PluginDef) -> AuthResult:
    if isinstance(value, AuthResult):
        return value
    if isinstance(value, Mapping):
        try:
            return AuthResult.model_validate(dict(value))
        except Exception as exc:
            msg = f"plugin {plugin.id!r} returned an invalid auth result: {type(exc).__name__}"
            raise StoreError(msg) from None
    msg = f"plugin {plugin.id!r} returned {type(value).__name__}; expected an AuthResult"
    raise StoreError(msg)


def save_auth_result(
    store: Store, plugin: PluginDef, project_id: str, result: AuthResult | Mapping[str, Any], *,
    reconnect_id: str | None = None,
) -> tuple[ConnectionRow, bool]:
    """Upsert the connection and store its credentials; returns (row, created).

    Raises:
        NotFoundError: the reconnect target is not a connection of this project and plugin.
        ConflictError: the reconnect changed provider account, or ``multi_instance=False`` is violated.
    """
    res = _as_result(result, plugin)
    if reconnect_id:
        target = reconnect_target(store, plugin, project_id, reconnect_id)
        if target.external_account_id != res.external_account_id:
            msg = (f"connection_id: the provider account changed (connected {target.account_label!r}); "
                   "connect it as a new connection instead")
            raise ConflictError(msg, field="connection_id")
    if not plugin.multi_instance:
        others = [c for c in repo.list_connections(store, project_id=project_id, plugin_id=plugin.id)
                  if c.external_account_id != res.external_account_id]
        if others:
            msg = (f"plugin {plugin.id!r} allows one connection per project; "
                   f"disconnect {others[0].account_label!r} first")
            raise ConflictError(msg, field="plugin_id")
    row, created = repo.upsert_connection(
        store, project_id=project_id, plugin_id=plugin.id, external_account_id=res.external_account_id,
        account_label=res.account_label, settings=res.settings, credentials_backend=configured_backend(),
    )
    try:
        credential_store(store, row.credentials_backend).save(row, dict(res.credentials))
    except Exception as exc:
        if created:
            repo.delete_connection(store, row.id)
        msg = f"could not store the credentials of {plugin.id!r}: {type(exc).__name__}"
        raise StoreError(msg) from exc
    return row, created


# -- contexts -------------------------------------------------------------------------------------


@dataclass
class AuthServices:
    """What an AuthCtx offers: HTTP, base URLs, saving connections, state tokens."""

    plugin: PluginDef
    store: Store
    project_id: str
    user_id: str
    secrets: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)

    def http_client(self, base: str = "API", **kwargs: Any) -> Any:
        from .logging import PluginLogger

        return make_http_client(self.plugin, base, secrets=self.secrets,
                                logger=PluginLogger(f"{self.plugin.id}:connect", self.secrets), **kwargs)

    def base_url(self, name: str) -> str:
        return resolve_base(self.plugin, name)

    def save_connection(self, result: Any) -> str:
        row, _ = save_auth_result(self.store, self.plugin, self.project_id, result)
        self.saved.append(row.id)
        return row.id

    def update_connection(self, connection_id: str, **changes: Any) -> None:
        row = repo.get_connection(self.store, connection_id, plugin_id=self.plugin.id)
        if str(row.project_id) != str(self.project_id):
            raise NotFoundError(f"connection {connection_id!r} not found", field="connection_id")
        creds = changes.pop("credentials", None)
        repo.update_connection(self.store, connection_id, account_label=changes.get("account_label"),
                               settings=changes.get("settings"))
        if creds is not None:
            credential_store(self.store, row.credentials_backend).save(row, dict(creds))

    def sign_state(self, data: Mapping[str, Any]) -> str:
        return issue_state(self.store, {"k": "custom", "p": self.plugin.id, "prj": self.project_id,
                                        "u": self.user_id, "d": dict(data)})

    def verify_state(self, token: str) -> dict[str, Any]:
        data = consume_state(self.store, token)
        if data.get("k") != "custom" or data.get("p") != self.plugin.id:
            raise StateError("invalid_state")
        if data.get("u") and self.user_id and data["u"] != self.user_id:
            raise StateError("user_mismatch")
        self.project_id = data.get("prj") or self.project_id
        return dict(data.get("d") or {})


def _ctx(plugin: PluginDef, store: Store, project_id: str, user_id: str, connection_id: str | None = None,
         secrets_: list[str] | None = None) -> AuthCtx:
    from .logging import PluginLogger

    svc = AuthServices(plugin, store, project_id, user_id, list(secrets_ or []))
    return AuthCtx(plugin_id=plugin.id, project_id=project_id, services=svc, connection_id=connection_id,
                   logger=PluginLogger(f"{plugin.id}:connect", svc.secrets))


# -- api_key --------------------------------------------------------------------------------------


def reconnect_target(store: Store, plugin: PluginDef, project_id: str, connection_id: str) -> repo.ConnectionRow:
    """The connection a reconnect names; 404 unless it is this plugin's and in this project."""
    target = repo.get_connection(store, connection_id, plugin_id=plugin.id)
    if str(target.project_id) != str(project_id):
        raise NotFoundError(f"connection {connection_id!r} not found", field="connection_id")
    return target


def _check_fields(auth: ApiKeyAuth | CustomAuth, raw: Any) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InputError("credentials: expected an object", field="credentials")
    known = {f.id for f in auth.fields}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        # A typo (``--set workspce=x``) must not be dropped silently.
        expected = ", ".join(sorted(known)) or "no fields"
        raise InputError(f"credentials.{unknown[0]}: unknown field; expected {expected}",
                         field=f"credentials.{unknown[0]}")
    out: dict[str, Any] = {}
    for f in auth.fields:
        val = raw.get(f.id)
        if isinstance(val, str):
            val = val.strip()
        if val in (None, ""):
            if f.required:
                raise InputError(f"credentials.{f.id}: {f.label} is required", field=f"credentials.{f.id}")
            continue
        if not isinstance(val, (str, int, float, bool)):
            raise InputError(f"credentials.{f.id}: expected text", field=f"credentials.{f.id}")
        if f.pattern and not re.fullmatch(f.pattern, str(val)):
            raise InputError(f"credentials.{f.id}: {f.label} has an unexpected format",
                             field=f"credentials.{f.id}")
        out[f.id] = val
    return out


def connect_api_key(
    plugin: PluginDef, store: Store, *, project_id: str, user_id: str, credentials: Any,
    reconnect_id: str | None = None,
) -> dict[str, Any]:
    """Run the plugin's ``test``; on success upsert the connection. A failed test writes nothing.

    Raises:
        InputError: a field is missing or malformed (names it).
        ConnectFailed: (400) ``test`` raised; the message is the plugin's, with secrets masked.
    """
    auth = plugin.auth
    assert isinstance(auth, ApiKeyAuth)
    creds = _check_fields(auth, credentials)
    secret_vals = [str(v) for k, v in creds.items() if k in plugin.secret_fields] + secret_values(creds)
    if reconnect_id:
        reconnect_target(store, plugin, project_id, reconnect_id)
    ctx = _ctx(plugin, store, project_id, user_id, reconnect_id, secret_vals)
    try:
        result = _as_result(call_handler(auth.test, dict(creds), ctx), plugin)
    except StoreError:
        raise
    except Exception as exc:
        text = redact_text(str(exc), secret_vals) or type(exc).__name__
        # A plugin that names the offending field (InputError(field=...)) gets it passed on.
        named = getattr(exc, "field", None)
        raise ConnectFailed(text, field=f"credentials.{named}" if named else "credentials") from None
    if not result.credentials:
        result = result.model_copy(update={"credentials": creds})
    row, created = save_auth_result(store, plugin, project_id, result, reconnect_id=reconnect_id)
    return {"success": True, "connection_id": row.id, "account_label": row.account_label, "created": created}


# -- oauth2 ---------------------------------------------------------------------------------------


def _client_credentials(auth: OAuth2Auth) -> tuple[str, str]:
    cid = os.environ.get(auth.client_id_env, "")
    csec = os.environ.get(auth.client_secret_env, "")
    if not cid:
        raise NotConfigured(f"{auth.client_id_env} is not set on the server")
    return cid, csec


def start_oauth(
    plugin: PluginDef, store: Store, *, project_id: str, user_id: str, redirect_uri: str,
    reconnect_id: str | None = None,
) -> dict[str, Any]:
    """Build the authorize URL with an encrypted, single-use state (and a PKCE challenge when declared)."""
    auth = plugin.auth
    assert isinstance(auth, OAuth2Auth)
    client_id, _ = _client_credentials(auth)
    if reconnect_id:
        reconnect_target(store, plugin, project_id, reconnect_id)
    verifier = secrets.token_urlsafe(48) if auth.pkce else None
    state = issue_state(store, {"k": "oauth2", "p": plugin.id, "prj": project_id, "u": user_id,
                                "c": reconnect_id, "v": verifier, "r": redirect_uri})
    scope = auth.scope_separator.join(auth.scopes) or None
    client = _oauth_client(client_id=client_id, scope=scope, redirect_uri=redirect_uri,
                          code_challenge_method="S256" if auth.pkce else None)
    url, _ = client.create_authorization_url(
        resolve_url(plugin, auth.authorize_url), state=state, code_verifier=verifier, **auth.extra_auth_params
    )
    return {"authorize_url": url}


def _tokens(token: Mapping[str, Any]) -> OAuthTokens:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise ConnectFailed("token response is missing access_token", field="code")
    expires_at = None
    if isinstance(token.get("expires_at"), (int, float)):
        expires_at = datetime.fromtimestamp(float(token["expires_at"]), UTC).isoformat()
    elif isinstance(token.get("expires_in"), (int, float)):
        expires_at = (datetime.now(UTC) + timedelta(seconds=float(token["expires_in"]))).isoformat()
    return OAuthTokens(access_token=access, refresh_token=token.get("refresh_token"), expires_at=expires_at,
                       token_type=token.get("token_type"), scope=token.get("scope"), raw=dict(token))


def _exchange(plugin: PluginDef, auth: OAuth2Auth, code: str, data: Mapping[str, Any]) -> OAuthTokens:
    client_id, client_secret = _client_credentials(auth)
    client = _oauth_client(client_id=client_id, client_secret=client_secret, redirect_uri=data.get("r"),
                          token_endpoint_auth_method=auth.token_endpoint_auth_method, timeout=20)
    kwargs: dict[str, Any] = dict(auth.extra_token_params)
    if data.get("v"):
        kwargs["code_verifier"] = data["v"]
    try:
        with client:
            token = client.fetch_token(resolve_url(plugin, auth.token_url), grant_type="authorization_code",
                                       code=code, headers={"Accept": "application/json"}, **kwargs)
    except HissunoError:
        raise
    except Exception as exc:
        reason = getattr(exc, "error", None) or type(exc).__name__
        raise ConnectFailed(f"token exchange failed: {reason}", field="code") from None
    return _tokens(token)


def finish_callback(
    plugin_id: str, query: Mapping[str, str], store: Store, *, user_id: str | None
) -> dict[str, str]:
    """The OAuth2 / GitHub App return leg; returns the query of the page to send the browser to.

    Every refusal is an ``error`` value in that query (``invalid_state``, ``expired_state``,
    ``replayed_state``, ``user_mismatch``, ``plugin_mismatch``, the provider's error, ...) and writes
    no connection.
    """
    plugin = registry.get_plugin(plugin_id)
    out = {"plugin": plugin.id}
    try:
        token = query.get("state")
        if not token:
            raise StateError("missing_state")
        # Check binding before consuming, so a stranger's attempt cannot burn the rightful user's state.
        data = read_state(token)
        if data.get("p") != plugin.id or data.get("k") not in ("oauth2", "github_app"):
            raise StateError("plugin_mismatch")
        if data.get("u") and data["u"] != (user_id or ""):
            raise StateError("user_mismatch")
        consume_state(store, token)
        project_id = str(data.get("prj") or settings.default_project_id())
        ctx = _ctx(plugin, store, project_id, str(user_id or ""), data.get("c"))
        auth = plugin.auth
        if isinstance(auth, OAuth2Auth):
            if query.get("error"):
                return {**out, "error": re.sub(r"[^a-z0-9_]", "", query["error"].lower())[:60] or "provider_error"}
            code = query.get("code")
            if not code:
                raise InputError("code: missing", field="code")
            tokens = _exchange(plugin, auth, code, data)
            ctx.services.secrets.extend(filter(None, [tokens.access_token, tokens.refresh_token]))
            result = _as_result(call_handler(auth.on_token_exchanged, tokens, ctx), plugin)
            base = {k: v for k, v in tokens.model_dump(exclude={"raw"}).items() if v is not None}
            result = result.model_copy(update={"credentials": {**base, **result.credentials}})
        elif isinstance(auth, GitHubAppAuth):
            raw_id = query.get("installation_id", "")
            if not raw_id.isdigit():
                raise InputError("installation_id: expected a number", field="installation_id")
            result = _as_result(call_handler(auth.on_installation, int(raw_id), ctx), plugin)
            result = result.model_copy(update={"credentials": {"installation_id": int(raw_id), **result.credentials}})
        else:
            raise StateError("plugin_mismatch")
        row, _ = save_auth_result(store, plugin, project_id, result, reconnect_id=data.get("c"))
    except StateError as exc:
        return {**out, "error": exc.reason}
    except HissunoError as exc:
        log.warning("connect callback of %s refused: %s", plugin.id, exc.code)
        return {**out, "error": exc.code}
    except Exception:
        log.exception("connect callback of %s failed", plugin.id)
        return {**out, "error": "internal_error"}
    return {**out, "connection": row.id, "connected": "1"}


# -- github_app -----------------------------------------------------------------------------------


def start_github_app(
    plugin: PluginDef, store: Store, *, project_id: str, user_id: str, reconnect_id: str | None = None
) -> dict[str, Any]:
    """The app's install page, carrying a state GitHub hands back to the callback with ``installation_id``."""
    from urllib.parse import urlencode

    auth = plugin.auth
    assert isinstance(auth, GitHubAppAuth)
    slug = os.environ.get(auth.app_slug_env, "")
    if not slug:
        raise NotConfigured(f"{auth.app_slug_env} is not set on the server")
    if reconnect_id:
        reconnect_target(store, plugin, project_id, reconnect_id)
    state = issue_state(store, {"k": "github_app", "p": plugin.id, "prj": project_id, "u": user_id,
                                "c": reconnect_id})
    url = resolve_url(plugin, auth.install_url.replace("{slug}", slug))
    return {"authorize_url": url + ("&" if "?" in url else "?") + urlencode({"state": state})}


# -- custom ---------------------------------------------------------------------------------------


def _custom_answer(store: Store, plugin: PluginDef, project_id: str, value: Any) -> Any:
    if isinstance(value, (AuthResult,)):
        row, created = save_auth_result(store, plugin, project_id, value)
        return {"success": True, "connection_id": row.id, "account_label": row.account_label, "created": created}
    return value


def connect_custom(
    plugin: PluginDef, store: Store, request: Request, *, project_id: str, user_id: str,
    leg: str = "connect",
) -> Any:
    """Hand the untouched request to the plugin's ``connect`` (or ``callback``); returns its answer.

    An AuthResult is saved here; a Response or dict is returned for the route to render.
    """
    auth = plugin.auth
    assert isinstance(auth, CustomAuth)
    fn = auth.connect if leg == "connect" else auth.callback
    if fn is None:
        raise NotFoundError(f"plugin {plugin.id!r} has no connect callback", field="plugin_id")
    ctx = _ctx(plugin, store, project_id, user_id)
    try:
        value = call_handler(fn, request, ctx)
    except HissunoError:
        raise
    except Exception as exc:
        raise ConnectFailed(redact_text(str(exc)) or type(exc).__name__, field="credentials") from None
    # A callback may have verified a state naming another project.
    return _custom_answer(store, plugin, ctx.services.project_id, value), ctx.services.saved


def start_connect(
    plugin_id: str, body: Mapping[str, Any], store: Store, *, user_id: str, redirect_uri: str,
    request: Request | None = None,
) -> Any:
    """Dispatch ``POST .../connect`` by auth type."""
    plugin = registry.get_plugin(plugin_id)
    project_id = str(body.get("project_id") or body.get("projectId") or settings.default_project_id())
    reconnect = body.get("connection_id") or body.get("connectionId")
    if reconnect is not None and not isinstance(reconnect, str):
        raise InputError("connection_id: expected a string", field="connection_id")
    auth = plugin.auth
    if isinstance(auth, ApiKeyAuth):
        return connect_api_key(plugin, store, project_id=project_id, user_id=user_id,
                               credentials=body.get("credentials"), reconnect_id=reconnect)
    if isinstance(auth, OAuth2Auth):
        return start_oauth(plugin, store, project_id=project_id, user_id=user_id, redirect_uri=redirect_uri,
                           reconnect_id=reconnect)
    if isinstance(auth, GitHubAppAuth):
        return start_github_app(plugin, store, project_id=project_id, user_id=user_id, reconnect_id=reconnect)
    assert request is not None
    answer, _ = connect_custom(plugin, store, request, project_id=project_id, user_id=user_id)
    return answer
