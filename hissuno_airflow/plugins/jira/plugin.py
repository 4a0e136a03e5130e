"""The ``jira`` plugin: Jira Cloud issues, one stream instance per project of every site the grant reaches.

A connection is one Atlassian account's grant (external account = the Atlassian ``accountId``).
Atlassian keeps one grant per app and account and adds every site the user consents to it, so one
token reaches all of them: the ``issues`` stream lists the projects of *every* accessible site (the
reference used only the first), instance id ``<cloudId>/<PROJECT KEY>``. A site granted later shows
up after a Reconnect (or at once, when granted to this app another way) without a new connection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, field_validator

from hissuno_airflow.kit import (
    AuthCtx,
    AuthResult,
    Icon,
    InputError,
    ListCtx,
    OAuth2Auth,
    OAuthTokens,
    ProviderAuthError,
    ProviderResponseError,
    Request,
    RouteCtx,
    Stream,
    StreamInstance,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.http import BearerAuth
from hissuno_airflow.kit.signatures import JiraSignature

from .client import JiraClient
from .jql import PROJECT_KEY, issues_jql, user_zone
from .mapping import issue_fields, obj

LOGO = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' fill='#0052cc'/>"
    "<path d='M16 6l10 10-10 10L6 16zm0 6l-4 4 4 4 4-4z' fill='#fff'/></svg>"
)
NO_SITES = "No accessible Jira sites found for this account; grant the app access to a Jira site and connect again"
WEBHOOK_WINDOW_SECONDS = 1800
"""A delivery whose signed body ``timestamp`` is older than this is refused (Jira retries within it)."""
DELETE_EVENT = "jira:issue_deleted"
ISSUE_EVENTS = frozenset({"jira:issue_created", "jira:issue_updated", DELETE_EVENT})


class IssueFilters(BaseModel):
    """Which issues of the project the ``issues`` stream reads."""

    jql: str | None = None
    """An extra JQL clause, AND-ed with the project (no ``ORDER BY``: the sync orders by update time)."""
    issue_type_names: list[str] = []
    """Only these issue types (names, e.g. ``Bug``); empty: all."""
    status_categories: list[Literal["new", "indeterminate", "done"]] = []
    """Only issues whose status is in these categories (the reference declared this and ignored it)."""
    from_date: datetime | None = None
    """Ignore issues last updated before this time."""

    @field_validator("jql")
    @classmethod
    def _no_order_by(cls, value: str | None) -> str | None:
        if value and "order by" in " ".join(value.lower().split()):
            raise ValueError("expected a JQL condition without ORDER BY (the sync orders by update time)")
        return value


# -- connect ---------------------------------------------------------------------------------------


def _on_token_exchanged(tokens: OAuthTokens, ctx: AuthCtx) -> AuthResult:
    """Every Jira site the grant reaches; the account is the Atlassian user, named by ``/myself``."""
    with JiraClient(ctx.http_client("API", auth=BearerAuth(tokens.access_token))) as jira:
        sites = jira.sites()
        if not sites:
            raise ProviderAuthError(NO_SITES, provider="jira", status=403)
        me = jira.myself(sites[0]["cloud_id"])
    account_id = str(me.get("accountId") or "")
    if not account_id:
        raise ProviderAuthError("jira /myself answered without an accountId", provider="jira")
    names = ", ".join(s["name"] for s in sites)
    label = f"{me.get('displayName') or account_id} ({names})"
    return AuthResult(external_account_id=account_id, account_label=label[:200],
                      settings={"account_id": account_id, "sites": sites})


# -- instances and custom handlers -----------------------------------------------------------------


def _instance(instance_id: str | None) -> tuple[str, str]:
    cloud_id, _, key = (instance_id or "").partition("/")
    if not cloud_id or not PROJECT_KEY.fullmatch(key):
        msg = f"stream_id: expected issues:<cloud id>/<PROJECT KEY>; got instance {str(instance_id)[:80]!r}"
        raise InputError(msg, field="stream_id")
    return cloud_id, key


def _site(jira: JiraClient, cloud_id: str) -> dict[str, Any]:
    for site in jira.sites():
        if site["cloud_id"] == cloud_id:
            return site
    msg = (f"jira: site {cloud_id} is not accessible to this connection any more; reconnect and grant it,"
           " or disable its streams")
    raise ProviderResponseError(msg, provider="jira", status=404)


def _list_projects(ctx: ListCtx) -> list[StreamInstance]:
    """One instance per project of every accessible site."""
    out: list[StreamInstance] = []
    with JiraClient(ctx.http_client("API")) as jira:
        for site in jira.sites():
            for project in jira.projects(site["cloud_id"]):
                key = str(project.get("key") or "")
                if not PROJECT_KEY.fullmatch(key):
                    continue
                out.append(StreamInstance(
                    id=f"{site['cloud_id']}/{key}", label=f"{project.get('name') or key} ({key}) · {site['name']}",
                    metadata={"key": key, "name": project.get("name"), "id": project.get("id"),
                              "cloud_id": site["cloud_id"], "site": site["name"], "url": site["url"]}))
    return out


def _projects(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """``{projects: [{id, key, name, projectTypeKey, cloud_id, site}]}`` of every site (or ``?cloud_id=``)."""
    only = request.query.get("cloud_id")
    out: list[dict[str, Any]] = []
    with JiraClient(ctx.http_client("API")) as jira:
        for site in jira.sites():
            if only and site["cloud_id"] != only:
                continue
            out += [{"id": p.get("id"), "key": p.get("key"), "name": p.get("name"),
                     "projectTypeKey": p.get("projectTypeKey"), "cloud_id": site["cloud_id"], "site": site["name"]}
                    for p in jira.projects(site["cloud_id"])]
    return {"projects": out}


def _issue_types(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """``?projectKey=`` (and ``cloud_id=`` when several sites): ``{issueTypes: [{id, name, ...}]}``."""
    key = request.query.get("projectKey") or ""
    if not PROJECT_KEY.fullmatch(key):
        raise InputError("projectKey: expected a Jira project key such as ENG", field="projectKey")
    with JiraClient(ctx.http_client("API")) as jira:
        sites = jira.sites()
        cloud_id = request.query.get("cloud_id")
        if not cloud_id:
            if len(sites) != 1:
                names = ", ".join(f"{s['cloud_id']} ({s['name']})" for s in sites)
                raise InputError(f"cloud_id: this connection reaches several sites; expected one of {names}",
                                 field="cloud_id")
            cloud_id = sites[0]["cloud_id"]
        elif cloud_id not in {s["cloud_id"] for s in sites}:
            raise InputError(f"cloud_id: {cloud_id[:70]!r} is not a site of this connection", field="cloud_id")
        types = jira.issue_types(cloud_id, key)
    return {"issueTypes": [{"id": t.get("id"), "name": t.get("name"), "description": t.get("description"),
                            "subtask": t.get("subtask"), "iconUrl": t.get("iconUrl")} for t in types]}


# -- sync, fetch, webhook --------------------------------------------------------------------------


def _sync_issues(ctx: SyncCtx) -> None:
    """The project's issues updated since the cursor (all of them on a full run), oldest update first."""
    cloud_id, key = _instance(ctx.instance_id)
    since = ctx.since(ctx.filters.from_date)
    with JiraClient(ctx.http_client("API")) as jira:
        site = _site(jira, cloud_id)
        zone = user_zone(jira.myself(cloud_id).get("timeZone"))
        jql = issues_jql(key, since=since, until=ctx.until, zone=zone, user_jql=ctx.filters.jql,
                         issue_types=tuple(ctx.filters.issue_type_names),
                         status_categories=tuple(ctx.filters.status_categories))
        seen: set[str] = set()
        for issue in jira.search(cloud_id, jql):
            ctx.signal.raise_if_cancelled()
            issue_id = str(issue.get("id") or "")
            ctx.progress("found", external_id=issue_id)
            seen.add(issue_id)
            # The literals are minute-rounded to the safe side; the run's window (the ingest layer) drops an
            # issue updated at or after ``until`` that the rounded-up bound let through.
            ctx.ingest.issue(**issue_fields(issue, site))
        complete = (ctx.sync_mode == "full" and ctx.until is None and not ctx.filters.from_date
                    and not ctx.filters.jql and not ctx.filters.issue_type_names
                    and not ctx.filters.status_categories)
        if complete:
            # A full, unfiltered listing is the whole project: what it no longer holds was deleted or moved.
            for gone in sorted(ctx.get_synced_ids() - seen):
                ctx.ingest.delete("issues", gone)


