"""How a user connects Intercom: the app's OAuth install, or a pasted workspace access token.

A plugin declares one auth schema, so the server's configuration picks it (``auth_mode``): with an
Intercom app's ``INTERCOM_CLIENT_ID`` set (the app whose client secret, ``INTERCOM_CLIENT_SECRET``, also
signs webhooks) the connect dialog is Intercom's OAuth install; without one it asks for the access token
of a private app. Either way the connection stores ``{access_token, region}``, so syncs, webhooks and a
later reconnect in the other mode work on the same connection.

Intercom OAuth (providers.md 5.1): no ``scope`` parameter (permissions are the app's checkboxes), the
token endpoint is ``/auth/eagle/token`` on the API host with the client secret in the body, and the
token never expires (no refresh token, no ``expires_in``): it lives until the app is uninstalled.
"""

from __future__ import annotations

import os
from typing import Any

from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthCtx,
    AuthResult,
    Field,
    OAuth2Auth,
    OAuthTokens,
    ProviderResponseError,
)
from hissuno_airflow.kit.http import ProviderClient

from .client import REGIONS, IntercomClient, base_for, client_options, region_of

CLIENT_ID_ENV = "INTERCOM_CLIENT_ID"
CLIENT_SECRET_ENV = "INTERCOM_CLIENT_SECRET"


def connected_client(ctx: Any, credentials: Any) -> ProviderClient:
    """A client on the region's API host, signing with the connection's token."""
    client: ProviderClient = ctx.http_client(base_for(credentials.get("region")),
                                             **client_options(credentials["access_token"]))
    return client


def _workspace(token: str, region: str, ctx: AuthCtx) -> dict[str, Any]:
    """``GET /me`` on the region's host: the workspace (``app``); a refused token raises ProviderAuthError."""
    with connected_client(ctx, {"access_token": token, "region": region}) as client:
        me = IntercomClient(client).me()
    app = me.get("app") if isinstance(me, dict) else None
    if not isinstance(app, dict) or not app.get("id_code"):
        msg = "intercom GET /me: the answer names no workspace (app.id_code); is this an Intercom access token?"
        raise ProviderResponseError(msg, provider="intercom")
    return app


def _result(app: dict[str, Any], token: str, region: str) -> AuthResult:
    return AuthResult(external_account_id=str(app["id_code"]), account_label=str(app.get("name") or app["id_code"]),
                      credentials={"access_token": token, "region": region})


def check_token(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    """Connect with a pasted token: a bad region is named before any request; a refused token is a 400."""
    region = region_of(credentials.get("region"))
    token = str(credentials["access_token"])
    return _result(_workspace(token, region, ctx), token, region)


def on_token_exchanged(tokens: OAuthTokens, ctx: AuthCtx) -> AuthResult:
    """After the OAuth code exchange: ``/me`` on the API host that issued the token names the workspace,
    and its ``app.region`` picks the host later syncs use (the token is kept as Intercom sent it)."""
    app = _workspace(tokens.access_token, "US", ctx)
    region = str(app.get("region") or "US").strip().upper()
    return _result(app, tokens.access_token, region if region in REGIONS else "US")


TOKEN_FORM = ApiKeyAuth(
    fields=(
        Field(id="access_token", label="Access token", secret=True, required=True,
              help_text="Developer Hub -> your app -> Configure -> Authentication -> Access token"),
        Field(id="region", label="Workspace region", placeholder="US",
              help_text="US (default), EU or AU: where your Intercom workspace is hosted"),
    ),
    test=check_token,
)

OAUTH_INSTALL = OAuth2Auth(
    authorize_url="{AUTH}/oauth",
    token_url="{API}/auth/eagle/token",
    client_id_env=CLIENT_ID_ENV,
    client_secret_env=CLIENT_SECRET_ENV,
    on_token_exchanged=on_token_exchanged,
)


def auth_mode() -> OAuth2Auth | ApiKeyAuth:
    """The OAuth install when this server has an Intercom app (``INTERCOM_CLIENT_ID``), else the token form."""
    return OAUTH_INSTALL if os.environ.get(CLIENT_ID_ENV, "").strip() else TOKEN_FORM
