"""The ``ticketdesk`` plugin: a help desk's tickets as issues, by sync and by webhook."""

from __future__ import annotations

from typing import Any

from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthCtx,
    AuthResult,
    Field,
    Icon,
    Stream,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.http import BearerAuth
from hissuno_airflow.kit.signatures import StandardWebhooks

from .client import TicketDeskClient, issue_fields


def check_token(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    """Connect: the token must name an account; a refusal (401) reaches the user as a 400."""
    with ctx.http_client("API", auth=BearerAuth(credentials["api_token"])) as http:
        account = TicketDeskClient(http).account()
    return AuthResult(external_account_id=account["id"], account_label=account["name"],
                      credentials={"api_token": credentials["api_token"]})


def sync_tickets(ctx: SyncCtx) -> None:
    """Every ticket updated since the cursor, page by page."""
    with ctx.http_client("API", auth=BearerAuth(ctx.credentials["api_token"])) as http:
        for ticket in TicketDeskClient(http).tickets(since=ctx.since()):
            ctx.progress("found", external_id=ticket["id"])
            ctx.ingest.issue(**issue_fields(ticket))


def on_ticket_event(ctx: WebhookCtx) -> None:
    """``ticket.updated`` carries the ticket, ``ticket.deleted`` its id."""
    event = ctx.payload
    if event["type"] == "ticket.deleted":
        ctx.ingest.delete("issues", event["ticket"]["id"])
    else:
        ctx.ingest.issue(**issue_fields(event["ticket"]))


plugin = define_plugin(
    id="ticketdesk",
    name="TicketDesk",
    description="Tickets from a help desk, as issues.",
    category="issues",
    icon=Icon(),
    base_urls={"API": "https://api.ticketdesk.invalid"},
    auth=ApiKeyAuth(
        fields=(Field(id="api_token", label="API token", secret=True, required=True),),
        test=check_token,
    ),
    webhook_signature=StandardWebhooks(),
    streams={
        "tickets": Stream(kind="issues", label="Tickets", sync=sync_tickets, webhook=on_ticket_event),
    },
)