def _ingest_current(ctx: SyncCtx | WebhookCtx, jira: JiraClient, site: dict[str, Any], key: str,
                    issue_id: str) -> None:
    """Read the issue as it is now: ingest it, or delete it when Jira no longer has it."""
    issue = jira.issue(site["cloud_id"], issue_id)
    if issue is None:
        ctx.ingest.delete("issues", issue_id)
        return
    project = obj(obj(issue.get("fields")).get("project")).get("key")
    if project != key:
        ctx.ingest.delete("issues", issue_id)  # moved to another project: that project's stream has it now
        return
    ctx.ingest.issue(**issue_fields(issue, site))


def _fetch_issue(ctx: SyncCtx, external_id: str) -> None:
    """Replay of a failed record: the issue as Jira has it now."""
    cloud_id, key = _instance(ctx.instance_id)
    with JiraClient(ctx.http_client("API")) as jira:
        _ingest_current(ctx, jira, _site(jira, cloud_id), key, external_id)


def _same_site(issue: dict[str, Any], site: dict[str, Any]) -> bool:
    self_url = str(issue.get("self") or "")
    return f"/ex/jira/{site['cloud_id']}/" in self_url or (
        bool(site["url"]) and self_url.startswith(site["url"].rstrip("/") + "/"))


def _on_issue_event(ctx: WebhookCtx) -> None:
    """``jira:issue_created/updated/deleted`` of this instance's project and site.

    The issue is read again from Jira rather than taken from the body: an admin webhook's body carries
    API v2 fields (a wiki-markup description), and re-reading makes a webhook and the next sync agree,
    makes out-of-order deliveries harmless, and makes a replayed ``issue_deleted`` of a live issue a no-op.
    """
    event = ctx.payload if isinstance(ctx.payload, dict) else {}
    kind = event.get("webhookEvent")
    issue = obj(event.get("issue"))
    if kind not in ISSUE_EVENTS:
        ctx.logger.info(f"jira webhook: ignoring event {str(kind)[:60]!r}")
        return
    cloud_id, key = _instance(ctx.instance_id)
    project = obj(obj(issue.get("fields")).get("project")).get("key")
    issue_id = str(issue.get("id") or "")
    if project != key or not issue_id.isdigit():
        return  # another project's event (each enabled project stream receives every event)
    with JiraClient(ctx.http_client("API")) as jira:
        site = _site(jira, cloud_id)
        if not _same_site(issue, site):
            return
        _ingest_current(ctx, jira, site, key, issue_id)


