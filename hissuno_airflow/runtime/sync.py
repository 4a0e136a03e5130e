"""Run one stream of one connection: the framework-free core the CLI, the web routes and the
Airflow operator all call.

What it fixes from the original (reference 2.6, 2.8): the cursor is the high-water mark of ingested
provider timestamps (never the wall clock) and moves only when a run succeeds; one run per stream
at a time (a PostgreSQL advisory lock); a run whose process died is marked as such instead of
blocking the stream forever; filters and settings are validated and their defaults merged.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from .. import registry
from ..credentials import load_credentials, save_credentials
from ..kit.context import CancelSignal, ProgressEvent, SyncCtx
from ..kit.define import PluginDef
from ..kit.errors import HissunoError, InputError, ProviderAuthError, SyncAlreadyRunning, SyncCancelled
from ..kit.redaction import redact_text, secret_values
from ..kit.streams import Stream, parse_stream_id
from ..store import connections as repo
from ..store.connections import ConnectionRow
from ..store.db import Store, get_store
from ..store.ingest import StreamIngest
from .handlers import call_handler
from .logging import PluginLogger
from .services import budget_for, make_http_client, resolve_base

log = logging.getLogger(__name__)
COUNTED = ("found", "synced", "skipped", "failed", "deleted")
# Stream kinds that are one ingested entity kind (an analytics stream counts whatever it ingests).
_ENTITY_KINDS = frozenset({"sessions", "contacts", "companies", "issues", "knowledge"})
# Auth types whose credentials carry an access token that expires (refreshed or minted again).
_TOKEN_AUTH_TYPES = frozenset({"oauth2", "github_app"})
PERSIST_EVERY_S = 1.0


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class CredentialSource(Protocol):
    """Where a run reads and writes its connection's credentials."""

    def load(self) -> dict[str, Any]: ...
    def save(self, credentials: dict[str, Any]) -> None: ...


class StoreCredentialSource:
    """Credentials from the connection's configured backend."""

    def __init__(self, store: Store, connection: ConnectionRow) -> None:
        self.store = store
        self.connection = connection

    def load(self) -> dict[str, Any]:
        """Current credentials."""
        return load_credentials(self.store, self.connection)

    def save(self, credentials: dict[str, Any]) -> None:
        """Persist new credentials."""
        save_credentials(self.store, self.connection, credentials)


