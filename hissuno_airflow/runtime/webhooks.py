"""Webhook intake and the per-stream inbox.

Intake (``receive_webhook``) is the request path and stays small: verify the plugin's declared
signature scheme *before* any database access (the connection-scoped route only reads the
connection's own row to learn its secret), answer setup handshakes inline, parse JSON, resolve the
connection, and store the event once per enabled webhook stream in ``webhook_events`` (the unique
``(connection_id, stream_id, event_id)`` key makes a replay a no-op). Then a dispatcher wakes the
stream's consumer: under Airflow it triggers the stream's DAG (coalesced: one queued run drains
every pending event); under ``hissuno serve`` a per-stream worker thread drains in-process.

``process_inbox`` is the consumer: it runs the stream's ``webhook`` handler over pending events in
arrival order, and marks each one done in the same transaction as its ingest. A failing event is
marked ``failed`` with its (redacted) error and retried by later drains up to ``MAX_ATTEMPTS``.

Each enabled webhook stream of a connection gets its own row per event, so each has its own status
while the table constraint still dedupes replays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from .. import registry
from ..kit.context import Response, WebhookCtx
from ..kit.define import PluginDef
from ..kit.errors import HissunoError, InputError, NotFoundError
from ..kit.redaction import redact, redact_text, secret_values
from ..kit.signatures import SignedRequest, WebhookEvent, resolve_secret, verify
from ..kit.streams import parse_stream_id
from ..store import connections as repo
from ..store.db import Store, get_store
from .handlers import call_handler

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
DEFAULT_MAX_BODY = 1024 * 1024
_DROP_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization"})


class PayloadTooLarge(InputError):
    """The body exceeds the webhook size limit."""

    code = "payload_too_large"
    http_status = 413


def max_body_bytes() -> int:
    """``HISSUNO_WEBHOOK_MAX_BYTES`` (default 1 MiB)."""
    try:
        return int(os.environ.get("HISSUNO_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BODY))
    except ValueError:
        return DEFAULT_MAX_BODY


@dataclass(frozen=True)
class IntakeRequest:
    """A webhook request, framework-neutral."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class IntakeResult:
    """What the route answers, and which stream inboxes received new events."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    queued: list[tuple[str, str]] = field(default_factory=list)


class _ResolveServices:
    """Read-only lookups ``resolve_connection`` may use after the signature was verified."""

    def __init__(self, store: Store, plugin_id: str) -> None:
        self._store = store
        self._plugin_id = plugin_id

    def find_connections(self, external_account_id: str) -> list[str]:
        """Ids of every connection (any project) of this provider account."""
        rows = repo.find_connections_by_account(self._store, self._plugin_id, str(external_account_id))
        return [r.id for r in rows]


@dataclass
class ResolveCtx:
    """Context of ``resolve_connection(event, ctx)``."""

    plugin_id: str
    services: _ResolveServices

    def find_connections(self, external_account_id: str) -> list[str]:
        """Ids of the connections of ``external_account_id`` (several projects may share an account)."""
        return self.services.find_connections(external_account_id)


def _payload(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        msg = "body: expected a JSON document"
        raise InputError(msg, field="body") from None


def _event_type(payload: Any) -> str | None:
    if not isinstance(payload, Mapping):
        return None
    for key in ("type", "event_type", "action", "topic"):
        v = payload.get(key)
        if isinstance(v, str):
            inner = payload.get("event")
            if key == "type" and v == "event_callback" and isinstance(inner, Mapping):
                return str(inner.get("type") or v)[:100]
            return v[:100]
    return None


def _safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    kept = {k.lower(): v for k, v in headers.items() if k.lower() not in _DROP_HEADERS}
    return redact(kept)  # type: ignore[no-any-return]


def receive_webhook(
    plugin_id: str, req: IntakeRequest, *, connection_id: str | None = None, store: Store | None = None,
    dispatcher: Dispatcher | None = None, now: float | None = None,
) -> IntakeResult:
    """Verify, dedupe and enqueue one webhook; raise a HissunoError for every refusal.

    Raises:
        UnknownPluginError: (404) no such plugin.
        NotFoundError: (404) the plugin takes no webhooks, or no connection matches the sender.
        PayloadTooLarge: (413) the body exceeds the limit.
        WebhookSignatureError: (401) missing, stale or forged signature, or no secret configured.
        InputError: (400) the verified body is not JSON.
    """
    plugin = registry.get_plugin(plugin_id)
    if len(req.body) > max_body_bytes():
        raise PayloadTooLarge(f"body: larger than {max_body_bytes()} bytes", field="body")
    scheme = plugin.webhook_signature
    if scheme is None:
        raise NotFoundError(f"plugin {plugin.id!r} does not accept webhooks", field="plugin_id")
    signed = SignedRequest(body=req.body, headers=req.headers, method=req.method, url=req.url)
    store_ = store

    def the_store() -> Store:
        nonlocal store_
        store_ = store_ or get_store()
        return store_

    if connection_id is None:
        if plugin.resolve_connection is None:
            msg = f"plugin {plugin.id!r} needs the connection id in the webhook URL"
            raise NotFoundError(msg, field="connection_id")
        verified = verify(scheme, resolve_secret(scheme), signed, now=now)
        conn_settings: Mapping[str, Any] | None = None
    else:
        # The only read before verification: the connection's own row, for its secret.
        connection = repo.get_connection(the_store(), connection_id, plugin_id=plugin.id)
        conn_settings = connection.settings
        verified = verify(scheme, resolve_secret(scheme, settings=conn_settings), signed, now=now)

    payload = _payload(req.body)
    challenge = scheme.challenge(payload)
    if challenge is not None:
        return IntakeResult(200, challenge)
    event_id = scheme.event_id(signed, payload, verified) or "sha256:" + hashlib.sha256(req.body).hexdigest()

    if connection_id is None:
        event = WebhookEvent(payload=payload, raw_body=req.body, headers=dict(req.headers), event_id=event_id)
        resolver = plugin.resolve_connection
        assert resolver is not None  # checked above, before verification
        answer = call_handler(resolver, event, ResolveCtx(plugin.id, _ResolveServices(the_store(), plugin.id)))
        if isinstance(answer, Response):
            return IntakeResult(answer.status, answer.body, dict(answer.headers))
        ids = [answer] if isinstance(answer, str) else list(answer or [])
        if not ids:
            raise NotFoundError("no connection matches this webhook", field="connection_id")
        for cid in ids:
            try:
                repo.get_connection(the_store(), cid, plugin_id=plugin.id)
            except NotFoundError:
                raise NotFoundError("connection resolution mismatch", field="connection_id") from None
    else:
        ids = [connection_id]

    queued, duplicates = _enqueue(the_store(), plugin, ids, event_id, payload, req)
    if queued:
        (dispatcher or default_dispatcher()).dispatch(queued)
    return IntakeResult(200, {"success": True, "event_id": event_id, "queued": len(queued),
                              "duplicate": duplicates > 0 and not queued})


_ENQUEUE = """
WITH target AS (
    SELECT connection_id, stream_id FROM integration_streams
    WHERE connection_id = ANY(%(connections)s) AND enabled AND split_part(stream_id, ':', 1) = ANY(%(keys)s)
), stored AS (
    INSERT INTO webhook_events (plugin_id, connection_id, stream_id, event_id, event_type, payload, raw_body, headers)
    SELECT %(plugin)s, connection_id, stream_id, %(event_id)s, %(event_type)s, %(payload)s, %(raw_body)s, %(headers)s
    FROM target
    ON CONFLICT (connection_id, stream_id, event_id) DO NOTHING
    RETURNING connection_id, stream_id
)
SELECT target.connection_id, target.stream_id, stored.stream_id IS NOT NULL AS queued
FROM target LEFT JOIN stored USING (connection_id, stream_id)
ORDER BY target.connection_id, target.stream_id
"""


def _enqueue(
    store: Store, plugin: PluginDef, connection_ids: list[str], event_id: str, payload: Any, req: IntakeRequest
) -> tuple[list[tuple[str, str]], int]:
    """Store the event once per enabled webhook stream of the connections: one statement, one round trip."""
    keys = [key for key, st in plugin.streams.items() if st.webhook is not None]
    if not keys:
        return [], 0
    with store.autocommit() as conn:
        rows = conn.execute(_ENQUEUE, {
            "connections": connection_ids, "keys": keys, "plugin": plugin.id, "event_id": event_id,
            "event_type": _event_type(payload), "payload": Jsonb(payload), "raw_body": req.body,
            "headers": Jsonb(_safe_headers(req.headers)),
        }).fetchall()
    queued = [(r["connection_id"], r["stream_id"]) for r in rows if r["queued"]]
    return queued, len(rows) - len(queued)


# -- dispatch -------------------------------------------------------------------------------------


class Dispatcher:
    """Wakes the consumer of stream inboxes that received events."""

    def dispatch(self, targets: list[tuple[str, str]]) -> None:  # pragma: no cover - interface
        """Make sure each (connection, stream) inbox gets drained soon."""
        raise NotImplementedError


class NullDispatcher(Dispatcher):
    """Leaves events pending (tests; or an operator draining on a schedule)."""

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        """Do nothing."""


class InProcessDispatcher(Dispatcher):
    """One drain thread per stream; events arriving during a drain make it run once more (coalescing)."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], bool] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._threads: list[threading.Thread] = []

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        """Start (or re-arm) the drain thread of each target."""
        for key in targets:
            with self._lock:
                if self._running.get(key):
                    self._dirty.add(key)
                    continue
                self._running[key] = True
            t = threading.Thread(target=self._drain, args=(key,), name=f"hissuno-inbox-{key[0]}", daemon=True)
            self._threads.append(t)
            t.start()

    def _drain(self, key: tuple[str, str]) -> None:
        try:
            while True:
                with self._lock:
                    self._dirty.discard(key)
                try:
                    process_inbox(key[0], key[1], store=self.store)
                except Exception:
                    log.exception("draining webhook inbox %s/%s failed", *key)
                with self._lock:
                    if key not in self._dirty:
                        self._running[key] = False
                        return
        finally:
            with self._lock:
                if self._running.get(key) and key not in self._dirty:
                    self._running[key] = False

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Join every drain thread (tests)."""
        for t in list(self._threads):
            t.join(timeout)


class AirflowDispatcher(Dispatcher):
    """Triggers the stream's DAG from inside the API server, unless a run is already queued."""

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        """Trigger in a background thread so the provider gets its answer at once."""
        threading.Thread(target=self._trigger_all, args=(list(targets),), daemon=True,
                         name="hissuno-trigger").start()

    def _trigger_all(self, targets: list[tuple[str, str]]) -> None:
        for cid, sid in targets:
            try:
                trigger_stream_dag(cid, sid)
            except Exception as exc:
                log.warning("could not trigger the DAG of %s/%s: %s: %s", cid, sid, type(exc).__name__,
                            redact_text(str(exc)))


