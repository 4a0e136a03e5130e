"""The ``hubspot`` plugin: CRM companies and contacts, by last-modified search and by signed webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel

from hissuno_airflow.kit import (
    AuthCtx,
    AuthResult,
    Icon,
    OAuth2Auth,
    OAuthTokens,
    Stream,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.signatures import HubSpotV3, WebhookEvent

from . import client
from .client import CompanyDomains, HubSpotClient, modified_at
from .mapping import OverwritePolicy, company_fields, contact_fields

KINDS: dict[str, Literal["companies", "contacts"]] = {"companies": "companies", "contacts": "contacts"}
OBJECT_TYPE_IDS = {"0-1": "contacts", "0-2": "companies"}
"""``objectTypeId`` of the generic ``object.*`` webhook subscriptions."""
SUBSCRIPTION_PREFIX = {"contact": "contacts", "company": "companies"}
DELETIONS = ("deletion", "privacyDeletion")


class CrmFilters(BaseModel):
    """How HubSpot values meet what hissuno already holds for the same email or domain."""

    overwrite_policy: OverwritePolicy = "fill_nulls"
    """``fill_nulls``: only fill empty fields; ``hubspot_wins``: overwrite; ``never_overwrite``: leave existing rows."""


def on_token_exchanged(tokens: OAuthTokens, ctx: AuthCtx) -> AuthResult:
    """The portal behind the token: ``hub_id`` is the account, ``hub_domain`` its label."""
    with ctx.http_client("API", auth=None, secrets=[tokens.access_token]) as http:
        info = HubSpotClient(http).token_info(tokens.access_token)
    portal = str(info["hub_id"])
    domain = str(info.get("hub_domain") or "")
    return AuthResult(external_account_id=portal, account_label=domain or f"Portal {portal}",
                      credentials={"portal_id": portal},
                      settings={"portal_id": portal, "hub_domain": domain or None})


def _found(ctx: SyncCtx, objects: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for n, obj in enumerate(objects, 1):
        ctx.signal.raise_if_cancelled()
        ctx.progress("found", external_id=str(obj["id"]), current=n)
        yield obj


def _skip(ctx: SyncCtx | WebhookCtx, obj: dict[str, Any], object_type: str, why: str) -> None:
    ctx.logger.info(f"hubspot {object_type} {obj['id']} skipped: {why}")
    if isinstance(ctx, SyncCtx):
        ctx.progress("skipped", external_id=str(obj["id"]), message=why)
        # Scanned in ascending order: the next run need not read it again.
        ctx.advance_cursor(modified_at(obj, object_type))


def _ingest_companies(ctx: SyncCtx | WebhookCtx, companies: list[dict[str, Any]], policy: OverwritePolicy) -> None:
    for company in companies:
        fields = company_fields(company, policy)
        if fields is None:
            _skip(ctx, company, "companies", "no domain")
        else:
            ctx.ingest.company(**fields)


def _ingest_contacts(ctx: SyncCtx | WebhookCtx, api: HubSpotClient, domains: CompanyDomains,
                     contacts: list[dict[str, Any]], policy: OverwritePolicy) -> None:
    links = domains.for_contacts([str(c["id"]) for c in contacts]) if contacts else {}
    for contact in contacts:
        fields = contact_fields(contact, links.get(str(contact["id"])), policy)
        if fields is None:
            _skip(ctx, contact, "contacts", "no email")
        else:
            ctx.ingest.contact(**fields)


def _pages(objects: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    # Read at call time, as the search reads it: a copy bound at import would keep whatever value the
    # module had when the plugin was first loaded, so the two could disagree.
    size = client.SEARCH_PAGE
    page: list[dict[str, Any]] = []
    for obj in objects:
        page.append(obj)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def _delete_gone(ctx: SyncCtx, api: HubSpotClient, object_type: str, seen: set[str]) -> None:
    """Archived objects this stream ingested are deleted (a restore brings them back through the search).
    A full run also deletes what it ingested before and no longer finds at all (GDPR deletions and
    merged-away records leave no archive behind)."""
    synced = ctx.get_synced_ids()
    for obj in api.archived(object_type):
        if str(obj["id"]) in synced:
            ctx.ingest.delete(KINDS[object_type], str(obj["id"]))
            synced.discard(str(obj["id"]))
    if ctx.sync_mode == "full" and ctx.until is None:
        for object_id in sorted(synced - seen):
            ctx.ingest.delete(KINDS[object_type], object_id)


def _seen(objects: Iterator[dict[str, Any]], seen: set[str]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        seen.add(str(obj["id"]))
        yield obj


def sync_companies(ctx: SyncCtx) -> None:
    """Companies modified since the cursor, oldest first; then archived ones are deleted."""
    seen: set[str] = set()
    with ctx.http_client("API") as http:
        api = HubSpotClient(http)
        for page in _pages(_found(ctx, _seen(api.modified("companies", ctx.since(), ctx.until), seen))):
            _ingest_companies(ctx, page, ctx.filters.overwrite_policy)
        _delete_gone(ctx, api, "companies", seen)


def sync_contacts(ctx: SyncCtx) -> None:
    """Contacts modified since the cursor with their associated company's domain; then archived ones are deleted."""
    seen: set[str] = set()
    with ctx.http_client("API") as http:
        api = HubSpotClient(http)
        domains = CompanyDomains(api)
        for page in _pages(_found(ctx, _seen(api.modified("contacts", ctx.since(), ctx.until), seen))):
            _ingest_contacts(ctx, api, domains, page, ctx.filters.overwrite_policy)
        _delete_gone(ctx, api, "contacts", seen)


