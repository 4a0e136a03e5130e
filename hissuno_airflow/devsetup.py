"""First-run set-up of ``python3 dev.py up``: connect the sample ``demo`` workspace and enable its streams.

Idempotent: set-up touches only what it created, once. The mark ``dev_setup`` in the store (table
``setup_marks``) records the demo connection it made, the streams it enabled and the first syncs still
to queue. A restart finds the mark and leaves every connection and stream as the user left them:
streams the user disabled, re-timed or removed stay so, and a demo connection the user removed is not
made again. The demo connection is found by its own account (``sample`` workspace ``demo`` in the
default project), never as "the first sample connection", so a workspace the user added is never
touched. A store whose demo connection predates the mark is adopted as it is, with nothing changed.
Wiping the store (``.hissuno``) forgets the mark with everything else, and set-up runs afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import settings
from .kit.errors import NotFoundError
from .store import connections as repo
from .store.db import Store, get_store
from .store.marks import get_mark, put_mark

MARK = "dev_setup"
DEMO_WORKSPACE = "demo"
DEMO_STREAMS = (("sessions", "1h"), ("contacts", "6h"), ("companies", "24h"), ("issues", "1h"),
                ("knowledge:help-center", "24h"))


def demo_connection(store: Store) -> repo.ConnectionRow | None:
    """The sample connection of the ``demo`` workspace in the default project, if it exists."""
    rows = repo.list_connections(store, project_id=settings.default_project_id(), plugin_id="sample")
    return next((c for c in rows if c.external_account_id == DEMO_WORKSPACE), None)


def _connect_demo(store: Store) -> str:
    from .runtime.connect import start_connect

    base = settings.base_url("hissuno", "PUBLIC", "http://127.0.0.1:8080/hissuno")
    result = start_connect("sample", {"credentials": {"workspace": DEMO_WORKSPACE, "every_seconds": "600"}}, store,
                           user_id="dev", redirect_uri=f"{base}/api/plugins/oauth/sample/callback")
    return str(result["connection_id"])


def main(store: Store | None = None) -> None:
    """Connect ``sample`` (workspace demo, new records every 10 minutes) and enable its streams, once."""
    from .runtime.streams import enable_stream

    store = store or get_store()
    store.migrate()
    mark = get_mark(store, MARK)
    if mark is None:
        existing = demo_connection(store)
        if existing is not None:
            put_mark(store, MARK, {"done": True, "connection_id": existing.id, "adopted": True, "streams": [],
                                  "kickoff": []})
            print(f"sample connection {existing.id} already exists: left as it is")
            return
        # Marked before connecting: an interrupted set-up resumes with the connection it made.
        mark = {"done": False}
        put_mark(store, MARK, mark)
    if mark.get("done"):
        print(f"set-up already done (sample connection {mark.get('connection_id')}): "
              "connections and streams left as they are")
        return
    found = demo_connection(store)
    conn_id = found.id if found is not None else _connect_demo(store)
    have = {r.stream_id for r in repo.list_streams(store, conn_id)}
    made = []
    for stream_id, freq in DEMO_STREAMS:
        if stream_id not in have:  # a row that exists is the user's (or an earlier attempt's): left alone
            enable_stream(store, conn_id, stream_id, frequency=freq)
            made.append(stream_id)
    put_mark(store, MARK, {"done": True, "connection_id": conn_id, "streams": made, "kickoff": made})
    print(f"sample connection {conn_id}: streams enabled (sessions and issues hourly)")


def _queue(connection_id: str, stream_id: str) -> None:
    from .airflow_host.runs import trigger_stream_run

    trigger_stream_run(connection_id, stream_id, conf={"triggered_by": "manual"}, user="dev-setup")


def kickoff(
    store: Store | None = None, *, trigger: Callable[[str, str], Any] = _queue, timeout: float = 180.0,
    poll_seconds: float = 3.0,
) -> None:
    """Queue the first run of each stream set-up enabled (once), as soon as the DAG processor wrote its DAG.

    Only streams still waiting for their first run are queued; a stream the user disabled or removed
    meanwhile is dropped from the list. What could not be queued before ``timeout`` is tried again by
    the next ``dev.py up``.
    """
    store = store or get_store()
    mark = get_mark(store, MARK)
    if not mark or not mark.get("kickoff"):
        return
    conn_id = str(mark["connection_id"])
    enabled = {r.stream_id for r in repo.list_streams(store, conn_id, enabled_only=True)}
    pending = [s for s in mark["kickoff"] if s in enabled]
    deadline = time.monotonic() + timeout
    while True:
        for stream_id in list(pending):
            try:
                trigger(conn_id, stream_id)
            except NotFoundError:
                continue
            pending.remove(stream_id)
            print(f"queued the first sync of {conn_id}/{stream_id}", flush=True)
        put_mark(store, MARK, {**mark, "kickoff": pending})
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(poll_seconds)


def follow_line(row: dict[str, Any]) -> str:
    """One finished run as ``dev.py up`` prints it: stream, outcome, counts, duration, redacted error."""
    from .runtime.logging import counts_text, duration

    took = ""
    if row.get("started_at") and row.get("completed_at"):
        took = f" in {duration((row['completed_at'] - row['started_at']).total_seconds())}"
    what = f"{row['connection_id']}/{row['stream_id']} ({row['triggered_by']})"
    if row["status"] == "success":
        return f"synced {what}{took}: {counts_text(row.get('counts') or {})}"
    return f"FAILED {what}{took}: {row.get('error_message') or row['status']}"


def follow(store: Store | None = None, *, poll_seconds: float = 3.0, once: bool = False,
           emit: Callable[[str], Any] = print) -> None:
    """Print what a person wants from a running ``dev.py up``: each stream's first successful sync and every
    failed run, as they finish (the servers' own chatter goes to log files)."""
    store = store or get_store()
    seen_ok: set[tuple[str, str]] = set()
    since = None
    if not once:  # only what finishes from now on
        with store.autocommit() as conn:
            since = conn.execute("SELECT now() AS now").fetchone()["now"]  # type: ignore[index]
    while True:
        with store.autocommit() as conn:
            rows = conn.execute(
                "SELECT id::text AS id, connection_id, stream_id, triggered_by, status, counts, error_message,"
                " started_at, completed_at FROM integration_sync_runs WHERE status <> 'in_progress'"
                " AND (%s::timestamptz IS NULL OR completed_at > %s) ORDER BY completed_at",
                (since, since),
            ).fetchall()
        for row in rows:
            since = row["completed_at"]
            key = (row["connection_id"], row["stream_id"])
            if row["status"] == "success":
                if key in seen_ok:
                    continue
                seen_ok.add(key)
            emit(follow_line(row))
        if once:
            return
        time.sleep(poll_seconds)


if __name__ == "__main__":
    import functools
    import sys

    from .airflow_host import install

    install()  # runs under ``dev.py up``: credentials go to Airflow Connections, pools are made
    if "--kickoff" in sys.argv:
        kickoff()
    elif "--follow" in sys.argv:
        follow(emit=functools.partial(print, flush=True))
    else:
        main()
