"""The ``fathom`` plugin: recorded meetings as meeting sessions, by sync and by Fathom's webhook."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PField

from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthCtx,
    AuthResult,
    Field,
    Icon,
    ProviderResponseError,
    Stream,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.http import HeaderAuth
from hissuno_airflow.kit.signatures import StandardWebhooks

from .client import FathomClient, account_id
from .mapping import has_speakers, session_fields, summary_text


class MeetingFilters(BaseModel):
    """Which meetings a run reads, by Fathom creation time."""

    from_date: datetime | None = None
    """Ignore meetings created before this time."""
    to_date: datetime | None = None
    """Ignore meetings created at or after this time."""


class MeetingSettings(BaseModel):
    """How incremental runs look back."""

    rescan_days: int = PField(default=7, ge=0, le=90)
    """Each incremental run lists again the meetings created this many days before the cursor. Fathom
    lists by creation time only and stamps no update time, so this is how edits to recent meetings (a
    renamed title, a regenerated summary, speakers matched later) reach their sessions; unchanged
    meetings write nothing. 0 reads only meetings newer than the cursor."""


def _auth(credentials: Any) -> HeaderAuth:
    return HeaderAuth("X-Api-Key", str(credentials["api_key"]).strip())


def check_key(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    """Connect: the key must list meetings (a refused key is Fathom's 401, shown as a 400).

    Fathom has no who-am-I endpoint (``/users`` and ``/team_members`` list a whole team, and a
    meeting's ``recorded_by`` may be a teammate who shared it), so nothing the API returns names the
    key's owner uniquely. The account id is therefore a hash of the key: two keys never collide (the
    reference's constant "Fathom" fallback made a second key overwrite the first), and the key itself
    is never stored outside the encrypted credentials. The label is only for people.
    """
    with ctx.http_client("API", auth=_auth(credentials)) as http:
        first = FathomClient(http).first_meeting()
    owner = (first or {}).get("recorded_by") or {}
    ext = account_id(str(credentials["api_key"]))
    label = f"Fathom ({owner.get('email') or owner.get('name')})" if isinstance(owner, dict) and (
        owner.get("email") or owner.get("name")) else f"Fathom key {ext[-8:]}"
    return AuthResult(external_account_id=ext, account_label=label,
                      credentials={"api_key": str(credentials["api_key"]).strip()})


def _ingest_meeting(ctx: SyncCtx | WebhookCtx, client: FathomClient, meeting: dict[str, Any]) -> None:
    """Fill in a missing transcript or summary from their own endpoints, then ingest the session."""
    recording_id = meeting.get("recording_id")
    transcript = meeting.get("transcript")
    summary = summary_text(meeting.get("default_summary"))
    if recording_id is not None:
        try:
            if not has_speakers(transcript):
                transcript = client.transcript(recording_id) or transcript
            if summary is None:
                summary = summary_text(client.summary(recording_id))
        except ProviderResponseError as exc:
            # A 4xx for one recording's extras: keep the meeting with what it embeds (as the reference
            # does). Rate limits, 5xx and auth errors are not caught: they fail the run, cursor kept.
            ctx.logger.warning(f"fathom recording {recording_id}: {exc}")
    ctx.ingest.session(**session_fields(meeting, transcript if isinstance(transcript, list) else None, summary))


def _created_after(ctx: SyncCtx) -> datetime | None:
    """Where the listing starts: the cursor (or ``from_date``), and on an incremental run ``rescan_days``
    before the cursor, never before ``from_date``. A backfill reads exactly its window."""
    since = ctx.since(ctx.filters.from_date)
    rescan: int = ctx.settings.rescan_days
    if ctx.sync_mode != "incremental" or ctx.triggered_by == "backfill" or ctx.last_sync_at is None or not rescan:
        return since
    start = ctx.last_sync_at - timedelta(days=rescan)
    return max(start, ctx.filters.from_date) if ctx.filters.from_date is not None else start


def sync_meetings(ctx: SyncCtx) -> None:
    """Meetings created since the cursor less the re-scan window (or the filters' window), with
    transcript and summary."""
    until = min((d for d in (ctx.until, ctx.filters.to_date) if d is not None), default=None)
    with ctx.http_client("API", auth=_auth(ctx.credentials)) as http:
        client = FathomClient(http)
        for meeting in client.meetings(created_after=_created_after(ctx), created_before=until):
            ctx.signal.raise_if_cancelled()
            ctx.progress("found", external_id=str(meeting.get("recording_id")))
            _ingest_meeting(ctx, client, meeting)


def on_meeting_ready(ctx: WebhookCtx) -> None:
    """Fathom's one event, "new meeting content ready": the body is the meeting, as ``/meetings`` lists it.

    Handled by the ``meetings`` stream itself, so a meeting that arrives by webhook and later by sync
    is one session (dedup is per connection and stream).
    """
    if not isinstance(ctx.payload, dict):
        msg = "fathom webhook: expected a JSON meeting object"
        raise ProviderResponseError(msg, provider="fathom", status=400)
    with ctx.http_client("API", auth=_auth(ctx.credentials)) as http:
        _ingest_meeting(ctx, FathomClient(http), ctx.payload)


plugin = define_plugin(
    id="fathom",
    name="Fathom",
    description="Sync your Fathom meetings as sessions for analysis.",
    category="sessions",
    icon=Icon(),
    docs_url="https://developers.fathom.ai",
    base_urls={"API": "https://api.fathom.ai/external/v1"},
    # 60 requests per minute per user, across all of the user's keys (providers.md 10.3).
    rate_limit_per_minute=60,
    auth=ApiKeyAuth(
        fields=(Field(id="api_key", label="API key", placeholder="fathom_...", secret=True, required=True,
                      help_text="Fathom Settings → API Access → Generate API key"),),
        test=check_key,
    ),
    webhook_signature=StandardWebhooks(),
    streams={
        "meetings": Stream(
            kind="sessions", label="Meetings", description="Recorded meetings with transcripts.",
            sync=sync_meetings, webhook=on_meeting_ready, filters=MeetingFilters, settings=MeetingSettings,
            frequencies=("manual", "1h", "6h", "24h", "webhook"),
        ),
    },
)
