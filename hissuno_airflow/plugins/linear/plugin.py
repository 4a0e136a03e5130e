"""The ``linear`` plugin: each team's issues, by GraphQL sync on update time and by signed webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from hissuno_airflow.kit import (
    AuthCtx,
    AuthResult,
    Icon,
    InputError,
    ListCtx,
    NotFoundError,
    OAuth2Auth,
    OAuthTokens,
    ProviderResponseError,
    RouteCtx,
    Stream,
    StreamInstance,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.context import Request
from hissuno_airflow.kit.http import BearerAuth
from hissuno_airflow.kit.signatures import LinearSignature, WebhookEvent

from .client import LinearClient, issue_filter
from .mapping import issue_fields

LOGO = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' fill='#5e6ad2'/>"
    "<path d='M7 18.5 13.5 25A9.5 9.5 0 0 1 7 18.5zM7 15.6 16.4 25a9.6 9.6 0 0 0 2.3-.6L7.6 13.3a9.6 9.6 0 0 0-.6"
    " 2.3zM8.5 11.4l12.1 12.1a9.5 9.5 0 1 0-12.1-12.1z' fill='#fff'/></svg>"
)
StateType = Literal["triage", "backlog", "unstarted", "started", "completed", "canceled"]


class IssueFilters(BaseModel):
    """Which issues of the team the ``issues`` stream reads (the cursor works on update time)."""

    from_date: datetime | None = None
    """Skip issues created before this time."""
    to_date: datetime | None = None
    """Skip issues created after this time."""
    state_types: list[StateType] = Field(default_factory=list)
    """Only issues whose workflow state has one of these types; empty: every state."""


def _api(ctx: SyncCtx | WebhookCtx | ListCtx | RouteCtx) -> LinearClient:
    # OAuth connections sign with the live access token by default (refreshed before expiry and on a 401).
    return LinearClient(ctx.http_client("API"))


def on_tokens(tokens: OAuthTokens, ctx: AuthCtx) -> AuthResult:
    """After the code exchange: the token's workspace is the account (its organization id)."""
    with LinearClient(ctx.http_client("API", auth=BearerAuth(tokens.access_token))) as api:
        me = api.viewer()
    org, viewer = me.get("organization") or {}, me.get("viewer") or {}
    if not org.get("id"):
        raise ProviderResponseError("linear query Viewer: the answer names no organization", provider="linear")
    return AuthResult(
        external_account_id=str(org["id"]),
        account_label=str(org.get("name") or org.get("urlKey") or org["id"]),
        settings={"organization_id": org["id"], "organization_name": org.get("name"),
                  "organization_url_key": org.get("urlKey"), "viewer_email": viewer.get("email")},
    )


def list_teams(ctx: ListCtx | RouteCtx) -> list[StreamInstance]:
    """Every team the connection can read, as ``issues`` instances ("Engineering (ENG)")."""
    with _api(ctx) as api:
        return [StreamInstance(id=str(t["id"]), label=f"{t['name']} ({t['key']})",
                               metadata={"key": t["key"], "name": t["name"]}) for t in api.teams()]


