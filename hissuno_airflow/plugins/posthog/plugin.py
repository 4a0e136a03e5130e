"""The ``posthog`` plugin: behavioural sessions per contact, and the project's event and property definitions."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

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
    define_plugin,
)
from hissuno_airflow.kit.http import BearerAuth, ProviderClient

from .client import (
    EU_CLOUD,
    US_CLOUD,
    PostHogClient,
    base_name,
    check_key,
    check_project_id,
    hogql_time,
    host_label,
    normalize_host,
)
from .mapping import (
    BEHAVIORAL_QUERY,
    Activity,
    behavioral_session,
    contact_fields,
    event_definition_record,
    person_email,
    person_name,
    property_definitions_record,
)


class BehavioralFilters(BaseModel):
    """Which persons and which events a run reads."""

    sync_new_contacts: bool = False
    """Also make a contact (and its session) of each PostHog person whose email is not yet a contact of
    the project. Off: only the project's existing contacts are matched and enriched (as the reference)."""
    max_new_contacts: int = PField(default=1000, ge=0, le=50_000)
    """At most this many new contacts (distinct emails) per run, in PostHog's person order."""
    from_date: datetime | None = None
    """Start of the event window; default 30 days before its end."""
    to_date: datetime | None = None
    """End of the event window; default the end of the current UTC day."""


class BehavioralSettings(BaseModel):
    """How events become signals."""

    feature_mapping: dict[str, list[str]] = PField(default_factory=dict)
    """Feature name -> the event names that count as using it."""
    signal_events: list[str] = PField(default_factory=lambda: ["$exception", "$rageclick"])
    """Events reported as signals; ``*error*``/``*fail*`` style patterns match names containing the word."""
    person_properties: list[str] = PField(default_factory=lambda: ["plan", "email", "name"])
    """Person properties copied to the contact as ``posthog_<key>``."""


def _http(ctx: SyncCtx | AuthCtx, credentials: Any) -> ProviderClient:
    return ctx.http_client(base_name(normalize_host(credentials.get("host"))),
                           auth=BearerAuth(str(credentials["api_key"]).strip()))


