"""The ``zendesk`` plugin: solved and closed tickets as sessions, with their requesters as contacts and
organizations as companies, by the incremental export and by signed webhooks."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthCtx,
    AuthResult,
    Field,
    Icon,
    InputError,
    ProviderAuthError,
    Stream,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.context import Ingest
from hissuno_airflow.kit.signatures import ZendeskSignature

from .client import Lookups, ZendeskClient, basic_auth, export_budget
from .mapping import DELETED, INGESTED_STATUSES, company_fields, contact_fields, parse_time, session_fields

_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DELETE_EVENTS = frozenset({"ticket.deleted", "ticket.soft_deleted", "ticket.permanently_deleted"})
LOGO = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' fill='#03363d'/>"
    "<path d='M7 10h9L7 22h9zM25 10a4.5 4.5 0 0 1-9 0zM16 22a4.5 4.5 0 0 1 9 0z' fill='#fff'/></svg>"
)
EXPORT_LAG_SECONDS = 60
"""The export refuses a ``start_time`` less than a minute old."""


class TicketFilters(BaseModel):
    """Which tickets the ``tickets`` stream reads."""

    from_date: datetime | None = None
    """Ignore tickets last updated before this time."""
    to_date: datetime | None = None
    """Ignore tickets created at or after this time."""


def _test_credentials(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    """Connect: the subdomain must be one host label, and the token must name an agent or admin."""
    subdomain = str(credentials.get("subdomain") or "").strip().lower()
    if not _SUBDOMAIN.fullmatch(subdomain):
        msg = (f"subdomain: expected the part of your Zendesk address before .zendesk.com, one label of letters,"
               f" digits and hyphens (acme for acme.zendesk.com); got {subdomain[:80]!r}")
        raise InputError(msg, field="subdomain")
    creds = {"subdomain": subdomain, "email": str(credentials["email"]).strip(),
             "api_token": str(credentials["api_token"]).strip()}
    # Names no submitted value: the conformance check (rightly) treats every one of them as possibly secret.
    refused = ("Zendesk did not accept the email and API token; check both, and that token access is enabled in"
               " Admin Center > Apps and integrations > Zendesk API")
    try:
        with ZendeskClient(ctx.http_client("API", auth=basic_auth(creds))) as zd:
            me = zd.me()
    except ProviderAuthError as exc:
        raise ProviderAuthError(refused, provider="zendesk", status=exc.status) from None
    if me.get("id") is None:  # Zendesk may answer a wrong token as an anonymous user instead of a 401
        raise ProviderAuthError(refused, provider="zendesk", status=401)
    if me.get("role") == "end-user":
        msg = f"email: {creds['email']} is an end user in Zendesk; use the API token of an agent or admin"
        raise InputError(msg, field="email")
    return AuthResult(external_account_id=subdomain, account_label=f"{subdomain}.zendesk.com", credentials=creds,
                      settings={"account_name": me.get("name"), "account_email": me.get("email")})


def _ingest_ticket(ingest: Ingest, zd: ZendeskClient, lookups: Lookups, ticket: dict[str, Any]) -> None:
    """Organization, requester, then the ticket with its public comments (so each links to the last)."""
    requester = lookups.user(ticket.get("requester_id"))
    org = lookups.organization((requester or {}).get("organization_id") or ticket.get("organization_id"))
    # Each once a run: the same fields again would only be found unchanged (most requesters and
    # organizations have many tickets). A requester's contact also names the ticket's organization.
    if org is not None and lookups.first(("org", org["id"])) and (company := company_fields(org)) is not None:
        ingest.company(**company)
    if requester is not None and lookups.first(("user", requester["id"], org and org["id"])) \
            and (contact := contact_fields(requester, org)) is not None:
        ingest.contact(**contact)
    ingest.session(**session_fields(ticket, zd.comments(str(ticket["id"])), requester, org))


def _client(ctx: SyncCtx | WebhookCtx, *, export: bool = False) -> ZendeskClient:
    auth = basic_auth(ctx.credentials)
    paced = ctx.http_client("API", auth=auth, budget=export_budget()) if export else None
    return ZendeskClient(ctx.http_client("API", auth=auth), paced)


def _sync_tickets(ctx: SyncCtx) -> None:
    """Every ticket changed since the cursor, from the incremental export: solved and closed ones are
    ingested, deleted ones deleted, the rest only move the cursor (a later solve changes them again)."""
    since = ctx.since(ctx.filters.from_date)
    start = 0 if since is None else min(int(since.timestamp()), int(time.time()) - EXPORT_LAG_SECONDS)
    with _client(ctx, export=True) as zd:
        lookups = Lookups(zd)
        for ticket in zd.ticket_export(max(start, 0)):
            ctx.signal.raise_if_cancelled()
            ticket_id = str(ticket["id"])
            ctx.progress("found", external_id=ticket_id)
            updated, created = parse_time(ticket.get("updated_at")), parse_time(ticket.get("created_at"))
            if updated is not None and ctx.until is not None and updated >= ctx.until:
                ctx.progress("skipped", "updated after the window", external_id=ticket_id)
                continue
            if ticket.get("status") == DELETED:
                ctx.ingest.delete("sessions", ticket_id)
            elif ticket.get("status") in INGESTED_STATUSES and not (
                    created is not None and ctx.filters.to_date is not None and created >= ctx.filters.to_date):
                _ingest_ticket(ctx.ingest, zd, lookups, ticket)
                continue
            else:
                ctx.progress("skipped", f"status {ticket.get('status')!r}", external_id=ticket_id)
            if updated is not None:
                ctx.advance_cursor(updated)


def _on_ticket_event(ctx: WebhookCtx) -> None:
    """A ``zen:event-type:ticket.*`` event: deletions delete; anything else re-reads the ticket."""
    event = ctx.payload if isinstance(ctx.payload, dict) else {}
    kind = str(event.get("type") or "").removeprefix("zen:event-type:")
    if not kind.startswith("ticket."):
        ctx.logger.info(f"zendesk webhook: ignoring event type {kind or 'none'!r}")
        return
    detail = event.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    ticket_id = str(detail.get("id") or str(event.get("subject") or "").removeprefix("zen:ticket:"))
    if not ticket_id.isdigit():
        msg = f"zendesk webhook {kind}: expected a ticket id in detail.id or subject; got {ticket_id[:40]!r}"
        raise InputError(msg, field="detail.id")
    if kind in _DELETE_EVENTS:
        ctx.ingest.delete("sessions", ticket_id)
        return
    with _client(ctx) as zd:
        ticket = zd.ticket(ticket_id)
        if ticket is None:
            ctx.logger.info(f"zendesk webhook {kind}: ticket {ticket_id} is gone; the export reports deletions")
        elif ticket.get("status") == DELETED:
            ctx.ingest.delete("sessions", ticket_id)
        elif ticket.get("status") in INGESTED_STATUSES:
            _ingest_ticket(ctx.ingest, zd, Lookups(zd), ticket)


plugin = define_plugin(
    id="zendesk",
    name="Zendesk",
    description="Pull solved and closed tickets as sessions for analysis.",
    category="sessions",
    icon=Icon(inline_svg=LOGO),
    base_urls={"API": "https://{subdomain}.zendesk.com"},
    auth=ApiKeyAuth(
        fields=(
            Field(id="subdomain", label="Subdomain", placeholder="acme", required=True,
                  help_text="The subdomain portion of acme.zendesk.com"),
            Field(id="email", label="Admin email", placeholder="admin@acme.com", required=True,
                  help_text="The agent or admin the API token belongs to"),
            Field(id="api_token", label="API token", secret=True, required=True,
                  help_text="Admin Center > Apps and integrations > Zendesk API > Add API token"),
        ),
        test=_test_credentials,
    ),
    # Connection-scoped URL, so the secret is the connection's webhook_secret; the event id dedupes retries.
    webhook_signature=ZendeskSignature(event_id_field="id"),
    # Suite Team's account-wide limit, the lowest plan's; larger plans simply wait less on 429s.
    rate_limit_per_minute=200,
    docs_url="https://github.com/hissuno/hissuno-airflow/blob/main/docs/plugins/zendesk.md",
    streams={
        "tickets": Stream(kind="sessions", label="Tickets", description="Solved and closed support tickets.",
                          sync=_sync_tickets, webhook=_on_ticket_event, filters=TicketFilters),
    },
)
