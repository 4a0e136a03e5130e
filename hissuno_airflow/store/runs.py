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


# -- lanes and pages (the page's history and per-stream summary) -----------------------------------------

LANES: dict[str, str] = {"scheduled": "cron", "manual": "manual", "backfill": "backfill", "webhook": "webhook"}
"""The page's lane names and the ``triggered_by`` value each stands for."""
_PAGE_COLS = _COLS + ", progress, extract(epoch FROM (coalesce(completed_at, now()) - started_at)) AS duration_s"


def _json_row(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
    if out.get("duration_s") is not None:
        out["duration_s"] = round(float(out["duration_s"]), 1)
    out["lane"] = next((lane for lane, trig in LANES.items() if trig == r["triggered_by"]), r["triggered_by"])
    return out


def list_runs_page(store: Store, connection_id: str, *, stream_id: str | None = None, lane: str | None = None,
                   status: str | None = None, limit: int = 20, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """One page of the connection's runs, newest first, filtered by stream, lane (``LANES``, or ``live`` for all
    but backfills) and status, and
    how many match; each row carries its ``lane`` and ``duration_s`` (so far, for a live run)."""
    if lane is not None and lane not in LANES and lane != "live":
        raise InputError(f"lane: expected live or one of {', '.join(LANES)}; got {lane!r}", field="lane")
    if offset < 0:
        raise InputError(f"offset: expected 0 or more; got {offset}", field="offset")
    list_runs(store, connection_id, status=status, limit=limit)  # the same checks of limit and status
    sql, args = connection_filter("FROM integration_sync_runs", connection_id, stream_id=stream_id, status=status)
    if lane == "live":  # every lane but backfill: what moves the stream's cursor
        sql += " AND triggered_by <> 'backfill'"
    elif lane is not None:
        sql += " AND triggered_by = %s"
        args.append(LANES[lane])
    with store.autocommit() as conn:
        counted = conn.execute("SELECT count(*) AS n " + sql, args).fetchone()
        total = counted["n"] if counted else 0
        rows = conn.execute(f"SELECT {_PAGE_COLS} {sql} ORDER BY started_at DESC, id LIMIT %s OFFSET %s",
                            [*args, limit, offset]).fetchall()
    return [_json_row(r) for r in rows], int(total)


def latest_runs(store: Store, connection_ids: list[str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The newest run of each stream of the given connections in each of two lanes: ``live`` (scheduled,
    manual and webhook runs, which move the cursor) and ``backfill`` (explicit windows), keyed
    ``(connection_id, stream_id, lane)``. A backfill never stands for the stream's live state."""
    if not connection_ids:
        return {}
    with store.autocommit() as conn:
        rows = conn.execute(
            f"SELECT DISTINCT ON (connection_id, stream_id, triggered_by = 'backfill') {_PAGE_COLS}"
            " FROM integration_sync_runs WHERE connection_id = ANY(%s)"
            " ORDER BY connection_id, stream_id, triggered_by = 'backfill', started_at DESC, id",
            (connection_ids,),
        ).fetchall()
    return {(r["connection_id"], r["stream_id"], "backfill" if r["triggered_by"] == "backfill" else "live"):
            _json_row(r) for r in rows}
