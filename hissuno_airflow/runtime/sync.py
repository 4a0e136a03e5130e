"""Run one stream of one connection: the framework-free core the CLI, the web routes and the
Airflow operator all call.

What it fixes from the original (reference 2.6, 2.8): the cursor is the high-water mark of ingested
provider timestamps (never the wall clock) and moves only when a run succeeds; one run per stream
at a time; a run whose process died is marked as such instead of blocking the stream forever; filters
and settings are validated and their defaults merged.

One run per stream is a lease held in the database, not a lock on a connection (issue 9: a session-level
advisory lock vanished with a PostgreSQL restart while its run went on, and a second run duplicated
13,222 sessions). The run row is the lease: a unique index allows one ``in_progress`` run per stream,
the run renews its lease from a heartbeat thread and with every write, and each write re-checks it in
the same transaction (``runs.renew_lease``), so a run whose lease lapsed and was closed writes nothing
more and fails retriably (LeaseLost). A store blip is ridden out in place; when it lasts, the run fails
retriably with its cursor unmoved instead of counting records as bad.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from .. import registry, settings
from ..kit.context import CancelSignal, ContactRef, ProgressEvent, SyncCtx
from ..kit.define import PluginDef
from ..kit.errors import HissunoError, InputError, LeaseLost, ProviderAuthError, SyncCancelled
from ..kit.redaction import redact_text
from ..kit.streams import Handler, Stream, parse_stream_id
from ..kit.types import SyncMode, TriggerSource
from ..store import connections as repo
from ..store import runs
from ..store.connections import ConnectionRow
from ..store.db import Store, get_store
from ..store.enrich import Enricher
from ..store.ingest import StreamIngest
from ..store.projects import project_contacts
from ..store.transient import is_transient, retry_transient, unavailable
from .handlers import call_handler
from .host import current_host
from .ingest_worker import IngestPipe
from .services import ConnectionServices

log = logging.getLogger(__name__)
COUNTED = ("found", "synced", "skipped", "failed", "deleted")
# Stream kinds that are one ingested entity kind (an analytics stream counts whatever it ingests).
_ENTITY_KINDS = frozenset({"sessions", "contacts", "companies", "issues", "knowledge"})
PERSIST_EVERY_S = 1.0


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class SyncPlan:
    """What one run syncs: how it was triggered, the mode and the window.

    ``cursor`` is the window start: ``UNSET`` reads the stream's stored cursor (the high-water mark of
    the last successful run); a datetime or None is used as given (backfill windows, and the Airflow
    operator, which passes the newer of its XCom cursor and the stored one).
    """

    triggered_by: TriggerSource = "manual"
    sync_mode: SyncMode = "incremental"
    cursor: Any = UNSET
    until: datetime | None = None
    commit_cursor: bool = True
    """Write the new high-water mark on success (False for backfill windows)."""
    external_run_id: str | None = None
    """The orchestrator's id of this run (Airflow ``dag/run/try``), recorded on the run row."""
    handler: Handler | None = None
    """Run this instead of the stream's ``sync``, with the same context (a replay of failed records)."""
    run_trigger: str | None = None
    """``triggered_by`` of the run row when it differs from the context's (``replay``)."""

    @classmethod
    def backfill(cls, since: datetime, until: datetime, **kw: Any) -> SyncPlan:
        """Exactly ``[since, until)``; neither reads nor moves the live cursor."""
        return cls(triggered_by="backfill", cursor=since, until=until, commit_cursor=False, **kw)

    @classmethod
    def full(cls, triggered_by: TriggerSource = "manual", **kw: Any) -> SyncPlan:
        """Everything, ignoring the cursor (records are still upserted)."""
        return cls(triggered_by=triggered_by, sync_mode="full", cursor=None, **kw)


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
class _SyncServices:
    """The runtime side of a SyncCtx: the connection's services plus ingest, progress and the cursor."""

    conn: ConnectionServices
    ingest: IngestPipe
    on_progress: Callable[[ProgressEvent, dict[str, int]], None] | None
    store: Store
    run_id: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    high_water: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _persisted_at: float = 0.0

    def is_synced(self, external_id: str) -> bool:
        return self.ingest.is_synced(external_id)

    def get_synced_ids(self) -> set[str]:
        return self.ingest.get_synced_ids()

    def progress(self, event: ProgressEvent) -> None:
        if self.ingest.progress(event):
            return  # counted by the ingest worker, in order with the records
        with self.lock:
            if event.type in self.counts:
                self.counts[event.type] += 1
            now = time.monotonic()
            persist = now - self._persisted_at >= PERSIST_EVERY_S
            if persist:
                self._persisted_at = now
            elif self.on_progress is None:
                return  # counted; nobody to tell (a sync sends several events a record)
            snapshot = dict(self.counts)
        if persist:
            try:
                with self.store.connection() as c:
                    runs.record_progress(c, self.run_id, snapshot, event.current, event.total)
            except Exception as exc:  # live progress is best effort; counts are stored with the writes
                log.warning("could not record live progress (%s)", type(exc).__name__)
        self.tell(event, snapshot)

    def tell(self, event: ProgressEvent, snapshot: dict[str, int]) -> None:
        """Hand an event and the counts to the caller's progress sink, its message redacted with the run's live
        secrets (a refresh adds tokens)."""
        if self.on_progress is None:
            return
        if event.message:
            event = event.model_copy(update={"message": redact_text(event.message, self.conn.secrets)})
        try:
            self.on_progress(event, snapshot)
        except Exception:  # a broken progress sink never fails a sync
            log.warning("progress sink failed", exc_info=True)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def save_credentials(self, credentials: Mapping[str, Any]) -> None:
        self.conn.save(dict(credentials))

    def advance_cursor(self, ts: datetime) -> None:
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        with self.lock:
            if self.high_water is None or ts > self.high_water:
                self.high_water = ts

    def base_url(self, name: str) -> str:
        return self.conn.base_url(name)

    def http_client(self, base: str = "API", **kwargs: Any) -> Any:
        return self.conn.http_client(base, **kwargs)

    def project_contacts(self) -> list[ContactRef]:
        """The project's live contacts, read through the store (``SyncCtx.project_contacts``)."""
        return [ContactRef(**row) for row in project_contacts(self.store, self.ingest.project_id)]


