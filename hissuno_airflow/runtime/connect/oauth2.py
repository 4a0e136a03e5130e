"""The ``oauth2`` flow's outbound legs (authlib): the authorize URL with state and PKCE, the code exchange."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ...kit.auth import OAuth2Auth, OAuthTokens
from ...kit.define import PluginDef
from ...kit.errors import ConnectFailed, HissunoError, NotConfigured
from ...store.db import Store
from ..oauth_client import oauth_client
from ..services import resolve_url
from .accounts import reconnect_target
from .state import issue_state


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
    client = oauth_client(client_id=client_id, scope=scope, redirect_uri=redirect_uri,
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
    scope = token.get("scope")
    if isinstance(scope, list):  # Linear answered a JSON array of scopes (older apps); others a string
        scope = " ".join(str(s) for s in scope)
    return OAuthTokens(access_token=access, refresh_token=token.get("refresh_token"), expires_at=expires_at,
                       token_type=token.get("token_type"), scope=scope if isinstance(scope, str) else None,
                       raw=dict(token))


def exchange_code(plugin: PluginDef, auth: OAuth2Auth, code: str, data: Mapping[str, Any]) -> OAuthTokens:
    client_id, client_secret = _client_credentials(auth)
    client = oauth_client(auth, client_id=client_id, client_secret=client_secret, redirect_uri=data.get("r"),
                         timeout=20)
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
