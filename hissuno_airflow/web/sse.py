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
    from ..runtime.sync import run_stream_sync

    q: queue.Queue[tuple[str, Any]] = queue.Queue()
    signal = CancelSignal()

    def on_progress(event: ProgressEvent, counts: dict[str, int]) -> None:
        q.put(("progress", (event, counts)))

    def work() -> None:
        try:
            result = run_stream_sync(connection_id, stream_id, store=store, triggered_by="manual",
                                     sync_mode=mode, signal=signal, on_progress=on_progress)
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
