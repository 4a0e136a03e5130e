"""Closing sync runs whose lease lapsed (the run row is its stream's lease; see ``runtime/sync.py``).

Its own module, over a plain connection, so ``db.Store.open`` can call it without importing ``runs``.
"""

from __future__ import annotations

from typing import Any

EXPIRED_MESSAGE = ("run abandoned: its lease lapsed (its process stopped, or could not reach the store, for"
                   " longer than the lease); the records it committed stay")


def close_expired(conn: Any, connection_id: str | None = None, stream_id: str | None = None) -> int:
    """Close every ``in_progress`` run whose lease lapsed (of one stream, or all) as failed, and its stream's
    ``last_sync_status`` with it; returns how many were closed. The counts stay what the run committed
    with its writes; a run still alive but unable to renew that long finds itself closed at its next write
    (``runs.renew_lease``) and stops."""
    where, args = "", []
    if connection_id is not None:
        where, args = " AND connection_id = %s AND stream_id = %s", [connection_id, stream_id]
    row = conn.execute(
        "WITH closed AS (UPDATE integration_sync_runs SET status = 'error', completed_at = now(),"
        " progress = NULL, lease_expires_at = NULL, error_message = %s WHERE status = 'in_progress'"
        " AND (lease_expires_at IS NULL OR lease_expires_at < now())" + where +
        " RETURNING connection_id, stream_id),"
        " streams AS (UPDATE integration_streams s SET last_sync_status = 'error', last_sync_error = %s,"
        " updated_at = now() FROM closed c WHERE s.connection_id = c.connection_id"
        " AND s.stream_id = c.stream_id AND s.last_sync_status = 'in_progress' RETURNING 1)"
        " SELECT count(*) AS n FROM closed",
        [EXPIRED_MESSAGE, *args, EXPIRED_MESSAGE],
    ).fetchone()
    return int(row["n"]) if row else 0
