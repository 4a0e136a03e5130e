"""Replay of failed records (``ingest_errors``) after the plugin or the data was fixed.

Each stream's records are replayed in one run of that stream (``run_stream_sync`` with a replay handler:
the stream's lock, live credentials, a run row with ``triggered_by = 'replay'``, counts; the cursor is
neither read nor moved). Per record:

- the stream's ``fetch(ctx, external_id)`` hook, when the plugin declares one and the record is of the
  stream's kind: the record is read again from the provider and mapped again, so a fixed mapping or
  fixed provider data is what gets ingested;
- else the kept record is ingested again through the same primitive (a fix in the store or in the
  validation, or a failure that was not the record's fault). A kept record that redaction changed (it
  carried a secret value, or a value under a secret-looking key) is not re-ingested as kept: that would
  write the mask instead of the value. It stays open with that reason, and only a fetch or a new sync can
  bring it back. A record without an external id cannot be matched to an entity, likewise.

A record ingested successfully (by the replay, or by any later sync) marks its row ``resolved``
(``StreamIngest`` does that in the transaction of the write); each replayed row gets ``attempts + 1``,
``replayed_at`` and ``last_error`` (None when it resolved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import registry
from ..kit.context import SyncCtx
from ..kit.errors import HissunoError, InputError, SyncCancelled
from ..kit.redaction import redact_text
from ..kit.streams import Stream
from ..store import connections as repo
from ..store import ingest_errors as failed
from ..store.db import Store, get_store
from .handlers import call_handler
from .sync import SyncPlan, SyncResult, run_stream_sync

PRIMITIVES = {"sessions": "session", "contacts": "contact", "companies": "company", "issues": "issue",
              "knowledge": "knowledge"}


def replay_method(stream: Stream | None, row: failed.FailedRecord) -> tuple[str | None, str | None]:
    """(how the row would be replayed: ``fetch`` or ``kept``, or None with the reason it cannot be)."""
    if stream is None:
        return None, f"the plugin has no stream {row.stream_id!r} any more"
    if row.external_id is None:
        return None, "the record has no external id: only a new sync of the fixed plugin can bring it back"
    if stream.fetch is not None and row.kind == stream.kind:
        return "fetch", None
    if row.kind not in PRIMITIVES or not isinstance(row.record, dict):
        return None, f"the kept {row.kind} record is not an object that can be ingested again"
    if row.redacted:
        return None, ("the kept record was redacted (it carried secret values), so it cannot be re-ingested "
                      "as kept; the stream has no fetch hook to read it again: sync the stream instead")
    return "kept", None


def list_failed_records(store: Store, connection_id: str, *, stream_id: str | None = None,
                        status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
    """The connection's failed records as JSON-ready dicts, each with how a replay would treat it."""
    connection = repo.get_connection(store, connection_id)
    plugin = registry.get_plugin(connection.plugin_id)
    out = []
    for row in failed.list_failed(store, connection.id, stream_id=stream_id, status=status, limit=limit):
        stream = _stream_of(plugin.streams, row.stream_id)
        method, why = replay_method(stream, row)
        out.append({**row.public(), "replay": method, "replay_blocked": why})
    return out


def _stream_of(streams: dict[str, Stream], stream_id: str | None) -> Stream | None:
    key = (stream_id or "").partition(":")[0]
    return streams.get(key)


@dataclass
class ReplayReport:
    """What a replay did: one run per stream and each record's outcome."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def resolved(self) -> int:
        """Records resolved by this replay."""
        return sum(1 for r in self.records if r["status"] == "resolved")

    @property
    def still_failing(self) -> int:
        """Records that are still open."""
        return sum(1 for r in self.records if r["status"] != "resolved")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (what the CLI prints and the route answers)."""
        return {"resolved": self.resolved, "failed": self.still_failing, "runs": self.runs,
                "records": self.records}


