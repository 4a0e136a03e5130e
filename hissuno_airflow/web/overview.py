"""What the Integrations page shows at a glance: each stream's live and backfill lanes, each connection's
health, and links from a run to its Airflow run and task log. Read-only views over the store."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from ..kit.redaction import redact_text
from ..store.connections import ConnectionRow, StreamRow

TASK_ID = "sync"
"""The task of every Hissuno DAG (dag_factory); its log is the run's log."""
_RATE = re.compile(r"rate.?limit", re.IGNORECASE)
_RETRY_AFTER = re.compile(r"retry after (\d+(?:\.\d+)?)s", re.IGNORECASE)


def run_links(run: dict[str, Any], airflow_base: str | None) -> dict[str, str] | None:
    """The Airflow run and task-log URLs of a run executed by Airflow (``external_run_id`` is
    ``<dag_id>/<run_id>/<try>``), None for a run Airflow did not execute or without an Airflow UI."""
    ext = run.get("external_run_id")
    if airflow_base is None or not isinstance(ext, str) or ext.count("/") < 2:
        return None
    dag_id, rest = ext.split("/", 1)
    run_id, _, attempt = rest.rpartition("/")
    if not dag_id or not run_id:
        return None
    base = f"{airflow_base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    log = f"{base}/tasks/{TASK_ID}" + (f"?try_number={attempt}" if attempt.isdigit() else "")
    return {"run": base, "log": log}


def with_links(run: dict[str, Any], airflow_base: str | None) -> dict[str, Any]:
    """``run`` with its ``links`` (None when it has none) and its error redacted once more for display."""
    out = {**run, "links": run_links(run, airflow_base)}
    if out.get("error_message"):
        out["error_message"] = redact_text(str(out["error_message"]))
    return out


def rate_limited_until(run: dict[str, Any] | None) -> str | None:
    """When a live run failed on the provider's rate limit: the time its wait ends (the run's end plus the
    announced wait), or its end when no wait was announced; None otherwise."""
    if not run or run.get("status") != "error" or not _RATE.search(run.get("error_message") or ""):
        return None
    ended = run.get("completed_at") or run.get("started_at")
    if not ended:
        return None
    wait = _RETRY_AFTER.search(run.get("error_message") or "")
    until = datetime.fromisoformat(ended) + timedelta(seconds=float(wait.group(1)) if wait else 0)
    return until.isoformat()


def health(conn: ConnectionRow, streams: list[StreamRow], live: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A connection's state at a glance: ``reconnect_needed`` (the provider refused the credentials),
    ``rate_limited`` (a stream waits for the provider's limit), ``failing`` (a stream's last live run
    failed), ``ok`` or ``idle`` (nothing enabled); with the failing streams and the last error, redacted."""
    enabled = [s for s in streams if s.enabled]
    failing = [s.stream_id for s in enabled if s.last_sync_status == "error"]
    limited = [u for u in (rate_limited_until(live.get(s.stream_id)) for s in enabled) if u]
    errors = [(s.updated_at, s.last_sync_error) for s in enabled if s.last_sync_status == "error" and s.last_sync_error]
    last_error = max(errors, key=lambda e: e[0])[1] if errors else None
    if conn.needs_reconnect:
        state = "reconnect_needed"
        last_error = conn.auth_error or last_error
    elif limited:
        state = "rate_limited"
    elif failing:
        state = "failing"
    else:
        state = "ok" if enabled else "idle"
    return {"state": state, "failing_streams": failing, "rate_limited_until": max(limited) if limited else None,
            "last_error": redact_text(last_error) if last_error else None, "enabled_streams": len(enabled)}