def _object_type(event: dict[str, Any]) -> str | None:
    sub = str(event.get("subscriptionType") or "")
    prefix = sub.split(".", 1)[0]
    if prefix == "object":
        return OBJECT_TYPE_IDS.get(str(event.get("objectTypeId") or ""))
    return SUBSCRIPTION_PREFIX.get(prefix)


def _latest_actions(payload: Any, object_type: str) -> dict[str, str]:
    """Object id -> ``delete`` or ``read`` after the batch's events of ``object_type``, by ``occurredAt``
    (HubSpot does not order deliveries)."""
    events = payload if isinstance(payload, list) else [payload]
    mine = [e for e in events if isinstance(e, dict) and _object_type(e) == object_type and e.get("objectId")]
    out: dict[str, str] = {}
    for event in sorted(mine, key=lambda e: int(e.get("occurredAt") or 0)):
        kind = str(event.get("subscriptionType") or "").rsplit(".", 1)[-1]
        out[str(event["objectId"])] = "delete" if kind in DELETIONS else "read"
    return out


def _on_events(ctx: WebhookCtx, object_type: str) -> None:
    """A batch of CRM events: deletions delete, anything else reads the object as the sync does (the
    event is only a trigger, so an old or replayed one cannot roll a record back)."""
    actions = _latest_actions(ctx.payload, object_type)
    if not actions:
        return
    policy: OverwritePolicy = ctx.filters.overwrite_policy if ctx.filters is not None else "fill_nulls"
    with ctx.http_client("API") as http:
        api = HubSpotClient(http)
        live: list[dict[str, Any]] = []
        for object_id, action in actions.items():
            obj = None if action == "delete" else api.get(object_type, object_id)
            if obj is None:
                ctx.ingest.delete(KINDS[object_type], object_id)
            else:
                live.append(obj)
        if object_type == "contacts":
            _ingest_contacts(ctx, api, CompanyDomains(api), live, policy)
        else:
            _ingest_companies(ctx, live, policy)


def on_company_events(ctx: WebhookCtx) -> None:
    """``company.*`` (and ``object.*`` for ``0-2``) events."""
    _on_events(ctx, "companies")


def on_contact_events(ctx: WebhookCtx) -> None:
    """``contact.*`` (and ``object.*`` for ``0-1``) events."""
    _on_events(ctx, "contacts")


def route_events(event: WebhookEvent, ctx: Any) -> Any:
    """The app-wide webhook URL: each event's ``portalId`` is a connection's account."""
    events = event.payload if isinstance(event.payload, list) else [event.payload]
    portals = sorted({str(e["portalId"]) for e in events if isinstance(e, dict) and e.get("portalId")})
    return [cid for portal in portals for cid in ctx.find_connections(portal)]


plugin = define_plugin(
    id="hubspot",
    name="HubSpot",
    description="Sync contacts and companies from HubSpot CRM.",
    category="customer_data",
    icon=Icon(),
    base_urls={"API": "https://api.hubapi.com", "AUTH": "https://app.hubspot.com"},
    auth=OAuth2Auth(
        scopes=("crm.objects.contacts.read", "crm.objects.companies.read", "oauth"),
        authorize_url="{AUTH}/oauth/authorize",
        token_url="{API}/oauth/v1/token",
        client_id_env="HUBSPOT_CLIENT_ID",
        client_secret_env="HUBSPOT_CLIENT_SECRET",
        on_token_exchanged=on_token_exchanged,
    ),
    # One target URL per app, signed with the app's client secret (HUBSPOT_CLIENT_SECRET).
    webhook_signature=HubSpotV3(),
    resolve_connection=route_events,
    # OAuth apps: 110 requests per 10 s per portal; keep under it (a 429 still waits for the next window).
    rate_limit_per_minute=600,
    rate_limit_burst=100,
    streams={
        "companies": Stream(kind="companies", label="Companies", description="CRM companies.",
                            sync=sync_companies, webhook=on_company_events, filters=CrmFilters,
                            frequencies=("manual", "1h", "6h", "24h", "webhook")),
        "contacts": Stream(kind="contacts", label="Contacts", description="CRM contacts with company associations.",
                           sync=sync_contacts, webhook=on_contact_events, filters=CrmFilters,
                           frequencies=("manual", "1h", "6h", "24h", "webhook")),
    },
)