class _Lease:
    """The run's hold on its stream: renewed every quarter of its length by a thread, so a run waiting on
    a slow provider keeps it; a renewal that finds the run closed cancels the handler."""

    def __init__(self, store: Store, run_id: str, seconds: float, signal: CancelSignal) -> None:
        self.store, self.run_id, self.seconds, self.signal = store, run_id, seconds, signal
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"hissuno-lease-{run_id[:8]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                with self.store.connection() as c:
                    runs.renew_lease(c, self.run_id, self.seconds)
            except LeaseLost:
                self.lost = True
                self.signal.cancel("the run lost its lease")
                return
            except Exception as exc:  # a blip: the next beat tries again; the lease lapses only if it lasts
                log.warning("could not renew the run's lease (%s)", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def resolve_stream(plugin: PluginDef, stream_id: str) -> tuple[str, str | None, Stream]:
    """(key, instance, definition) of a stream id; InputError when the key is unknown."""
    key, instance = parse_stream_id(stream_id)
    if key not in plugin.streams:
        msg = f"plugin {plugin.id!r} has no stream {key!r}; expected one of {', '.join(plugin.streams)}"
        raise InputError(msg, field="stream_id")
    return key, instance, plugin.streams[key]


def run_stream_sync(
    connection_id: str, stream_id: str, plan: SyncPlan | None = None, *, store: Store | None = None,
    signal: CancelSignal | None = None, on_progress: Callable[[ProgressEvent, dict[str, int]], None] | None = None,
) -> SyncResult:
    """Run one stream once.

    Args:
        connection_id: The connection.
        stream_id: ``key`` or ``key:instance``; must have a stream row.
        plan: What to sync (default: an incremental manual run from the stored cursor).
        store: The store (default: the configured one).
        signal: Cancellation flag; the handler stops at its next check.
        on_progress: Called with each (redacted) progress event and the running counts.

    Returns:
        SyncResult; a failing plugin gives status ``error`` (pre-check failures raise InputError).
    """
    plan = plan or SyncPlan()
    store = store or get_store()
    connection = repo.get_connection(store, connection_id)
    plugin = registry.get_plugin(connection.plugin_id)
    key, instance, stream = resolve_stream(plugin, stream_id)
    if stream.sync is None and plan.handler is None:
        msg = f"stream {key!r} of plugin {plugin.id!r} has no sync handler (it is webhook-only)"
        raise InputError(msg, field="stream_id")
    row = repo.get_stream(store, connection_id, stream_id)
    filters = validate_config(stream.filters, row.filter_config, "filters")
    settings_ = validate_config(stream.settings, row.settings, "settings")
    if plan.sync_mode not in ("incremental", "full"):
        raise InputError(f"sync_mode: expected incremental or full; got {plan.sync_mode!r}", field="sync_mode")
    cursor_before = row.last_sync_at if plan.cursor is UNSET else plan.cursor
    if plan.until is not None and plan.cursor is not UNSET and plan.cursor is not None and plan.until <= plan.cursor:
        # An explicit window that is empty or inverted is a typo, not a successful sync of nothing.
        msg = (f"until: expected a time after the window start {plan.cursor.isoformat()}; "
               f"got {plan.until.isoformat()}")
        raise InputError(msg, field="until")
    signal = signal or CancelSignal()
    run = _Run(store, plugin, connection, stream_id, key, instance, stream, plan, cursor_before, row.frequency)
    return run.execute(filters, settings_, signal, on_progress)


@dataclass
class _Run:
    """One run of a stream, under its lease."""

    store: Store
    plugin: PluginDef
    connection: ConnectionRow
    stream_id: str
    key: str
    instance: str | None
    stream: Stream
    plan: SyncPlan
    cursor_before: datetime | None
    frequency: str
    pipe: IngestPipe | None = field(default=None, init=False)

    def execute(self, filters: Any, settings_: Any, signal: CancelSignal,
                on_progress: Callable[[ProgressEvent, dict[str, int]], None] | None) -> SyncResult:
        plan, connection, plugin, stream_id = self.plan, self.connection, self.plugin, self.stream_id
        window_lo = self.cursor_before if plan.triggered_by == "backfill" else None
        lease_s = settings.run_lease_seconds()

        def start() -> str:
            with self.store.connection() as c:
                return runs.start_run(
                    c, connection_id=connection.id, plugin_id=plugin.id, stream_id=stream_id,
                    triggered_by=plan.run_trigger or plan.triggered_by, sync_mode=plan.sync_mode,
                    cursor_before=self.cursor_before, window=(window_lo, plan.until),
                    external_run_id=plan.external_run_id, lease_s=lease_s,
                )

        run_id = retry_transient(start, "starting the run")  # SyncAlreadyRunning when the stream is leased
        lease = _Lease(self.store, run_id, lease_s, signal)
        try:
            return self._execute(run_id, lease, filters, settings_, signal, on_progress)
        finally:
            if self.pipe is not None:
                # A store failure or an abrupt end: the worker drops its unwritten batch and never outlives
                # the run (no-op after the run's ``close``).
                self.pipe.shutdown()
            lease.stop()

    def _execute(self, run_id: str, lease: _Lease, filters: Any, settings_: Any, signal: CancelSignal,
                 on_progress: Callable[[ProgressEvent, dict[str, int]], None] | None) -> SyncResult:
        plan, connection, plugin, stream_id = self.plan, self.connection, self.plugin, self.stream_id
        window_lo = self.cursor_before if plan.triggered_by == "backfill" else None
        conn_services = ConnectionServices(plugin, store=self.store, connection=connection, label=stream_id,
                                           signal=signal)
        secrets = conn_services.secrets
        services: _SyncServices | None = None
        status, error, code, retriable = "success", None, None, False
        try:
            creds = conn_services.credentials()
            ingest = StreamIngest(
                self.store, project_id=connection.project_id, connection_id=connection.id, stream_id=stream_id,
                run_id=run_id, window=(window_lo, plan.until),
                primary_kind=self.stream.kind if self.stream.kind in _ENTITY_KINDS else None,
                secrets=secrets,
            )
            pipe = self.pipe = IngestPipe(ingest, settings.ingest_worker_after())
            services = _SyncServices(conn=conn_services, ingest=pipe, on_progress=on_progress,
                                     store=self.store, run_id=run_id)
            pipe.services = services
            ingest._on_event = services.progress
            ingest._on_timestamp = services.advance_cursor
            sync_services = services

            def fence(conn: Any) -> None:
                # In each write's transaction: still the stream's run? Store the counts with the writes.
                runs.renew_lease(conn, run_id, lease.seconds, sync_services.snapshot())

            ingest.fence = fence
            _resume_enrichment(self.store, connection, stream_id, services)
            sync_fn = plan.handler or self.stream.sync
            assert sync_fn is not None  # checked before the run started
            ctx = SyncCtx(
                plugin_id=plugin.id, project_id=connection.project_id, connection_id=connection.id,
                stream_id=stream_id, stream_key=self.key, instance_id=self.instance, credentials=creds,
                settings=settings_, filters=filters,
                last_sync_at=self.cursor_before if (plan.sync_mode == "incremental"
                                                    or plan.triggered_by == "backfill") else None,
                until=plan.until, sync_mode=plan.sync_mode, triggered_by=plan.triggered_by,
                services=services, signal=signal, logger=conn_services.logger,
            )
            try:
                call_handler(sync_fn, ctx)
            except ProviderAuthError:
                # One forced refresh and retry when a token died early (revoked, clock skew, app permissions);
                # not when the refresh itself was refused: the same refresh token would be refused again.
                if not conn_services.can_refresh or conn_services.refresh_refused:
                    raise
                ctx.credentials = conn_services.refresh(seen_token=ctx.credentials.get("access_token"))
                call_handler(sync_fn, ctx)
            signal.raise_if_cancelled()
            pipe.close()
        except SyncCancelled as exc:
            status, error, code = "cancelled", str(exc), exc.code
            if lease.lost:
                lost = LeaseLost(f"sync run {run_id} lost its lease (it was closed as failed); it stopped writing")
                status, error, code, retriable = "error", str(lost), lost.code, True
        except HissunoError as exc:
            status, error, code, retriable = "error", str(exc), exc.code, exc.retriable
        except Exception as exc:  # the plugin's failure is the run's result, not a crash
            if is_transient(exc):  # the store failed, not the plugin: retriable, nothing counted as bad
                store_err = unavailable(exc, "syncing")
                status, error, code, retriable = "error", str(store_err), store_err.code, True
            else:
                status, error, code = "error", f"{type(exc).__name__}: {exc}", "plugin_error"
                # The traceback may quote credentials (the plugin's own f-strings): redact before logging.
                log.error("sync %s/%s failed\n%s", connection.id, stream_id,
                          redact_text(traceback.format_exc(), secrets))
        # A store failure or a lost lease drops what was buffered (the cursor stays, so the next run
        # fetches it again) and keeps the counts committed with the last write.
        store_failed = code in ("store_unavailable", "lease_lost")
        if status != "success" and services is not None and not store_failed:
            # Records ingested before the failure stay (they are idempotent); only the cursor is held back.
            try:
                services.ingest.close()
            except Exception:
                log.error("flushing a failed run's records failed\n%s",
                          redact_text(traceback.format_exc(), secrets))
        if error:
            error = redact_text(error, secrets)[:2000]
        if code == ProviderAuthError.code:
            # Retrying cannot help: the person must reconnect. Say how, everywhere the error is shown.
            error = (f"{error}; reconnect needed: run `hissuno connect {plugin.id} --update {connection.id}` "
                     "or reconnect it on the Integrations page")

        counts = services.snapshot() if services else dict.fromkeys(COUNTED, 0)
        high = services.high_water if services else None
        cursor_after = self.cursor_before
        if status == "success" and high is not None:
            cursor_after = high if cursor_after is None or plan.sync_mode == "full" else max(cursor_after, high)
        lease.stop()  # finishing closes the lease; a renewal racing it would only find the run closed

        # The host's answer (under Airflow: the DAG's next slot), so the page's "next run" agrees with it.
        next_at = current_host().next_sync_at(connection.id, stream_id, self.frequency, now=datetime.now(UTC))

        def finish() -> dict[str, int]:
            ok = status == "success"
            with self.store.connection() as c:
                return runs.finish_run(c, connection_id=connection.id, stream_id=stream_id, run_id=run_id,
                                       status=status, counts=None if store_failed else counts, error=error,
                                       cursor_after=cursor_after if ok else None,
                                       write_cursor=plan.commit_cursor and ok, next_sync_at=next_at)

        try:
            counts = retry_transient(finish, "recording the run's result")
        except HissunoError as exc:
            # Closed meanwhile (its lease lapsed), or the store stayed away: the run did not finish, and
            # says so (the store records it failed once the lease lapses); the cursor did not move.
            status, error, code, retriable = "error", str(exc), exc.code, exc.retriable
        ok = status == "success"
        _record_auth_state(self.store, connection, error if code == ProviderAuthError.code else None, ok)
        return SyncResult(run_id=run_id, status=status, counts=counts, cursor_before=self.cursor_before,
                          cursor_after=cursor_after if ok else self.cursor_before,
                          error=error, error_code=code, retriable=retriable)


def _resume_enrichment(store: Store, connection: ConnectionRow, stream_id: str, services: _SyncServices) -> None:
    """Finish the enrichment a stopped run or drain of the connection left pending (its entities count as
    unchanged, so nothing else would), and report it as ``repaired``. Best effort: what fails stays pending."""
    try:
        repaired = Enricher(store, connection.project_id).resume(connection.id, stream_id=stream_id)
    except Exception:
        log.warning("resuming pending enrichment of %s failed", connection.id, exc_info=True)
        return
    if repaired:
        with services.lock:
            services.counts["repaired"] = repaired
        services.progress(ProgressEvent(
            type="repaired", message=f"finished the enrichment of {repaired} entities a stopped run left pending"))


def _record_auth_state(store: Store, connection: ConnectionRow, auth_error: str | None, ok: bool) -> None:
    """A refused connection is marked "reconnect needed"; a successful run clears the mark. Best effort:
    the run's own result is already recorded."""
    if auth_error is None and not (ok and connection.needs_reconnect):
        return
    try:
        repo.set_auth_error(store, connection.id, auth_error)
    except Exception:
        log.warning("could not record the connection's auth state", exc_info=True)


def connection_services(store: Store, connection: ConnectionRow, label: str = "connection") -> ConnectionServices:
    """The services object of a stored connection (live credentials, clients, base URLs)."""
    plugin = registry.get_plugin(connection.plugin_id)
    return ConnectionServices(plugin, store=store, connection=connection, label=label)
