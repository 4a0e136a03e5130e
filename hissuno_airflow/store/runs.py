"""Run history: what ``integration_sync_runs`` recorded, newest first (errors were redacted when written)."""

from __future__ import annotations

from typing import Any

from ..kit.errors import InputError, LeaseLost, SyncAlreadyRunning
from .db import Db, Store, connection_filter, use
from .leases import close_expired

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
    sql, args = connection_filter(f"SELECT {_COLS} FROM integration_sync_runs", connection_id, stream_id=stream_id,
                                  status=status)
    close_expired_runs(store)  # what a person reads is never a dead run shown as running
    with store.autocommit() as conn:
        rows = conn.execute(sql + " ORDER BY started_at DESC, id LIMIT %s", [*args, limit]).fetchall()
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]


# -- writing run rows (the runner's side) ----------------------------------------------------------


def close_expired_runs(db: Db, connection_id: str | None = None, stream_id: str | None = None) -> int:
    """Close every ``in_progress`` run whose lease lapsed (of one stream, or all) as failed, and its stream's
    ``last_sync_status`` with it; returns how many were closed (see ``leases.close_expired``).

    Cheap (an index over live runs only), so it is called wherever someone may look: every store open,
    every run listing, every Airflow DAG parse (a periodic pass while Airflow runs) and every run start.
    """
    with use(db) as conn:
        return close_expired(conn, connection_id, stream_id)


def start_run(conn: Any, *, connection_id: str, plugin_id: str, stream_id: str, triggered_by: str,
              sync_mode: str, cursor_before: Any, window: tuple[Any, Any], external_run_id: str | None,
              lease_s: float) -> str:
    """Take the stream's lease: close its lapsed runs, insert an ``in_progress`` run row holding a lease of
    ``lease_s`` seconds and mark the stream running; returns the run id.

    At most one run per stream is ``in_progress`` (a unique index): a second start while one lives raises
    SyncAlreadyRunning, however the two processes reached the store.
    """
    import psycopg

    close_expired_runs(conn, connection_id, stream_id)
    try:
        with conn.transaction():
            run = conn.execute(
                "INSERT INTO integration_sync_runs (connection_id, plugin_id, stream_id, triggered_by,"
                " sync_mode, cursor_before, window_start, window_end, external_run_id, lease_expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
                " RETURNING id::text AS id",
                (connection_id, plugin_id, stream_id, triggered_by, sync_mode, cursor_before, window[0],
                 window[1], external_run_id, lease_s),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        msg = f"a sync of {connection_id}/{stream_id} is already running"
        raise SyncAlreadyRunning(msg, field="stream_id") from None
    conn.execute(
        "UPDATE integration_streams SET last_sync_status = 'in_progress', updated_at = now()"
        " WHERE connection_id = %s AND stream_id = %s",
        (connection_id, stream_id),
    )
    return str(run["id"])


def renew_lease(conn: Any, run_id: str, lease_s: float, counts: dict[str, int] | None = None) -> None:
    """Extend the run's lease, in the caller's transaction; raises LeaseLost when the run was closed.

    Called with each write: the row lock it takes keeps a concurrent expiry from closing the run until
    the write commits, and a run that was closed writes nothing (its transaction rolls back). ``counts``
    (what the run counted up to these writes) are stored with them, so a killed run's counts match
    what it wrote.
    """
    from psycopg.types.json import Jsonb

    sets = ", counts = %s" if counts is not None else ""
    args: list[Any] = [lease_s, *([Jsonb(counts)] if counts is not None else []), run_id]
    row = conn.execute(
        "UPDATE integration_sync_runs SET heartbeat_at = now(), lease_expires_at = now()"
        " + make_interval(secs => %s)" + sets + " WHERE id = %s AND status = 'in_progress' RETURNING id",
        args,
    ).fetchone()
    if row is None:
        raise LeaseLost(f"sync run {run_id} lost its lease (it was closed as failed); it stopped writing")


def record_progress(conn: Any, run_id: str, counts: dict[str, int], current: int | None,
                    total: int | None) -> None:
    """Live progress on the run row, so a page can follow a run executing in another process.

    The live counts go into ``progress`` (they may run ahead of the writes); the ``counts`` column is
    written only with the writes themselves (``renew_lease``).
    """
    from psycopg.types.json import Jsonb

    conn.execute(
        "UPDATE integration_sync_runs SET progress = %s WHERE id = %s AND status = 'in_progress'",
        (Jsonb({"current": current, "total": total, "counts": counts}), run_id),
    )


def finish_run(conn: Any, *, connection_id: str, stream_id: str, run_id: str, status: str,
               counts: dict[str, int] | None, error: str | None, cursor_after: Any,
               write_cursor: bool, next_sync_at: Any = None) -> dict[str, int]:
    """Close the run row and update the stream's state (its cursor only when ``write_cursor``); returns the
    counts stored: ``counts``, or (None) those committed with the run's last write.

    ``next_sync_at`` is the host's answer (``Host.next_sync_at``: under Airflow the DAG's next slot, so
    the page agrees with Airflow); None for a stream without a schedule.

    Raises LeaseLost (changing nothing) when the run was closed meanwhile: its lease lapsed and the
    stream may already belong to a newer run.
    """
    from psycopg.types.json import Jsonb

    row = conn.execute(
        "UPDATE integration_sync_runs SET status = %s, counts = coalesce(%s, counts), error_message = %s,"
        " cursor_after = %s, progress = NULL, completed_at = now(), heartbeat_at = now(), lease_expires_at = NULL"
        " WHERE id = %s AND status = 'in_progress' RETURNING counts",
        (status, None if counts is None else Jsonb(counts), error, cursor_after, run_id),
    ).fetchone()
    if row is None:
        raise LeaseLost(f"sync run {run_id} lost its lease (it was closed as failed) before it finished")
    conn.execute(
        "UPDATE integration_streams SET last_sync_status = %s, last_sync_error = %s,"
        " last_sync_counts = %s, updated_at = now(),"
        " last_sync_at = CASE WHEN %s THEN %s ELSE last_sync_at END,"
        " next_sync_at = %s WHERE connection_id = %s AND stream_id = %s",
        (status, error, Jsonb(row["counts"]), write_cursor, cursor_after, next_sync_at, connection_id, stream_id),
    )
    return {k: int(v) for k, v in row["counts"].items()}
