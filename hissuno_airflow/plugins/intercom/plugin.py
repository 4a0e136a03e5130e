"""The ``intercom`` plugin: support conversations as sessions, by search on update time and by webhook."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from hissuno_airflow.kit import (
    Icon,
    Response,
    Stream,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.signatures import IntercomSignature, WebhookEvent

from .auth import auth_mode, connected_client
from .client import ContactCache, IntercomClient, search_query
from .mapping import first_contact, session_fields

CONVERSATION_TOPICS = ("conversation.", "conversation_part.")
"""Notification topics whose item is (or belongs to) a conversation."""


class ConversationFilters(BaseModel):
    """Which conversations to import, by creation time (the cursor works on update time)."""

    from_date: datetime | None = None
    """Skip conversations created before this time."""
    to_date: datetime | None = None
    """Skip conversations created after this time."""


class _Conversations:
    """Reads conversations by id and ingests them; one per run or webhook event."""

    def __init__(self, ctx: SyncCtx | WebhookCtx, api: IntercomClient) -> None:
        self.ctx, self.api, self.contacts = ctx, api, ContactCache(api)
        self.done: dict[str, int] = {}
        """Conversation id -> the ``updated_at`` ingested in this run."""

    def ingest(self, conversation_id: str) -> None:
        """Fetch the conversation and its first contact and ingest them; a 404 is a deletion."""
        conv = self.api.conversation(conversation_id)
        if conv is None:
            self.ctx.ingest.delete("sessions", conversation_id)
            return
        ref = first_contact(conv)
        contact = (self.contacts.get(str(ref["id"])) or ref) if ref else None
        self.ctx.ingest.session(**session_fields(conv, contact))
        if isinstance(conv.get("updated_at"), int):
            self.done[conversation_id] = conv["updated_at"]

    def seen(self, listed: dict[str, Any]) -> bool:
        """Whether this run already ingested the listed state (a conversation updated mid-run is listed
        again later in the ascending search; only a newer state is read again)."""
        at = self.done.get(str(listed.get("id")))
        return at is not None and isinstance(listed.get("updated_at"), int) and listed["updated_at"] <= at


def sync_conversations(ctx: SyncCtx) -> None:
    """Every conversation updated since the cursor (and within the filters), oldest update first."""
    query = search_query(updated_from=ctx.since(), updated_before=ctx.until,
                         created_from=ctx.filters.from_date, created_to=ctx.filters.to_date)
    with connected_client(ctx, ctx.credentials) as http:
        reader = _Conversations(ctx, IntercomClient(http))
        n = 0
        for conversations, total in reader.api.search_pages(query):
            for listed in conversations:
                ctx.signal.raise_if_cancelled()
                if reader.seen(listed):
                    continue
                n += 1
                ctx.progress("found", external_id=str(listed["id"]), current=n, total=total)
                reader.ingest(str(listed["id"]))


def on_notification(ctx: WebhookCtx) -> None:
    """A conversation notification: read the conversation as the sync does (the notification is only
    the trigger, so an old or replayed one can never roll a session back); other topics are ignored."""
    event = ctx.payload if isinstance(ctx.payload, dict) else {}
    topic = str(event.get("topic") or "")
    item = (event.get("data") or {}).get("item") or {}
    if not topic.startswith(CONVERSATION_TOPICS) or not isinstance(item, dict):
        ctx.logger.info(f"intercom notification {topic or '(no topic)'} ignored")
        return
    conversation_id = item.get("id") if item.get("type") == "conversation" else item.get("conversation_id")
    if not conversation_id:
        ctx.logger.warning(f"intercom notification {topic} names no conversation; ignored")
        return
    with connected_client(ctx, ctx.credentials) as http:
        _Conversations(ctx, IntercomClient(http)).ingest(str(conversation_id))


def route_notification(event: WebhookEvent, ctx: Any) -> Any:
    """The app-wide webhook URL: a notification's ``app_id`` is the workspace, the connection's account."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    if payload.get("topic") == "ping":
        return Response({"success": True, "ping": True})
    app_id = payload.get("app_id")
    return ctx.find_connections(str(app_id)) if app_id else None


plugin = define_plugin(
    id="intercom",
    name="Intercom",
    description="Import your Intercom conversations as sessions.",
    category="sessions",
    icon=Icon(),
    multi_instance=True,
    base_urls={"API": "https://api.intercom.io", "API_EU": "https://api.eu.intercom.io",
               "API_AU": "https://api.au.intercom.io", "AUTH": "https://app.intercom.com"},
    # OAuth install when the server has an Intercom app (INTERCOM_CLIENT_ID), else the pasted access token.
    auth=auth_mode(),
    # The app's client secret signs every notification (X-Hub-Signature, HMAC-SHA1 of the body); it is
    # the connection's webhook_secret, or INTERCOM_CLIENT_SECRET for the app-wide URL.
    webhook_signature=IntercomSignature(),
    resolve_connection=route_notification,
    # Intercom allows 10,000 calls a minute per app, counted in 10-second windows.
    rate_limit_per_minute=10_000,
    rate_limit_burst=1_666,
    streams={
        "conversations": Stream(
            kind="sessions", label="Conversations", description="Support conversations with customers.",
            sync=sync_conversations, webhook=on_notification, filters=ConversationFilters,
        ),
    },
)