def check_connection(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    """Connect: the personal key must read the project; the account is ``<host>/<project id>``."""
    key = check_key(credentials.get("api_key"))
    project_id = check_project_id(credentials.get("project_id"))
    host = normalize_host(credentials.get("host"))
    with _http(ctx, {**credentials, "api_key": key}) as http:
        project = PostHogClient(http, project_id).project_info()
    if project is None:
        msg = (f"project_id: project {project_id} was not found on {host_label(host)}, or this key cannot read"
               " it (give the key the project:read scope, and check the host: US, EU or your own)")
        raise InputError(msg, field="project_id")
    return AuthResult(external_account_id=f"{host_label(host)}/{project_id}",
                      account_label=str(project.get("name") or f"PostHog {project_id}"),
                      credentials={"api_key": key, "project_id": project_id, "host": host})


def _window(ctx: SyncCtx) -> tuple[datetime, datetime]:
    """[start, end) of the events read. A backfill run reads exactly its interval."""
    if ctx.triggered_by == "backfill" and ctx.last_sync_at is not None and ctx.until is not None:
        return ctx.last_sync_at, ctx.until
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # The end of the current day, not now: metrics relative to it stay equal all day, so a rerun
    # without new events writes nothing.
    end = min(d for d in (ctx.until, ctx.filters.to_date, today + timedelta(days=1)) if d is not None)
    return (ctx.filters.from_date or end - timedelta(days=30)), end


def sync_behavioral(ctx: SyncCtx) -> None:
    """One behavioural session per matched contact, updated in place.

    The project's contacts (whichever integration made them) are read through the store
    (``ctx.project_contacts()``, not raw SQL) and matched to PostHog persons by email; a contact no
    person matches is skipped. With ``sync_new_contacts``, persons with an email that is no contact yet
    become contacts too (at most ``max_new_contacts`` a run).
    """
    start, end = _window(ctx)
    days = max(1, round((end - start) / timedelta(days=1)))
    known = {c.email.strip().lower(): c.name for c in ctx.project_contacts() if c.email.strip()}
    new_left = ctx.filters.max_new_contacts if ctx.filters.sync_new_contacts else 0
    with _http(ctx, ctx.credentials) as http:
        client = PostHogClient(http, str(ctx.credentials["project_id"]))
        by_email: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for person in client.persons():
            email = person_email(person)
            if email is None:
                continue
            if email not in by_email and email not in known:
                if new_left <= 0:
                    continue
                new_left -= 1
            by_email[email].append(person)
        ctx.signal.raise_if_cancelled()
        activity: dict[str, Activity] = defaultdict(Activity)
        values = {"start": hogql_time(start), "end": hogql_time(end), "d7": hogql_time(end - timedelta(days=7)),
                  "d14": hogql_time(end - timedelta(days=14)), "d15": hogql_time(end - timedelta(days=15))}
        for row in client.hogql(BEHAVIORAL_QUERY, values):
            activity[str(row["person_id"])].rows.append(row)
    settings: BehavioralSettings = ctx.settings
    for email, persons in by_email.items():
        ctx.signal.raise_if_cancelled()
        ctx.progress("found", external_id=f"contact:{email}")
        name = known.get(email) or person_name(persons[0], email)
        mine = Activity([r for p in persons for pid in {str(p.get("uuid")), str(p.get("id"))}
                         for r in activity.get(pid, Activity()).rows])
        ctx.ingest.contact(**contact_fields(email, name, persons, settings.person_properties))
        ctx.ingest.session(**behavioral_session(
            email, name, persons, mine, feature_mapping=settings.feature_mapping,
            signal_events=settings.signal_events, window_end=end, days=days))


def sync_definitions(ctx: SyncCtx) -> None:
    """Event definitions (one document each) and property definitions (one table per type), as knowledge.

    Every run lists them all, so a definition gone from PostHog is deleted here too.
    """
    seen: set[str] = set()
    with _http(ctx, ctx.credentials) as http:
        client = PostHogClient(http, str(ctx.credentials["project_id"]))
        events = client.event_definitions()
        for definition in events.rows:
            ctx.signal.raise_if_cancelled()
            record = event_definition_record(definition)
            ctx.progress("found", external_id=record["external_id"])
            seen.add(record["external_id"])
            ctx.ingest.knowledge(**record)
        for type in ("event", "person"):
            record = property_definitions_record(type, client.property_definitions(type).rows)
            ctx.progress("found", external_id=record["external_id"])
            seen.add(record["external_id"])
            ctx.ingest.knowledge(**record)
    if not events.complete:
        # A definition missing from a listing that kept changing may still exist: deleting it would be
        # wrong, keeping it one run longer is not. The next run that reads the listing whole deletes.
        ctx.logger.warning("posthog: the event definitions changed while they were listed; deletions wait "
                           "for the next run")
        return
    for gone in sorted(ctx.get_synced_ids() - seen):
        ctx.ingest.delete("knowledge", gone)


plugin = define_plugin(
    id="posthog",
    name="PostHog",
    description="Enrich contacts with product-usage signals and create behavioral sessions.",
    category="analytics",
    icon=Icon(),
    docs_url="https://posthog.com/docs/api",
    base_urls={"US": US_CLOUD, "EU": EU_CLOUD, "API": "{host}"},
    # Personal-key limits (providers.md 11.3): persons and queries are ClickHouse-backed, 240/minute.
    # HogQL's 120/hour is kept by the client's per-run query cap.
    rate_limit_per_minute=240,
    auth=ApiKeyAuth(
        fields=(
            Field(id="api_key", label="Personal API key", placeholder="phx_...", secret=True, required=True,
                  help_text="Account settings → Personal API keys (scopes: project, person, query, "
                            "event/property definition read)"),
            Field(id="project_id", label="Project id", placeholder="12345", required=True,
                  help_text="Project settings → Project ID"),
            Field(id="host", label="Host", placeholder="us",
                  help_text="'us' (default) or 'eu' for PostHog Cloud, or your self-hosted URL"),
        ),
        test=check_connection,
    ),
    streams={
        "behavioral": Stream(kind="sessions", label="Behavioral signals",
                             description="Behavioral signals and engagement scores per contact.",
                             sync=sync_behavioral, filters=BehavioralFilters, settings=BehavioralSettings),
        "analytics": Stream(kind="analytics", label="Event and property definitions",
                            description="The project's event and property definitions, as knowledge.",
                            sync=sync_definitions),
    },
)