def trigger_stream_dag(connection_id: str, stream_id: str) -> str | None:
    """Queue one run of the stream's DAG with ``conf.triggered_by = webhook``; None when one is queued."""
    from ..airflow_runs import trigger_stream_run

    _, run_id = trigger_stream_run(connection_id, stream_id, conf={"triggered_by": "webhook"},
                                   user="hissuno-webhook", coalesce=True)
    return run_id


_default: Dispatcher | None = None


def default_dispatcher() -> Dispatcher:
    """``HISSUNO_WEBHOOK_DISPATCH`` (airflow, inprocess, none); set by the app that serves the routes."""
    global _default
    if _default is None:
        mode = os.environ.get("HISSUNO_WEBHOOK_DISPATCH", "inprocess")
        _default = {"airflow": AirflowDispatcher, "none": NullDispatcher}.get(mode, InProcessDispatcher)()
    return _default


def set_default_dispatcher(dispatcher: Dispatcher | None) -> None:
    """Replace the process-wide dispatcher (the web app does this at start-up)."""
    global _default
    _default = dispatcher


# -- the inbox ------------------------------------------------------------------------------------


@dataclass
class InboxResult:
    """Outcome of one drain."""

    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class _TxStore:
    """A Store look-alike whose every ``connection()`` is one open transaction (nested as savepoints)."""

    def __init__(self, conn: Any, real: Store) -> None:
        self._conn = conn
        self.url = real.url
        self.pool = real.pool

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self._conn.transaction():
            yield self._conn


