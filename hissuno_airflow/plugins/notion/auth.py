"""Connecting Notion: a public integration's OAuth (Basic-auth code exchange) or an internal token.

Both paths end in the same connection: the account is the workspace, named by ``GET /users/me`` (the
integration's bot user: ``bot.workspace_id`` and ``bot.workspace_name``; the OAuth token response's
``workspace_id``/``workspace_name`` when the bot user lacks them), so connecting a workspace by token
after connecting it by OAuth is a reconnect of the same connection, not a second one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from hissuno_airflow.kit import AuthCtx, AuthResult, HissunoError, InputError, ProviderResponseError, Request
from hissuno_airflow.kit.errors import ConnectFailed, NotConfigured
from hissuno_airflow.kit.http import BasicAuth

from .client import NotionClient, client_options

CLIENT_ID_ENV = "NOTION_CLIENT_ID"
CLIENT_SECRET_ENV = "NOTION_CLIENT_SECRET"
TOKEN_PREFIXES = ("ntn_", "secret_")
"""Internal integration tokens (``secret_`` is the older form)."""


def default_redirect_uri() -> str:
    """Where Notion sends the browser back: the custom return leg under ``HISSUNO_PUBLIC_URL``."""
    base = os.environ.get("HISSUNO_PUBLIC_URL", "http://127.0.0.1:8080/hissuno").rstrip("/")
    return f"{base}/api/plugins/notion/connect/callback"


def account(me: Mapping[str, Any], token_response: Mapping[str, Any] | None = None) -> tuple[str, str, dict[str, Any]]:
    """(external account id, label, settings) of the workspace a token belongs to."""
    raw_bot = me.get("bot")
    bot: Mapping[str, Any] = raw_bot if isinstance(raw_bot, Mapping) else {}
    tok: Mapping[str, Any] = token_response or {}
    workspace_id = bot.get("workspace_id") or tok.get("workspace_id")
    name = bot.get("workspace_name") or tok.get("workspace_name")
    if not workspace_id:
        # Older bot users name no workspace id: the bot itself is then the account.
        workspace_id = f"bot:{me.get('id')}"
    settings = {"workspaceId": str(workspace_id), "workspaceName": name, "workspaceIcon": tok.get("workspace_icon")}
    return str(workspace_id), str(name or workspace_id), {k: v for k, v in settings.items() if v is not None}


def _bot(ctx: AuthCtx, token: str) -> dict[str, Any]:
    with ctx.http_client("API", **client_options(token)) as http:
        return NotionClient(http).me()


def _token_from(body: Mapping[str, Any]) -> str | None:
    raw = body.get("credentials")
    creds: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    token = body.get("access_token") or creds.get("access_token") or body.get("token") or creds.get("token")
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip().startswith(TOKEN_PREFIXES):
        raise InputError("access_token: expected an internal integration token (ntn_... or secret_...)",
                         field="access_token")
    return token.strip()


def connect(request: Request, ctx: AuthCtx) -> Any:
    """``POST .../connect``: a token connects at once; without one, the Notion authorize URL."""
    body = request.json() or {}
    if not isinstance(body, Mapping):
        raise InputError("body: expected a JSON object", field="body")
    token = _token_from(body)
    if token is not None:
        me = _bot(ctx, token)
        ext, label, settings = account(me)
        return AuthResult(external_account_id=ext, account_label=label, settings=settings,
                          credentials={"access_token": token, "bot_id": me.get("id"), "token_type": "internal"})
    client_id = os.environ.get(CLIENT_ID_ENV, "")
    if not client_id or not os.environ.get(CLIENT_SECRET_ENV):
        raise NotConfigured(f"Notion OAuth is not configured: set {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} on the "
                            "server, or connect with an internal integration token (access_token)")
    redirect = body.get("redirect_uri") or body.get("redirectUri") or default_redirect_uri()
    if not isinstance(redirect, str) or not redirect.startswith(("http://", "https://")):
        raise InputError("redirect_uri: expected an http(s) URL", field="redirect_uri")
    state = ctx.sign_state({"r": redirect})
    query = urlencode({"client_id": client_id, "redirect_uri": redirect, "response_type": "code", "owner": "user",
                       "state": state})
    return {"authorize_url": f"{ctx.base_url('AUTH')}/oauth/authorize?{query}"}


def callback(request: Request, ctx: AuthCtx) -> AuthResult:
    """Notion's redirect back: check the state, exchange the code (HTTP Basic client auth, JSON body)."""
    data = ctx.verify_state(request.query.get("state", ""))
    if request.query.get("error"):
        raise ConnectFailed(f"Notion answered error={request.query['error'][:60]}: the authorization was refused",
                            field="code")
    code = request.query.get("code")
    if not code:
        raise InputError("code: missing from Notion's redirect", field="code")
    client_id, secret = os.environ.get(CLIENT_ID_ENV, ""), os.environ.get(CLIENT_SECRET_ENV, "")
    if not client_id or not secret:
        raise NotConfigured(f"Notion OAuth is not configured: set {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV}")
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": data.get("r")}
    try:
        with ctx.http_client("AUTH", auth=BasicAuth(client_id, secret),
                             headers={"Accept": "application/json"}) as http:
            tokens = http.post_json("/oauth/token", json=body)
    except HissunoError as exc:
        # Worded without "token": the redaction of messages masks what follows that word.
        raise ConnectFailed(f"Notion OAuth code exchange failed: {exc.code}", field="code") from None
    if not isinstance(tokens, Mapping) or not isinstance(tokens.get("access_token"), str):
        raise ProviderResponseError("Notion OAuth code exchange: no access_token in the answer", provider="notion")
    me = _bot(ctx, tokens["access_token"])
    ext, label, settings = account(me, tokens)
    creds = {"access_token": tokens["access_token"], "bot_id": tokens.get("bot_id") or me.get("id"),
             "token_type": "oauth"}
    if tokens.get("refresh_token"):
        creds["refresh_token"] = tokens["refresh_token"]
    return AuthResult(external_account_id=ext, account_label=label, settings=settings, credentials=creds)
