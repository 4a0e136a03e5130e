"""Manual sync as Server-Sent Events (reference 2.9), fed by the runner's ``on_progress``.

The sync runs in a worker thread; the response generator relays its events. A client that goes
away cancels the run through its signal (the run is still finalised by the runner).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from ..kit.context import CancelSignal, ProgressEvent
from ..kit.errors import HissunoError
from ..kit.redaction import redact_text
from ..store.db import Store

log = logging.getLogger("hissuno.web")
KEEPALIVE_SECONDS = 10.0


def _now() -> str:
    return datetime.now(UTC).isoformat()


def frame(data: Mapping[str, Any]) -> str:
    """One SSE message."""
    return f"event: message\ndata: {json.dumps(data, default=str)}\n\n"


def summary(counts: Mapping[str, int]) -> str:
    """"N synced[, N skipped][, N failed]", else "N found", else "Sync complete."."""
    parts = []
    if "synced" in counts:
        parts.append(f"{counts['synced']} synced")
    for k in ("skipped", "failed"):
        if counts.get(k):
            parts.append(f"{counts[k]} {k}")
    if parts:
        return ", ".join(parts)
    return f"{counts['found']} found" if counts.get("found") else "Sync complete."


def sync_events(store: Store, connection_id: str, stream_id: str, mode: str) -> Iterator[str]:
    """Start the run and yield its SSE frames until it ends."""
    from ..runtime.sync import SyncPlan, run_stream_sync

    q: queue.Queue[tuple[str, Any]] = queue.Queue()
    signal = CancelSignal()

    def on_progress(event: ProgressEvent, counts: dict[str, int]) -> None:
        q.put(("progress", (event, counts)))

    def work() -> None:
        try:
            plan = SyncPlan.full() if mode == "full" else SyncPlan()
            result = run_stream_sync(connection_id, stream_id, plan, store=store, signal=signal,
                                     on_progress=on_progress)
            q.put(("result", result))
        except HissunoError as exc:
            q.put(("error", redact_text(str(exc))))
        except Exception:
            log.exception("manual sync of %s/%s crashed", connection_id, stream_id)
            q.put(("error", "An unexpected error occurred."))

    yield frame({"type": "connected", "message": "Starting sync…", "stream_id": stream_id, "timestamp": _now()})
    worker = threading.Thread(target=work, name=f"hissuno-sync-{connection_id}", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, item = q.get(timeout=KEEPALIVE_SECONDS)
            except queue.Empty:
                yield ": keepalive\n\n"
                continue
            if kind == "progress":
                ev, counts = item
                yield frame({"type": ev.type, "message": ev.message, "current": ev.current, "total": ev.total,
                             "external_id": ev.external_id, "hissuno_id": ev.hissuno_id, "stream_id": stream_id,
                             "counts": counts, "timestamp": _now()})
            elif kind == "result":
                ok = item.status == "success"
                yield frame({"type": "complete" if ok else "error",
                             "message": summary(item.counts) if ok else (item.error or item.status),
                             "data": {"counts": item.counts, "status": item.status, "run_id": item.run_id},
                             "timestamp": _now()})
                return
            else:
                yield frame({"type": "error", "message": item, "timestamp": _now()})
                return
    except GeneratorExit:
        signal.cancel("client disconnected")
        raise


_RUN_SQL = (
    "SELECT status, counts, progress, error_message FROM integration_sync_runs"
    " WHERE external_run_id LIKE %s ORDER BY started_at DESC LIMIT 1"
)


def queued_sync_events(
    store: Store, connection_id: str, stream_id: str, mode: str, user: str, *, poll_seconds: float = 0.5,
    max_seconds: float = 3600.0,
) -> Iterator[str]:
    """Queue a run of the stream through the host and relay its progress (read from its run row) as SSE.

    Under Airflow the sync runs where every other sync runs (a worker, with the XCom cursor), and the
    page follows it through the live counts the runner writes to ``integration_sync_runs``.
    """
    import time

    from ..runtime.host import current_host

    host = current_host()

    yield frame({"type": "connected", "message": "Starting sync…", "stream_id": stream_id, "timestamp": _now()})
    try:
        queued = host.wake_stream(connection_id, stream_id, user=user,
                                  conf={"triggered_by": "manual", "full_refresh": mode == "full"})
        dag_id, run_id = queued.ref, queued.run_id
    except HissunoError as exc:
        yield frame({"type": "error", "message": redact_text(str(exc)), "timestamp": _now()})
        return
    yield frame({"type": "queued", "message": "Queued in Airflow", "stream_id": stream_id,
                 "data": {"dag_id": dag_id, "run_id": run_id}, "timestamp": _now()})
    pattern = f"{dag_id}/{run_id}/%"
    started = time.monotonic()
    last: Any = None
    last_sent = started
    while time.monotonic() - started < max_seconds:
        with store.connection() as conn:
            row = conn.execute(_RUN_SQL, (pattern,)).fetchone()
        state = host.run_state(dag_id, run_id or "")
        if row is not None and row["status"] == "success":
            yield frame({"type": "complete", "message": summary(row["counts"]),
                         "data": {"counts": row["counts"], "status": "success", "dag_id": dag_id, "run_id": run_id},
                         "timestamp": _now()})
            return
        if state in ("failed", "success") and (row is None or row["status"] != "in_progress"):
            counts = row["counts"] if row is not None else {}
            message = (row["error_message"] if row is not None else None) or f"Airflow run {state}"
            yield frame({"type": "error", "message": redact_text(message),
                         "data": {"counts": counts, "status": state, "dag_id": dag_id, "run_id": run_id},
                         "timestamp": _now()})
            return
        snapshot = (row["status"], row["counts"], row["progress"]) if row is not None else None
        if snapshot != last and row is not None:
            last = snapshot
            last_sent = time.monotonic()
            progress = row["progress"] or {}
            message = "Running" if row["status"] == "in_progress" else (
                f"Attempt failed, Airflow will retry: {redact_text(row['error_message'] or '')}")
            yield frame({"type": "progress", "message": message, "current": progress.get("current"),
                         "total": progress.get("total"), "counts": row["counts"], "stream_id": stream_id,
                         "timestamp": _now()})
        elif time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
            last_sent = time.monotonic()
            yield ": keepalive\n\n"
        time.sleep(poll_seconds)
    yield frame({"type": "error", "message": "The Airflow run is still going; follow it in Airflow.",
                 "data": {"dag_id": dag_id, "run_id": run_id}, "timestamp": _now()})
