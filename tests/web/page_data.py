"""Store rows the Integrations page reads: run history as Airflow leaves it (live runs, backfill windows, a
rate-limited failure) and a thousand connections. Written with SQL because these are the rows runs and
connect flows leave behind; the page only reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from hissuno_airflow import settings


def fresh_now() -> datetime:
    """Now, to the second: each test takes its own (a module-level "now" goes stale in a long session)."""
    return datetime.now(UTC).replace(microsecond=0)


def add_run(store: Any, cid: str, stream_id: str, *, triggered_by: str = "cron", status: str = "success",
            started: datetime, seconds: float = 42, synced: int = 10, error: str | None = None,
            window: tuple[datetime, datetime] | None = None, external: str | None = None) -> None:
    """One closed run row (or an ``in_progress`` one without an end)."""
    counts = {"found": synced, "synced": synced, "skipped": 0, "failed": 0}
    done = None if status == "in_progress" else started + timedelta(seconds=seconds)
    with store.connection() as conn:
        conn.execute(
            "INSERT INTO integration_sync_runs (connection_id, plugin_id, stream_id, triggered_by, status, counts,"
            " error_message, window_start, window_end, external_run_id, started_at, completed_at)"
            " VALUES (%s, 'sample', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (cid, stream_id, triggered_by, status, Jsonb(counts), error, window[0] if window else None,
             window[1] if window else None, external, started, done))


def set_stream_state(store: Any, cid: str, stream_id: str, *, status: str, error: str | None = None,
                     next_at: datetime | None = None) -> None:
    """The stream row's state as the runner leaves it after a run."""
    with store.connection() as conn:
        conn.execute("UPDATE integration_streams SET last_sync_status = %s, last_sync_error = %s,"
                     " next_sync_at = %s, updated_at = now() WHERE connection_id = %s AND stream_id = %s",
                     (status, error, next_at, cid, stream_id))


def many_connections(store: Any, n: int) -> None:
    """``n`` sample connections (each with one enabled stream and one run), as a large install has."""
    project = settings.default_project_id()
    with store.connection() as conn:
        conn.execute(
            "INSERT INTO integration_connections (id, project_id, plugin_id, external_account_id, account_label,"
            " created_at) SELECT 'sample_bulk' || i, %s, 'sample', 'bulk-' || i, 'Bulk workspace ' || i,"
            " now() - make_interval(secs => i) FROM generate_series(1, %s) AS i", (project, n))
        conn.execute(
            "INSERT INTO integration_streams (connection_id, plugin_id, stream_id, stream_kind, frequency,"
            " last_sync_status, next_sync_at) SELECT id, 'sample', 'sessions', 'sessions', '6h', 'success',"
            " now() + interval '2 hours' FROM integration_connections WHERE id LIKE 'sample_bulk%%'")
        conn.execute(
            "INSERT INTO integration_sync_runs (connection_id, plugin_id, stream_id, triggered_by, status,"
            " started_at, completed_at) SELECT id, 'sample', 'sessions', 'cron', 'success',"
            " now() - interval '1 hour', now() - interval '59 minutes' FROM integration_connections"
            " WHERE id LIKE 'sample_bulk%%'")
