"""The ``gong`` plugin: recorded calls with their transcripts as meeting sessions, by sync and by webhook."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic import Field as PField

from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthCtx,
    AuthResult,
    Field,
    Icon,
    InputError,
    Stream,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.http import BasicAuth
from hissuno_airflow.kit.signatures import JwtSignature

from .client import BATCH_SIZE, GongClient
from .mapping import EXAMPLE_BASE, normalize_base_url, session_fields

LOGO = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' "
    "fill='#8039df'/><path d='M8 20l5-9 4 7 3-4 4 6' stroke='#fff' stroke-width='2.6' fill='none' "
    "stroke-linecap='round' stroke-linejoin='round'/></svg>"
)


class CallFilters(BaseModel):
    """Which calls the ``calls`` stream reads."""

    from_date: datetime | None = None
    """Ignore calls that started before this time."""
    to_date: datetime | None = None
    """Ignore calls that started at or after this time."""


class CallSettings(BaseModel):
    """How far back an incremental run looks again."""

    lookback_hours: int = PField(default=24, ge=0, le=14 * 24)
    """Gong lists a call only once it is processed, which can be hours after it started: each incremental
    run starts this long before the newest call seen (unchanged calls write nothing)."""


def _auth(credentials: Any) -> BasicAuth:
    return BasicAuth(str(credentials["access_key"]), str(credentials["access_key_secret"]))


def check_keys(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    """Connect: the base URL must be https; the key pair must list the company's workspaces."""
    base_url = normalize_base_url(credentials.get("base_url"))
    with ctx.http_client("API", auth=_auth(credentials)) as http:
        workspaces = sorted(GongClient(http).workspaces(), key=lambda w: (len(str(w.get("id"))), str(w.get("id"))))
    host = urlsplit(base_url).netloc
    if workspaces:
        # The oldest workspace id names the company: it survives key rotation and differs between companies
        # that share the generic https://api.gong.io host.
        account, name = f"workspace:{workspaces[0].get('id')}", str(workspaces[0].get("name") or host)
        label = name + (f" (+{len(workspaces) - 1} workspaces)" if len(workspaces) > 1 else "")
    else:
        account, label = f"host:{host}", host
    return AuthResult(external_account_id=account, account_label=f"Gong: {label}",
                      credentials={"access_key": credentials["access_key"],
                                   "access_key_secret": credentials["access_key_secret"], "base_url": base_url})


def _window(ctx: SyncCtx) -> tuple[datetime | None, datetime | None]:
    filters, settings = ctx.filters, ctx.settings
    since = ctx.since(filters.from_date)
    if ctx.triggered_by != "backfill" and since is not None and since == ctx.last_sync_at:
        since -= timedelta(hours=settings.lookback_hours)
        if filters.from_date is not None:
            since = max(since, filters.from_date)
    bounds = [b for b in (filters.to_date, ctx.until) if b is not None]
    return since, (min(bounds) if bounds else None)


def sync_calls(ctx: SyncCtx) -> None:
    """Calls started in the window, then their parties and transcripts by batches of call ids."""
    since, until = _window(ctx)
    with ctx.http_client("API", auth=_auth(ctx.credentials)) as http:
        gong = GongClient(http)
        calls = list({str(c.get("id")): c for c in gong.calls(since, until)}.values())
        for n, call in enumerate(calls, 1):
            ctx.progress("found", external_id=str(call.get("id")), current=n, total=len(calls))
        for start in range(0, len(calls), BATCH_SIZE):
            ctx.signal.raise_if_cancelled()
            batch = calls[start : start + BATCH_SIZE]
            ids = [str(c.get("id")) for c in batch]
            parties, transcripts = gong.parties(ids), gong.transcripts(ids)
            for call, call_id in zip(batch, ids, strict=True):
                ctx.ingest.session(**session_fields(call, parties.get(call_id, []), transcripts.get(call_id, [])))
    if ctx.sync_mode == "full" and since is None and until is None:
        # A complete listing: calls this stream ingested that Gong no longer lists were deleted there.
        for gone in sorted(ctx.get_synced_ids() - {str(c.get("id")) for c in calls}):
            ctx.ingest.delete("sessions", gone)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def on_call_webhook(ctx: WebhookCtx) -> None:
    """An automation rule's ``callData`` (metadata and parties); the transcript is fetched, as a sync does."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    if payload.get("isTest") is True:
        ctx.logger.info("Gong test webhook received; nothing to ingest")
        return
    data = _mapping(payload.get("callData"))
    meta = _mapping(data.get("metaData"))
    if meta.get("id") in (None, ""):
        raise InputError("callData.metaData.id: expected the call's id in the webhook body", field="callData")
    call_id = str(meta["id"])
    with ctx.http_client("API", auth=_auth(ctx.credentials)) as http:
        gong = GongClient(http)
        parties = data.get("parties")
        if not isinstance(parties, list):
            parties = gong.parties([call_id]).get(call_id, [])
        transcript = gong.transcripts([call_id]).get(call_id, [])
    ctx.ingest.session(**session_fields(meta, [p for p in parties if isinstance(p, dict)], transcript))


plugin = define_plugin(
    id="gong",
    name="Gong",
    description="Sync Gong calls and transcripts as sessions.",
    category="sessions",
    icon=Icon(inline_svg=LOGO),
    base_urls={"API": "{base_url}"},
    auth=ApiKeyAuth(
        fields=(
            Field(id="access_key", label="Access key", secret=True, required=True,
                  help_text="Company Settings > Ecosystem > API (technical admin)."),
            Field(id="access_key_secret", label="Access key secret", secret=True, required=True),
            Field(id="base_url", label="Base URL", placeholder=EXAMPLE_BASE, required=True,
                  help_text="The https API address Gong shows with your key (region-specific)."),
        ),
        test=check_keys,
    ),
    # Gong signs automation-rule webhooks with an RS256 JWT; the connection's ``webhook_secret`` holds the
    # public key shown in the rule. No app-wide key: every company has its own.
    webhook_signature=JwtSignature(check_url=True, secret_env=None, event_id_field="callData.metaData.id"),
    rate_limit_per_minute=180,
    rate_limit_burst=1,
    docs_url="https://help.gong.io/docs/what-the-gong-api-provides",
    streams={
        "calls": Stream(kind="sessions", label="Calls", description="Recorded calls with transcripts.",
                        sync=sync_calls, webhook=on_call_webhook, filters=CallFilters, settings=CallSettings),
    },
)