def teams(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """Custom handler ``teams``: the connection's teams for a picker."""
    return {"teams": [{"id": t.id, "label": t.label, **t.metadata} for t in list_teams(ctx)]}


def _team_id(ctx: SyncCtx | WebhookCtx) -> str:
    if not ctx.instance_id:
        raise InputError("stream_id: the issues stream needs a team, as issues:<team id>", field="stream_id")
    return ctx.instance_id


def _ingest(ctx: SyncCtx | WebhookCtx, issue: dict[str, Any]) -> None:
    """An archived (or trashed) issue is deleted; any other is ingested."""
    if issue.get("archivedAt"):
        ctx.ingest.delete("issues", str(issue["id"]))
        if isinstance(ctx, SyncCtx) and issue.get("updatedAt"):
            ctx.advance_cursor(datetime.fromisoformat(str(issue["updatedAt"]).replace("Z", "+00:00")))
    else:
        ctx.ingest.issue(**issue_fields(issue))


def sync_issues(ctx: SyncCtx) -> None:
    """The team's issues updated since the cursor (archived ones become deletions), oldest update first."""
    team_id = _team_id(ctx)
    flt = issue_filter(team_id, updated_from=ctx.since(), updated_before=ctx.until,
                       created_from=ctx.filters.from_date, created_to=ctx.filters.to_date,
                       state_types=ctx.filters.state_types)
    with _api(ctx) as api:
        if api.team(team_id) is None:
            raise NotFoundError(f"linear team {team_id!r} is gone or not visible to this connection",
                                field="stream_id")
        for n, issue in enumerate(api.issues(flt), start=1):
            ctx.signal.raise_if_cancelled()
            ctx.progress("found", external_id=str(issue["id"]), current=n)
            _ingest(ctx, issue)


def fetch_issue(ctx: SyncCtx, external_id: str) -> None:
    """Re-read one issue (a replay of a failed record); gone or archived is a deletion."""
    with _api(ctx) as api:
        issue = api.issue(external_id)
    if issue is None:
        ctx.ingest.delete("issues", external_id)
    else:
        _ingest(ctx, issue)


def on_event(ctx: WebhookCtx) -> None:
    """An ``Issue`` event: ``remove`` deletes; ``create``/``update``/``restore`` re-read the issue, so a late
    or out-of-order delivery can never roll it back and a webhook ingests exactly what a sync does.

    Every team's ``issues`` stream receives the event; each handles only issues of its team, and deletes
    one that moved to another team.
    """
    event = ctx.payload if isinstance(ctx.payload, dict) else {}
    raw = event.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if event.get("type") != "Issue" or not data.get("id"):
        ctx.logger.info(f"linear webhook: {event.get('type') or 'untyped'} event ignored")
        return
    team_id, issue_id = _team_id(ctx), str(data["id"])
    sent_team = data.get("teamId") or (data.get("team") or {}).get("id")
    updated_from = event.get("updatedFrom")
    was_ours = isinstance(updated_from, dict) and updated_from.get("teamId") == team_id
    if sent_team != team_id and not was_ours and not ctx.is_synced(issue_id):
        return  # another team's issue, which this team's stream never had: no request for it
    if event.get("action") == "remove":
        ctx.ingest.delete("issues", issue_id)
        return
    with _api(ctx) as api:
        issue = api.issue(issue_id)
    if issue is None:
        if ctx.is_synced(issue_id):
            ctx.ingest.delete("issues", issue_id)
    elif (issue.get("team") or {}).get("id") != team_id:
        if ctx.is_synced(issue_id):  # moved to another team: that team's stream has it now
            ctx.ingest.delete("issues", issue_id)
    else:
        _ingest(ctx, issue)


def route_event(event: WebhookEvent, ctx: Any) -> Any:
    """The app-wide webhook URL: an event's ``organizationId`` is the workspace, the connection's account."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    org = payload.get("organizationId")
    return ctx.find_connections(str(org)) if org else None


plugin = define_plugin(
    id="linear",
    name="Linear",
    description="Pull issues from Linear teams into Hissuno.",
    category="issues",
    icon=Icon(inline_svg=LOGO),
    base_urls={"API": "https://api.linear.app", "AUTH": "https://linear.app"},
    auth=OAuth2Auth(
        scopes=("read", "write", "issues:create", "comments:create"),
        scope_separator=",",  # Linear documents a comma-separated scope list
        authorize_url="{AUTH}/oauth/authorize",
        token_url="{API}/oauth/token",
        client_id_env="LINEAR_CLIENT_ID",
        client_secret_env="LINEAR_CLIENT_SECRET",
        # Always show consent, so a user can pick (or add) another workspace.
        extra_auth_params={"prompt": "consent"},
        pkce=True,
        on_token_exchanged=on_tokens,
    ),
    # Connection-scoped URL: the connection's webhook_secret; the app-wide URL: LINEAR_WEBHOOK_SIGNING_SECRET.
    # Linear-Delivery dedupes redeliveries; webhookTimestamp must be within 60 s.
    webhook_signature=LinearSignature(),
    resolve_connection=route_event,
    custom_handlers={"teams": teams},
    connection_handlers=frozenset({"teams"}),
    docs_url="https://github.com/hissuno/hissuno-airflow/blob/main/docs/plugins/linear.md",
    streams={
        "issues": Stream(kind="issues", label="Issues", description="Issues from a Linear team.",
                         sync=sync_issues, webhook=on_event, fetch=fetch_issue, instances=list_teams,
                         filters=IssueFilters),
    },
)