@dataclass
class SyncResult:
    """Outcome of one run."""

    run_id: str | None
    status: str
    counts: dict[str, int]
    cursor_before: datetime | None
    cursor_after: datetime | None
    error: str | None = None
    error_code: str | None = None
    retriable: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (what the CLI prints and the operator pushes)."""
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {"run_id": self.run_id, "status": self.status, "counts": self.counts,
                "cursor_before": iso(self.cursor_before), "cursor_after": iso(self.cursor_after),
                "error": self.error, "error_code": self.error_code}


def validate_config(model: type[BaseModel] | None, raw: Mapping[str, Any] | None, what: str) -> Any:
    """Validate filters/settings against the stream's model, merging defaults; InputError names the field."""
    if model is None:
        return dict(raw or {})
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        err = exc.errors(include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = f"{what}.{loc}: {err['msg']}"
        raise InputError(msg, field=f"{what}.{loc}") from None


@dataclass
class _Services:
    """The runtime side of a SyncCtx."""

    plugin: PluginDef
    ingest: StreamIngest
    source: CredentialSource
    logger: PluginLogger
    secrets: list[str]
    on_progress: Callable[[ProgressEvent, dict[str, int]], None] | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    high_water: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    rate_limiter: Any = None
    store: Store | None = None
    run_id: str | None = None
    _persisted_at: float = 0.0

    def is_synced(self, external_id: str) -> bool:
        return self.ingest.is_synced(external_id)

    def get_synced_ids(self) -> set[str]:
        return self.ingest.get_synced_ids()

    def progress(self, event: ProgressEvent) -> None:
        with self.lock:
            if event.type in self.counts:
                self.counts[event.type] += 1
            snapshot = dict(self.counts)
            persist = time.monotonic() - self._persisted_at >= PERSIST_EVERY_S
            if persist:
                self._persisted_at = time.monotonic()
        if persist:
            self._persist(snapshot, event)
        if event.message:
            event = event.model_copy(update={"message": redact_text(event.message, self.secrets)})
        if self.on_progress is not None:
            try:
                self.on_progress(event, snapshot)
            except Exception:  # a broken progress sink never fails a sync
                log.warning("progress sink failed", exc_info=True)

    def _persist(self, counts: dict[str, int], event: ProgressEvent) -> None:
        """Write live counts to the run row, so a page can follow a run executing in another process."""
        if self.store is None or self.run_id is None:
            return
        try:
            with self.store.connection() as conn:
                conn.execute(
                    "UPDATE integration_sync_runs SET counts = %s, progress = %s, heartbeat_at = now()"
                    " WHERE id = %s",
                    (Jsonb(counts), Jsonb({"current": event.current, "total": event.total}), self.run_id),
                )
        except Exception:  # live progress is best effort; the final counts are written at the end
            log.warning("could not record live progress", exc_info=True)

    def save_credentials(self, credentials: Mapping[str, Any]) -> None:
        self.source.save(dict(credentials))
        self.secrets.extend(secret_values(credentials, self.plugin.secret_fields))

    def advance_cursor(self, ts: datetime) -> None:
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        with self.lock:
            if self.high_water is None or ts > self.high_water:
                self.high_water = ts

    def base_url(self, name: str) -> str:
        return resolve_base(self.plugin, name)

    def http_client(self, base: str = "API", **kwargs: Any) -> Any:
        kwargs.setdefault("rate_limiter", self.rate_limiter)  # a plugin's own limiter wins
        return make_http_client(self.plugin, base, secrets=self.secrets, logger=self.logger, **kwargs)


def _lock_key(connection_id: str, stream_id: str) -> int:
    digest = hashlib.blake2b(f"sync:{connection_id}:{stream_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def resolve_stream(plugin: PluginDef, stream_id: str) -> tuple[str, str | None, Stream]:
    """(key, instance, definition) of a stream id; InputError when the key is unknown."""
    key, instance = parse_stream_id(stream_id)
    if key not in plugin.streams:
        msg = f"plugin {plugin.id!r} has no stream {key!r}; expected one of {', '.join(plugin.streams)}"
        raise InputError(msg, field="stream_id")
    return key, instance, plugin.streams[key]


def _recover_abandoned(store: Store, connection_id: str, stream_id: str) -> None:
    """Close runs left ``in_progress`` by a process that died; only called while holding the stream lock,
    so no live run can be among them (the original let such rows block the stream forever)."""
    with store.connection() as conn:
        conn.execute(
            "UPDATE integration_sync_runs SET status = 'error', completed_at = now(),"
            " error_message = 'run abandoned (its process stopped without finishing)'"
            " WHERE connection_id = %s AND stream_id = %s AND status = 'in_progress'",
            (connection_id, stream_id),
        )


def run_stream_sync(
    connection_id: str, stream_id: str, *, store: Store | None = None, triggered_by: str = "manual",
    sync_mode: str = "incremental", cursor: Any = UNSET, until: datetime | None = None,
    commit_cursor: bool = True, signal: CancelSignal | None = None,
    on_progress: Callable[[ProgressEvent, dict[str, int]], None] | None = None,
    credentials: CredentialSource | None = None, external_run_id: str | None = None,
    logger: logging.Logger | None = None, rate_limiter: Any = None,
) -> SyncResult:
    """Run one stream once.

    Args:
        connection_id: The connection.
        stream_id: ``key`` or ``key:instance``; must have a stream row.
        store: The store (default: the configured one).
        triggered_by: manual, cron, webhook or backfill.
        sync_mode: incremental or full (full ignores the cursor; records are still upserted).
        cursor: UNSET reads the stream row's ``last_sync_at``; any other value (a datetime or None)
            is used as ``ctx.last_sync_at`` (the Airflow operator passes its XCom cursor).
        until: Exclusive upper bound of provider update times (backfill windows).
        commit_cursor: Write the new high-water mark to the stream row on success (False for backfill).
        signal: Cancellation flag; the handler stops at its next check.
        on_progress: Called with each (redacted) progress event and the running counts.
        credentials: Where credentials come from (default: the connection's backend).
        external_run_id: Id of the orchestrator's run (Airflow run id), recorded on the run row.
        logger: Logger for the plugin's messages.
        rate_limiter: Shared request budget for the provider account.

    Returns:
        SyncResult; a failing plugin gives status ``error`` (pre-check failures raise InputError).
    """
    store = store or get_store()
    connection = repo.get_connection(store, connection_id)
    plugin = registry.get_plugin(connection.plugin_id)
    key, instance, stream = resolve_stream(plugin, stream_id)
    if stream.sync is None:
        msg = f"stream {key!r} of plugin {plugin.id!r} has no sync handler (it is webhook-only)"
        raise InputError(msg, field="stream_id")
    row = repo.get_stream(store, connection_id, stream_id)
    filters = validate_config(stream.filters, row.filter_config, "filters")
    settings_ = validate_config(stream.settings, row.settings, "settings")
    if sync_mode not in ("incremental", "full"):
        raise InputError(f"sync_mode: expected incremental or full; got {sync_mode!r}", field="sync_mode")
    cursor_before = row.last_sync_at if cursor is UNSET else cursor
    if until is not None and cursor is not UNSET and cursor is not None and until <= cursor:
        # An explicit window that is empty or inverted is a typo, not a successful sync of nothing.
        msg = f"until: expected a time after the window start {cursor.isoformat()}; got {until.isoformat()}"
        raise InputError(msg, field="until")
    signal = signal or CancelSignal()
    source = credentials or StoreCredentialSource(store, connection)

    lock_conn = store.pool.getconn()
    try:
        got = lock_conn.execute("SELECT pg_try_advisory_lock(%s) AS ok",
                                (_lock_key(connection_id, stream_id),)).fetchone()
        lock_conn.commit()
        if not got or not got["ok"]:
            msg = f"a sync of {connection_id}/{stream_id} is already running"
            raise SyncAlreadyRunning(msg, field="stream_id")
        _recover_abandoned(store, connection_id, stream_id)
        return _run_locked(
            store, plugin, connection, key, instance, stream, stream_id, filters, settings_,
            triggered_by, sync_mode, cursor_before, until, commit_cursor, signal, on_progress, source,
            external_run_id, logger, rate_limiter,
        )
    finally:
        try:
            lock_conn.execute("SELECT pg_advisory_unlock_all()")
            lock_conn.commit()
        finally:
            store.pool.putconn(lock_conn)


def _run_locked(
    store: Store, plugin: PluginDef, connection: ConnectionRow, key: str, instance: str | None,
    stream: Stream, stream_id: str, filters: Any, settings_: Any, triggered_by: str, sync_mode: str,
    cursor_before: datetime | None, until: datetime | None, commit_cursor: bool, signal: CancelSignal,
    on_progress: Callable[[ProgressEvent, dict[str, int]], None] | None, source: CredentialSource,
    external_run_id: str | None, logger: logging.Logger | None, rate_limiter: Any,
) -> SyncResult:
    window_lo = cursor_before if triggered_by == "backfill" else None
    with store.connection() as conn:
        run = conn.execute(
            "INSERT INTO integration_sync_runs (connection_id, plugin_id, stream_id, triggered_by, sync_mode,"
            " cursor_before, window_start, window_end, external_run_id) VALUES (%s, %s, %s, %s, %s, %s, %s,"
            " %s, %s) RETURNING id::text AS id",
            (connection.id, plugin.id, stream_id, triggered_by, sync_mode, cursor_before, window_lo, until,
             external_run_id),
        ).fetchone()
        conn.execute(
            "UPDATE integration_streams SET last_sync_status = 'in_progress', updated_at = now()"
            " WHERE connection_id = %s AND stream_id = %s",
            (connection.id, stream_id),
        )
    assert run is not None
    run_id: str = run["id"]

    secrets: list[str] = []
    plog = PluginLogger(f"{plugin.id}:{stream_id}", secrets, logger)
    services: _Services | None = None
    status, error, code, retriable = "success", None, None, False
    try:
        creds = source.load()
        secrets.extend(secret_values(creds, plugin.secret_fields))
        creds = fresh_credentials(plugin, connection, source, store, creds)
        secrets.extend(secret_values(creds, plugin.secret_fields))
        ingest = StreamIngest(
            store, project_id=connection.project_id, connection_id=connection.id, stream_id=stream_id,
            run_id=run_id, window=(window_lo, until), primary_kind=stream.kind if stream.kind in _ENTITY_KINDS else None,
        )
        services = _Services(plugin=plugin, ingest=ingest, source=source, logger=plog, secrets=secrets,
                             on_progress=on_progress, rate_limiter=rate_limiter or budget_for(plugin, connection.id),
                             store=store, run_id=run_id)
        ingest._on_event = services.progress
        ingest._on_timestamp = services.advance_cursor
        sync_fn = stream.sync
        assert sync_fn is not None  # checked before the run started
        ctx = SyncCtx(
            plugin_id=plugin.id, project_id=connection.project_id, connection_id=connection.id,
            stream_id=stream_id, stream_key=key, instance_id=instance, credentials=creds,
            settings=settings_, filters=filters,
            last_sync_at=cursor_before if (sync_mode == "incremental" or triggered_by == "backfill") else None,
            until=until, sync_mode=sync_mode, triggered_by=triggered_by,  # type: ignore[arg-type]
            services=services, signal=signal, logger=plog,
        )
        try:
            call_handler(sync_fn, ctx)
        except ProviderAuthError:
            # One forced refresh and retry when a token died early (revoked, clock skew, app permissions).
            if plugin.auth_type not in _TOKEN_AUTH_TYPES:
                raise
            ctx.credentials = fresh_credentials(plugin, connection, source, store, dict(ctx.credentials),
                                                force=True)
            call_handler(sync_fn, ctx)
        signal.raise_if_cancelled()
        ingest.close()
    except SyncCancelled as exc:
        status, error, code = "cancelled", str(exc), exc.code
    except HissunoError as exc:
        status, error, code, retriable = "error", str(exc), exc.code, exc.retriable
    except Exception as exc:  # the plugin's failure is the run's result, not a crash
        status, error, code = "error", f"{type(exc).__name__}: {exc}", "plugin_error"
        # The traceback may quote credentials (the plugin's own f-strings): redact before logging.
        log.error("sync %s/%s failed\n%s", connection.id, stream_id,
                  redact_text(traceback.format_exc(), secrets))
    if status != "success" and services is not None:
        # Records ingested before the failure stay (they are idempotent); only the cursor is held back.
        try:
            services.ingest.close()
        except Exception:
            log.error("flushing a failed run's records failed\n%s", redact_text(traceback.format_exc(), secrets))
    if error:
        error = redact_text(error, secrets)[:2000]

    counts = dict(services.counts) if services else dict.fromkeys(COUNTED, 0)
    high = services.high_water if services else None
    cursor_after = cursor_before
    if status == "success" and high is not None:
        cursor_after = high if cursor_after is None or sync_mode == "full" else max(cursor_after, high)
    if status == "success" and sync_mode == "full" and cursor_before is not None and high is None:
        cursor_after = cursor_before
    _finish(store, connection.id, stream_id, run_id, status, counts, error, cursor_after if status == "success"
            else None, commit_cursor and status == "success")
    return SyncResult(run_id=run_id, status=status, counts=counts, cursor_before=cursor_before,
                      cursor_after=cursor_after if status == "success" else cursor_before,
                      error=error, error_code=code, retriable=retriable)


def live_credentials(store: Store, plugin: PluginDef, connection: ConnectionRow) -> dict[str, Any]:
    """The connection's credentials with a usable access token (refreshed or minted first when needed)."""
    source = StoreCredentialSource(store, connection)
    return fresh_credentials(plugin, connection, source, store, source.load())


def fresh_credentials(plugin: PluginDef, connection: ConnectionRow, source: CredentialSource, store: Store,
                      creds: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """``creds``, or for token-based plugins (OAuth 2.0, GitHub App) a live token via ``ensure_fresh``."""
    if plugin.auth_type not in _TOKEN_AUTH_TYPES:
        return creds
    from .refresh import ensure_fresh

    fresh: dict[str, Any] = ensure_fresh(plugin, connection, source, store, force=force, creds=creds)
    return fresh


def _finish(store: Store, connection_id: str, stream_id: str, run_id: str, status: str,
            counts: dict[str, int], error: str | None, cursor_after: datetime | None, write_cursor: bool) -> None:
    with store.connection() as conn:
        conn.execute(
            "UPDATE integration_sync_runs SET status = %s, counts = %s, error_message = %s, cursor_after = %s,"
            " progress = NULL, completed_at = now(), heartbeat_at = now() WHERE id = %s",
            (status, Jsonb(counts), error, cursor_after, run_id),
        )
        conn.execute(
            "UPDATE integration_streams SET last_sync_status = %s, last_sync_error = %s,"
            " last_sync_counts = %s, updated_at = now(),"
            " last_sync_at = CASE WHEN %s THEN %s ELSE last_sync_at END,"
            " next_sync_at = CASE frequency WHEN '1h' THEN now() + interval '1 hour'"
            "   WHEN '6h' THEN now() + interval '6 hours' WHEN '24h' THEN now() + interval '1 day' ELSE NULL END"
            " WHERE connection_id = %s AND stream_id = %s",
            (status, error, Jsonb(counts), write_cursor, cursor_after, connection_id, stream_id),
        )

