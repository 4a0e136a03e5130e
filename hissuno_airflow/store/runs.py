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


# -- writing run rows (the runner's side) ----------------------------------------------------------


def recover_abandoned(conn: Any, connection_id: str, stream_id: str) -> None:
    """Close runs left ``in_progress`` by a process that died; call only while holding the stream lock,
    so no live run can be among them (the original let such rows block the stream forever)."""
    conn.execute(
        "UPDATE integration_sync_runs SET status = 'error', completed_at = now(),"
        " error_message = 'run abandoned (its process stopped without finishing)'"
        " WHERE connection_id = %s AND stream_id = %s AND status = 'in_progress'",
        (connection_id, stream_id),
    )


def start_run(conn: Any, *, connection_id: str, plugin_id: str, stream_id: str, triggered_by: str,
              sync_mode: str, cursor_before: Any, window: tuple[Any, Any], external_run_id: str | None) -> str:
    """Insert an ``in_progress`` run row and mark the stream running; returns the run id."""
    run = conn.execute(
        "INSERT INTO integration_sync_runs (connection_id, plugin_id, stream_id, triggered_by, sync_mode,"
        " cursor_before, window_start, window_end, external_run_id) VALUES (%s, %s, %s, %s, %s, %s, %s,"
        " %s, %s) RETURNING id::text AS id",
        (connection_id, plugin_id, stream_id, triggered_by, sync_mode, cursor_before, window[0], window[1],
         external_run_id),
    ).fetchone()
    conn.execute(
        "UPDATE integration_streams SET last_sync_status = 'in_progress', updated_at = now()"
        " WHERE connection_id = %s AND stream_id = %s",
        (connection_id, stream_id),
    )
    return str(run["id"])


def record_progress(conn: Any, run_id: str, counts: dict[str, int], current: int | None,
                    total: int | None) -> None:
    """Live counts on the run row, so a page can follow a run executing in another process."""
    from psycopg.types.json import Jsonb

    conn.execute(
        "UPDATE integration_sync_runs SET counts = %s, progress = %s, heartbeat_at = now() WHERE id = %s",
        (Jsonb(counts), Jsonb({"current": current, "total": total}), run_id),
    )


def finish_run(conn: Any, *, connection_id: str, stream_id: str, run_id: str, status: str,
               counts: dict[str, int], error: str | None, cursor_after: Any, write_cursor: bool) -> None:
    """Close the run row and update the stream's state (its cursor only when ``write_cursor``)."""
    from psycopg.types.json import Jsonb

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
