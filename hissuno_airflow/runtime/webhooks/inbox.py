"""The per-stream inbox consumer: the webhook handler over pending events, in order, with retries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ... import registry
from ...kit.context import WebhookCtx
from ...kit.errors import HissunoError, InputError
from ...kit.redaction import redact_text
from ...kit.streams import parse_stream_id
from ...store import connections as repo
from ...store.db import Store, get_store
from ..handlers import call_handler
from ..services import ConnectionServices

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


@dataclass
class InboxResult:
    """Outcome of one drain."""

    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class _WebhookServices:
    """The runtime side of a WebhookCtx: the connection's services plus this event's ingest."""

    def __init__(self, conn: ConnectionServices, ingest: Any) -> None:
        self.conn = conn
        self.ingest = ingest

    def is_synced(self, external_id: str) -> bool:
        return bool(self.ingest.is_synced(external_id))

    def get_synced_ids(self) -> set[str]:
        return set(self.ingest.get_synced_ids())

    def progress(self, event: Any) -> None:
        """Webhook events have no progress stream."""

    def save_credentials(self, credentials: Mapping[str, Any]) -> None:
        self.conn.save(dict(credentials))

    def advance_cursor(self, ts: Any) -> None:
        """The cursor belongs to polling runs; webhooks never move it."""

    def base_url(self, name: str) -> str:
        return self.conn.base_url(name)

    def http_client(self, base: str = "API", **kwargs: Any) -> Any:
        return self.conn.http_client(base, **kwargs)


_SELECT_NEXT = (
    "SELECT id::text AS id, event_id, payload, raw_body, headers, attempts FROM webhook_events"
    " WHERE connection_id = %(c)s AND stream_id = %(s)s AND NOT (id = ANY(%(seen)s::uuid[]))"
    " AND (status = 'pending' OR (status = 'failed' AND attempts < %(max)s))"
    " ORDER BY received_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)


def process_inbox(
    connection_id: str, stream_id: str, *, store: Store | None = None, limit: int | None = None,
    on_event: Callable[[str, str, str | None], None] | None = None,
) -> InboxResult:
    """Run the stream's webhook handler over its pending events, oldest first.

    Each event is handled inside one transaction together with its ingest writes and its ``done`` mark,
    so a crash leaves it pending and a failure leaves no partial rows. Failed events are kept
    (``status = 'failed'``, ``error``, ``attempts``) and retried up to ``MAX_ATTEMPTS`` times.

    Args:
        connection_id: The connection.
        stream_id: The stream (``key`` or ``key:instance``).
        store: The store (default: the configured one).
        limit: Stop after this many events (default: drain everything).
        on_event: Called with (event id, status, error) after each event.

    Returns:
        Counts of events done and failed in this drain.
    """
    from ...store.enrich import Enricher
    from ...store.ingest import StreamIngest
    from ..sync import connection_services, validate_config

    store = store or get_store()
    connection = repo.get_connection(store, connection_id)
    plugin = registry.get_plugin(connection.plugin_id)
    key, instance = parse_stream_id(stream_id)
    stream = plugin.streams.get(key)
    if stream is None or stream.webhook is None:
        raise InputError(f"stream {stream_id!r} of plugin {plugin.id!r} has no webhook handler", field="stream_id")
    row = repo.get_stream(store, connection_id, stream_id)
    settings_ = validate_config(stream.settings, row.settings, "settings")
    filters = validate_config(stream.filters, row.filter_config, "filters")
    # Handlers may call the provider: hand them a live token (refreshed or minted once, under the lock).
    conn_services = connection_services(store, connection, label=stream_id)
    credentials = conn_services.credentials()
    secrets, logger = conn_services.secrets, conn_services.logger
    try:  # first finish the enrichment a stopped run or drain of this connection left pending
        Enricher(store, connection.project_id).resume(connection_id)
    except Exception:
        log.warning("resuming pending enrichment of %s failed", connection_id, exc_info=True)
    result = InboxResult()
    seen: list[str] = []
    while limit is None or result.done + result.failed < limit:
        enricher = Enricher(store, connection.project_id)
        current: str | None = None
        try:
            with store.connection() as conn:
                ev = conn.execute(_SELECT_NEXT, {"c": connection_id, "s": stream_id, "seen": seen,
                                                 "max": MAX_ATTEMPTS}).fetchone()
                if ev is None:
                    break
                current = ev["id"]
                seen.append(current)
                # The event's writes join this transaction, which also marks it done: all or nothing.
                ingest = StreamIngest(conn, project_id=connection.project_id,
                                      connection_id=connection_id, stream_id=stream_id, enricher=enricher,
                                      secrets=secrets)
                services = _WebhookServices(conn_services, ingest)
                ctx = WebhookCtx(
                    plugin_id=plugin.id, project_id=connection.project_id, connection_id=connection_id,
                    stream_id=stream_id, stream_key=key, instance_id=instance, credentials=credentials,
                    settings=settings_, payload=ev["payload"], raw_body=bytes(ev["raw_body"]),
                    headers=dict(ev["headers"] or {}), event_id=ev["event_id"],
                    services=services, logger=logger, filters=filters,
                )
                call_handler(stream.webhook, ctx)
                ingest.flush()
                conn.execute("UPDATE webhook_events SET status = 'done', attempts = attempts + 1,"
                             " error = NULL, processed_at = now() WHERE id = %s", (ev["id"],))
        except Exception as exc:
            if current is None:
                raise
            err = _describe(exc, secrets)
            with store.connection() as conn:
                conn.execute("UPDATE webhook_events SET status = 'failed', attempts = attempts + 1, error = %s,"
                             " processed_at = now() WHERE id = %s", (err, current))
            result.failed += 1
            result.errors.append(err)
            logger.warning(f"webhook event failed: {err}")
            if on_event:
                on_event(current, "failed", err)
            continue
        result.done += 1
        if on_event:
            on_event(seen[-1], "done", None)
        try:
            enricher.run()
        except Exception:
            log.exception("enrichment after a webhook event failed")
    return result


def _describe(exc: BaseException, secrets: list[str]) -> str:
    text = f"{exc.code}: {exc}" if isinstance(exc, HissunoError) else f"{type(exc).__name__}: {exc}"
    return redact_text(text, secrets)[:2000]


def list_events(store: Store, connection_id: str, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Recent events of a connection (no bodies), newest first: what the UI shows for retries."""
    sql = ("SELECT id::text AS id, stream_id, event_id, event_type, status, attempts, error, received_at,"
           " processed_at"
           " FROM webhook_events WHERE connection_id = %s")
    args: list[Any] = [connection_id]
    if status:
        sql += " AND status = %s"
        args.append(status)
    with store.connection() as conn:
        rows = conn.execute(sql + " ORDER BY received_at DESC LIMIT %s", (*args, limit)).fetchall()
    out = []
    for r in rows:
        out.append({**r, "received_at": r["received_at"].isoformat(),
                    "processed_at": r["processed_at"].isoformat() if r["processed_at"] else None})
    return out
