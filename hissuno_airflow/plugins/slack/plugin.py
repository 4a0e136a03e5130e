"""The ``slack`` plugin: Slack threads captured as sessions from the Events API, and the bot answering in them.

Connect: Slack's OAuth v2 (``oauth/v2/authorize`` then ``oauth.v2.access``, client credentials as HTTP
Basic, comma-joined scopes) through the runtime's OAuth flow: an encrypted, single-use, user-bound state, the
callback page, and the code exchange answered by ``on_token_exchanged``, which stores the bot token with the
bot user id, the team and the installer's email domain. With token rotation enabled on the app, Slack
answers ``expires_in`` and a refresh token; the runtime refreshes before expiry (rotating refresh tokens are
saved before use). A revoked token (``invalid_auth``, ``token_revoked``, an ``app_uninstalled`` event)
marks the connection "reconnect needed".

Events: one static URL (``/api/plugins/webhook/slack``) for every workspace; ``SLACK_SIGNING_SECRET``;
``resolve_connection`` finds the connections of the envelope's ``team_id``.
"""

from __future__ import annotations

import os
from typing import Any

from hissuno_airflow.kit import (
    AuthCtx,
    AuthResult,
    Icon,
    OAuth2Auth,
    OAuthTokens,
    ProviderAuthError,
    Request,
    RouteCtx,
    Stream,
    define_plugin,
)
from hissuno_airflow.kit.http import BearerAuth
from hissuno_airflow.kit.signatures import SlackSignature, WebhookEvent

from .client import SlackApiError, SlackClient
from .events import on_event, sync_threads
from .settings import EventSettings

LOGO = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' fill='#4a154b'/>"
    "<g stroke-width='3.2' stroke-linecap='round'><path d='M12 8v8' stroke='#36c5f0'/><path d='M8 20h8' "
    "stroke='#2eb67d'/><path d='M20 24v-8' stroke='#ecb22e'/><path d='M24 12h-8' stroke='#e01e5a'/></g></svg>"
)

BOT_SCOPES = ("app_mentions:read", "channels:history", "channels:join", "channels:read", "chat:write",
              "groups:history", "groups:read", "reactions:write", "users:read", "users:read.email")
"""The reference's bot scopes."""


def on_token_exchanged(tokens: OAuthTokens, ctx: AuthCtx) -> AuthResult:
    """``oauth.v2.access`` answered: check the bot token with ``auth.test``; keep bot user, team, domain."""
    raw = tokens.raw
    if raw.get("token_type") not in (None, "bot"):
        raise ProviderAuthError(f"slack: expected a bot token; got token_type {raw.get('token_type')!r}",
                                provider="slack")
    with ctx.http_client("API", auth=BearerAuth(tokens.access_token)) as http:
        slack = SlackClient(http)
        who = slack.auth_test()
        installer = raw.get("authed_user") if isinstance(raw.get("authed_user"), dict) else {}
        assert isinstance(installer, dict)
        domain = ""
        if installer.get("id"):
            try:
                profile = slack.user(str(installer["id"])).get("profile") or {}
            except SlackApiError:
                profile = {}
            email = str(profile.get("email") or "") if isinstance(profile, dict) else ""
            domain = email.rsplit("@", 1)[-1].lower() if "@" in email else ""
    team = raw.get("team") if isinstance(raw.get("team"), dict) else {}
    assert isinstance(team, dict)
    team_id = str(who.get("team_id") or team.get("id") or "")
    team_name = str(who.get("team") or team.get("name") or team_id)
    bot_user_id = str(raw.get("bot_user_id") or who.get("user_id") or "")
    creds: dict[str, Any] = {"bot_user_id": bot_user_id, "team_id": team_id, "team_name": team_name,
                             "app_id": raw.get("app_id"), "primary_domain": domain}
    return AuthResult(external_account_id=team_id, account_label=team_name,
                      credentials={k: v for k, v in creds.items() if v not in (None, "")},
                      settings={"workspace_id": team_id, "workspace_name": team_name,
                                "workspace_url": who.get("url")})


def resolve_connection(event: WebhookEvent, ctx: Any) -> list[str] | None:
    """The connections of the envelope's workspace (signature already verified by the intake)."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    inner = payload.get("event") if isinstance(payload.get("event"), dict) else {}
    assert isinstance(inner, dict)
    team = payload.get("team_id") or inner.get("team")
    if not team:
        return None
    return list(ctx.find_connections(str(team))) or None


def verify_signing(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """``{signing_configured}``: whether ``SLACK_SIGNING_SECRET`` is set (never its value)."""
    return {"signing_configured": bool(os.environ.get("SLACK_SIGNING_SECRET"))}


plugin = define_plugin(
    id="slack",
    name="Slack",
    description="Capture Slack threads as sessions and respond as the bot.",
    category="interactive",
    icon=Icon(inline_svg=LOGO),
    base_urls={"API": "https://slack.com/api", "AUTH": "https://slack.com"},
    auth=OAuth2Auth(
        scopes=BOT_SCOPES,
        scope_separator=",",
        authorize_url="{AUTH}/oauth/v2/authorize",
        token_url="{API}/oauth.v2.access",
        client_id_env="SLACK_CLIENT_ID",
        client_secret_env="SLACK_CLIENT_SECRET",
        token_endpoint_auth_method="client_secret_basic",
        # Slack's own SDK rotates 2 hours ahead of the 12-hour expiry.
        refresh_leeway_seconds=2 * 3600,
        on_token_exchanged=on_token_exchanged,
    ),
    webhook_signature=SlackSignature(),
    resolve_connection=resolve_connection,
    custom_handlers={"verify_signing": verify_signing},
    # No connection-wide budget: Slack limits per method (Tier 2 to 4, chat.postMessage about 1/s per
    # channel), so one shared pace would either starve the bot or exceed nothing; a 429 is waited out by
    # its Retry-After in the runtime's client.
    docs_url="https://docs.slack.dev/apis/events-api/",
    streams={
        "events": Stream(
            kind="sessions", label="Events",
            description="Slack threads as sessions, live from the Events API; the bot answers in interactive channels.",
            webhook=on_event, sync=sync_threads, frequencies=("webhook", "manual"), settings=EventSettings,
        ),
    },
)