class _WebhookServices:
    def __init__(self, plugin: PluginDef, ingest: Any, store: Store, connection: Any, secrets: list[str],
                 logger: Any) -> None:
        self.plugin = plugin
        self.ingest = ingest
        self._store = store
        self._connection = connection
        self.secrets = secrets
        self.logger = logger

    def is_synced(self, external_id: str) -> bool:
        return bool(self.ingest.is_synced(external_id))

    def get_synced_ids(self) -> set[str]:
        return set(self.ingest.get_synced_ids())

    def progress(self, event: Any) -> None:
        """Webhook events have no progress stream."""

    def save_credentials(self, credentials: Mapping[str, Any]) -> None:
        from ..credentials import save_credentials

        save_credentials(self._store, self._connection, dict(credentials))

    def advance_cursor(self, ts: Any) -> None:
        """The cursor belongs to polling runs; webhooks never move it."""

    def http_client(self, base: str = "API", **kwargs: Any) -> Any:
        from .services import make_http_client

        return make_http_client(self.plugin, base, secrets=self.secrets, logger=self.logger, **kwargs)


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
    from ..credentials import load_credentials
    from ..store.enrich import Enricher
    from ..store.ingest import StreamIngest
    from .logging import PluginLogger
    from .sync import validate_config

    store = store or get_store()
    connection = repo.get_connection(store, connection_id)
    plugin = registry.get_plugin(connection.plugin_id)
    key, instance = parse_stream_id(stream_id)
    stream = plugin.streams.get(key)
    if stream is None or stream.webhook is None:
        raise InputError(f"stream {stream_id!r} of plugin {plugin.id!r} has no webhook handler", field="stream_id")
    row = repo.get_stream(store, connection_id, stream_id)
    settings_ = validate_config(stream.settings, row.settings, "settings")
    credentials = load_credentials(store, connection)
    secrets = secret_values(credentials, plugin.secret_fields)
    logger = PluginLogger(f"{plugin.id}:{stream_id}", secrets)
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
                ingest = StreamIngest(_TxStore(conn, store), project_id=connection.project_id,  # type: ignore[arg-type]
                                      connection_id=connection_id, stream_id=stream_id, enricher=enricher)
                services = _WebhookServices(plugin, ingest, store, connection, secrets, logger)
                ctx = WebhookCtx(
                    plugin_id=plugin.id, project_id=connection.project_id, connection_id=connection_id,
                    stream_id=stream_id, stream_key=key, instance_id=instance, credentials=credentials,
                    settings=settings_, payload=ev["payload"], raw_body=bytes(ev["raw_body"]),
                    headers=dict(ev["headers"] or {}), event_id=ev["event_id"],
                    services=services, logger=logger,
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