plugin = define_plugin(
    id="jira",
    name="Jira",
    description="Pull issues from Jira Cloud projects into Hissuno.",
    category="issues",
    icon=Icon(inline_svg=LOGO),
    base_urls={"API": "https://api.atlassian.com", "AUTH": "https://auth.atlassian.com"},
    auth=OAuth2Auth(
        authorize_url="{AUTH}/authorize",
        token_url="{AUTH}/oauth/token",
        scopes=("read:jira-work", "read:jira-user", "offline_access"),
        client_id_env="JIRA_CLIENT_ID",
        client_secret_env="JIRA_CLIENT_SECRET",
        # audience is required by Atlassian; prompt=consent shows the site picker on every connect.
        extra_auth_params={"audience": "api.atlassian.com", "prompt": "consent"},
        # Atlassian's token endpoint takes a JSON body, client id and secret inside it (providers.md §4.1).
        token_body="json",
        on_token_exchanged=_on_token_exchanged,
    ),
    # Admin webhooks (Jira settings > System > WebHooks) with the connection's webhook_secret; the
    # signed body timestamp bounds replays, the delivery identifier dedupes Jira's retries.
    webhook_signature=JiraSignature(timestamp_field="timestamp", timestamp_format="ms",
                                    tolerance_seconds=WEBHOOK_WINDOW_SECONDS),
    custom_handlers={"projects": _projects, "issueTypes": _issue_types},
    connection_handlers=frozenset({"projects", "issueTypes"}),
    docs_url="https://github.com/hissuno/hissuno-airflow/blob/main/docs/plugins/jira.md",
    streams={
        "issues": Stream(kind="issues", label="Issues", description="Issues from a Jira project.",
                         sync=_sync_issues, webhook=_on_issue_event, fetch=_fetch_issue,
                         instances=_list_projects, filters=IssueFilters),
    },
)
