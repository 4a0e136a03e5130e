"""Run history: what ``integration_sync_runs`` recorded, newest first (errors were redacted when written)."""

from __future__ import annotations

from typing import Any

from ..kit.errors import InputError
from .db import Store

MAX_RUNS = 500
_COLS = ("id::text AS id, connection_id, stream_id, triggered_by, sync_mode, status, counts, error_message,"
         " cursor_before, cursor_after, window_start, window_end, external_run_id, started_at, completed_at")


def list_runs(store: Store, connection_id: str, *, stream_id: str | None = None, status: str | None = None,
              limit: int = 20) -> list[dict[str, Any]]:
    """The connection's runs (optionally of one stream or status), newest first, as JSON-ready dicts."""
    if not 1 <= limit <= MAX_RUNS:
        raise InputError(f"limit: expected 1 to {MAX_RUNS}; got {limit}", field="limit")
    statuses = ("in_progress", "success", "error", "cancelled")
    if status is not None and status not in statuses:
        raise InputError(f"status: expected one of {', '.join(statuses)}; got {status!r}", field="status")
    sql, args = f"SELECT {_COLS} FROM integration_sync_runs WHERE connection_id = %s", [connection_id]
    if stream_id:
        sql += " AND stream_id = %s"
        args.append(stream_id)
    if status:
        sql += " AND status = %s"
        args.append(status)
    with store.autocommit() as conn:
        rows = conn.execute(sql + " ORDER BY started_at DESC, id LIMIT %s", [*args, limit]).fetchall()
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]
