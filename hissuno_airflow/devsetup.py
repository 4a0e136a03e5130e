"""First-run set-up of ``python3 dev.py up``: connect the sample plugin and enable its streams (idempotent)."""

from __future__ import annotations

from . import settings
from .runtime.connect import start_connect
from .runtime.streams import enable_stream
from .store import connections as repo
from .store.db import get_store


def main() -> None:
    """Connect ``sample`` (workspace demo) once, with new records every 10 minutes, and enable streams."""
    from .airflow_host import install

    install()  # runs under ``dev.py up``: credentials go to Airflow Connections, pools are made
    store = get_store()
    store.migrate()
    existing = repo.list_connections(store, plugin_id="sample")
    if existing:
        conn_id = existing[0].id
    else:
        base = settings.base_url("hissuno", "PUBLIC", "http://127.0.0.1:8080/hissuno")
        result = start_connect("sample", {"credentials": {"workspace": "demo", "every_seconds": "600"}}, store,
                               user_id="dev", redirect_uri=f"{base}/api/plugins/oauth/sample/callback")
        conn_id = result["connection_id"]
    for stream_id, freq in (("sessions", "1h"), ("contacts", "6h"), ("companies", "24h"), ("issues", "1h"),
                            ("knowledge:help-center", "24h")):
        enable_stream(store, conn_id, stream_id, frequency=freq)
    print(f"sample connection {conn_id}: streams enabled (sessions and issues hourly)")


def kickoff(timeout: float = 180.0) -> None:
    """Queue one first run of every enabled sample stream's DAG as soon as the DAG processor wrote it."""
    import time

    from .airflow_host.runs import trigger_stream_run
    from .kit.errors import NotFoundError

    store = get_store()
    pending = [(r.connection_id, r.stream_id) for r in repo.list_streams(store, enabled_only=True)]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for item in list(pending):
            try:
                trigger_stream_run(*item, conf={"triggered_by": "manual"}, user="dev-setup")
                pending.remove(item)
                print(f"queued the first sync of {item[0]}/{item[1]}", flush=True)
            except NotFoundError:
                pass
        time.sleep(3)


if __name__ == "__main__":
    import sys

    kickoff() if "--kickoff" in sys.argv else main()