def replay_failed(connection_id: str, ids: Sequence[str] | None = None, *, all_open: bool = False,
                  stream_id: str | None = None, store: Store | None = None) -> ReplayReport:
    """Replay the named open failed records (or every open one with ``all_open``) of a connection.

    Raises:
        InputError: neither ids nor ``all_open``, or a named record is already resolved.
        NotFoundError: an id that is not a failed record of this connection.
        SyncAlreadyRunning: a sync of the record's stream is running (retry later).
    """
    store = store or get_store()
    connection = repo.get_connection(store, connection_id)
    plugin = registry.get_plugin(connection.plugin_id)
    if ids:
        rows = failed.get_failed(store, connection.id, list(dict.fromkeys(ids)))
        done = [r for r in rows if r.status != "open"]
        if done:
            raise InputError(f"failed record {done[0].id!r} is {done[0].status} already; only open records "
                             "are replayed", field="ids")
    elif all_open:
        rows = failed.list_failed(store, connection.id, stream_id=stream_id, status="open", limit=failed.MAX_ERRORS)
    else:
        raise InputError("ids: name the failed records to replay, or ask for all of them", field="ids")
    report = ReplayReport()
    by_stream: dict[str, list[failed.FailedRecord]] = {}
    for row in rows:
        by_stream.setdefault(row.stream_id or "", []).append(row)
    for sid, group in by_stream.items():
        stream = _stream_of(plugin.streams, sid)
        notes: dict[str, str | None] = {}
        runnable = []
        for row in group:
            method, why = replay_method(stream, row)
            if method is None:
                notes[row.id] = why
            else:
                runnable.append(row)
        result: SyncResult | None = None
        if runnable and stream is not None:
            handler = _handler(stream, runnable, notes)
            plan = SyncPlan(triggered_by="manual", cursor=None, commit_cursor=False, handler=handler,
                            run_trigger="replay")
            result = run_stream_sync(connection.id, sid, plan, store=store)
            report.runs.append({"stream_id": sid, **result.to_json()})
        after = failed.statuses(store, [r.id for r in group])
        outcomes: list[tuple[str, str | None]] = []
        for row in group:
            status, last_run, reason = after.get(row.id, ("open", None, None))
            err: str | None = None
            if status != "resolved":
                err = notes.get(row.id)
                if err is None and result is not None and last_run == result.run_id:
                    err = reason  # it failed again in this replay: the new reason
                if err is None and result is not None and result.status != "success":
                    err = f"the replay run ended {result.status}: {result.error}"
                if err is None:
                    err = f"the replay did not ingest {row.kind} {row.external_id!r} (gone at the provider?)"
            outcomes.append((row.id, err))
            report.records.append({"id": row.id, "stream_id": row.stream_id, "kind": row.kind,
                                   "external_id": row.external_id, "status": status, "error": err,
                                   "run_id": result.run_id if result else None})
        failed.record_replay(store, outcomes)
    return report


def _handler(stream: Stream, rows: list[failed.FailedRecord], notes: dict[str, str | None]) -> Any:
    """The replay run's handler: each record re-fetched or re-ingested, one failure never stopping the rest."""

    def replay(ctx: SyncCtx) -> None:
        secrets = list(getattr(getattr(ctx.services, "conn", None), "secrets", []))
        for row in rows:
            ctx.signal.raise_if_cancelled()
            ctx.progress("found", external_id=row.external_id, message=f"replaying {row.kind} {row.external_id}")
            try:
                if stream.fetch is not None and row.kind == stream.kind:
                    call_handler(stream.fetch, ctx, row.external_id)
                else:
                    primitive = getattr(ctx.ingest, PRIMITIVES[row.kind])
                    res = primitive(**row.record)
                    if res.action == "failed":
                        notes[row.id] = redact_text(res.error or "failed again", secrets)[:2000]
            except SyncCancelled:
                raise
            except Exception as exc:  # the provider or the plugin failed this record: keep it open
                text = f"{exc.code}: {exc}" if isinstance(exc, HissunoError) else f"{type(exc).__name__}: {exc}"
                notes[row.id] = redact_text(text, secrets)[:2000]
                ctx.progress("failed", external_id=row.external_id, message=f"{row.kind}: {notes[row.id]}")

    return replay
