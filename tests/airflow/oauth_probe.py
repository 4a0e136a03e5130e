"""``afoauth``: an OAuth 2.0 test plugin plus a fake token endpoint that rotates refresh tokens.

The fake (``tests.fakes.oauth.FakeOAuthServer``) runs on 127.0.0.1 in the test process. Each refresh
answers a new access token *and* a new refresh token, and a refresh token that was used once is rejected
with ``invalid_grant``, as providers with rotation do. ``GET /me`` accepts only live access tokens.
"""

from __future__ import annotations

from typing import Any

from hissuno_airflow.kit import define_plugin
from hissuno_airflow.kit.auth import AuthResult, OAuth2Auth
from hissuno_airflow.kit.streams import Stream
from tests.fakes.oauth import FakeOAuthServer

CLIENT_ID, CLIENT_SECRET = "afoauth-client", "afoauth-client-secret"


def _exchanged(tokens: Any, ctx: Any) -> AuthResult:
    return AuthResult(external_account_id="o-1", account_label="OAuth Probe")


def _sync_me(ctx: Any) -> None:
    """Calls the provider with the access token it was given: a revoked one gets a 401."""
    from hissuno_airflow.kit.http.auth import BearerAuth

    with ctx.http_client("AUTH", auth=BearerAuth(ctx.credentials["access_token"])) as client:
        client.get_json("/me")
    ctx.ingest.issue(external_id="me", name="Reached the API")


plugin = define_plugin(
    id="afoauth", name="OAuth Probe", description="OAuth test plugin.", category="issues",
    icon={"src": "/x.svg"}, base_urls={"AUTH": "https://auth.invalid"},
    auth=OAuth2Auth(authorize_url="{AUTH}/authorize", token_url="{AUTH}/oauth/token",
                    client_id_env="AFOAUTH_CLIENT_ID", client_secret_env="AFOAUTH_CLIENT_SECRET",
                    on_token_exchanged=_exchanged),
    streams={"items": Stream(kind="issues", label="Items", sync=lambda ctx: None),
             "me": Stream(kind="issues", label="Me", sync=_sync_me)},
)


class TokenServer(FakeOAuthServer):
    """The provider: the shared OAuth fake with rotation (client_secret_post, ``/oauth/token``), tokens named
    ``access-<n>``/``refresh-<n>``, and ``GET /me`` accepting only live access tokens. ``refresh_token`` is
    the one refresh token the stored credentials may use."""

    name = "afoauth"
    client_id, client_secret = CLIENT_ID, CLIENT_SECRET
    token_path = "/oauth/token"
    access_prefix, refresh_prefix = "access-", "refresh-"
    numbered_tokens = True

    def __init__(self, refresh_token: str) -> None:
        super().__init__()
        self.seed_refresh_token(refresh_token)

    def deny_api(self) -> None:
        """From now on the API refuses every token (an app uninstalled, a scope removed)."""
        self.inject("/me", 401, times=None, json={"error": "invalid_token"})
