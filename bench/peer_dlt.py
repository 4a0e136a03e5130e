"""Benchmark: our Zendesk sync side by side with a peer, dlt's ``rest_api`` source, on the same fake and database.

Both load the fake Zendesk of ``tests/fakes/zendesk.py`` (served on 127.0.0.1 by ``bench/sync_throughput.py``,
in a process of its own) into the same PostgreSQL, each in a child process of its own so that its RSS high-water
mark (``resource.getrusage``) is its own:

- **dlt**: ``rest_api_source`` over the incremental ticket export (cursor pagination, 1000 a page, stopping at
  ``end_of_stream``), solved and closed tickets kept (a ``filter`` step), and each kept ticket's comments as a
  dependent resource, exactly the requests our plugin makes (less the six requesters and three
  organizations it also reads). ``write_disposition="merge"`` on ``id``, so a re-run does not duplicate, the
  closest dlt comes to our exactly-once upserts; dlt embeds nothing and dedupes nothing by content hash.
- **ours**: ``runtime.sync.run_stream_sync`` of the ``tickets`` stream (sessions, messages, contacts,
  companies, classification, embeddings and graph links), as in ``bench/sync_throughput.py``; the time inside
  ``Enricher.run`` is reported, so the ratio is printed with and without enrichment.

``dlt`` is a bench-only dependency (``pip install -e '.[bench]'``).

    .venv/bin/python bench/peer_dlt.py [N]   (default 10000 tickets)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

THROUGHPUT = REPO / "bench" / "sync_throughput.py"


def _dlt_child(n: int, fake_url: str, token: str, db_url: str) -> dict[str, Any]:
    import dlt
    from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator
    from dlt.sources.rest_api import rest_api_source

    from tests.fakes.zendesk import ADMIN, INGESTED

    class ExportPaginator(JSONResponseCursorPaginator):
        """The export's cursor: the next page asks by ``cursor`` alone; ``end_of_stream`` ends it."""

        def update_state(self, response: Any, data: Any = None) -> None:
            body = response.json()
            self._next_reference = body.get("after_cursor")
            if body.get("end_of_stream") or not self._next_reference:
                self._has_next_page = False

        def update_request(self, request: Any) -> None:
            super().update_request(request)
            request.params.pop("start_time", None)

    source = rest_api_source({
        "client": {"base_url": fake_url + "/",
                   "auth": {"type": "http_basic", "username": f"{ADMIN['email']}/token", "password": token}},
        "resource_defaults": {"write_disposition": "merge", "primary_key": "id"},
        "resources": [
            {"name": "tickets",
             "endpoint": {"path": "api/v2/incremental/tickets/cursor.json",
                          "params": {"start_time": 0, "per_page": 1000}, "data_selector": "tickets",
                          "paginator": ExportPaginator(cursor_path="after_cursor", cursor_param="cursor")},
             "processing_steps": [{"filter": lambda t: t["status"] in INGESTED}]},
            {"name": "comments",
             "endpoint": {"path": "api/v2/tickets/{resources.tickets.id}/comments.json",
                          "params": {"page[size]": 100, "sort_order": "asc"}, "data_selector": "comments",
                          "paginator": {"type": "cursor", "cursor_path": "meta.after_cursor",
                                        "cursor_param": "page[after]"}}},
        ],
    })
    pipeline = dlt.pipeline(pipeline_name="bench_zendesk", pipelines_dir=tempfile.mkdtemp(prefix="hissuno-dlt-"),
                            destination=dlt.destinations.postgres(credentials=_dlt_url(db_url)),
                            dataset_name="zendesk_dlt", progress="log" if os.environ.get("BENCH_VERBOSE") else None)
    t, c = time.perf_counter(), time.process_time()
    pipeline.run(source)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    import shutil

    shutil.rmtree(pipeline.pipelines_dir, ignore_errors=True)
    import psycopg

    with psycopg.connect(db_url) as conn:
        tickets = conn.execute("SELECT count(*) FROM zendesk_dlt.tickets").fetchone()[0]  # type: ignore[index]
        comments = conn.execute("SELECT count(*) FROM zendesk_dlt.comments").fetchone()[0]  # type: ignore[index]
    return {"wall": wall, "cpu": cpu, "records": tickets, "comments": comments,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _dlt_url(db_url: str) -> str:
    """dlt insists on a host: the embedded store's URL has none (its socket folder is in ``?host=``, which
    libpq lets override the placeholder)."""
    return db_url.replace("@/", "@localhost/", 1) if "@/" in db_url else db_url


def _run(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.exit(f"{cmd[1:4]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return dict(json.loads(line[7:]))


def main() -> int:
    """A child loads with dlt; the parent serves the fake, runs both and prints the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", type=int, nargs="?", default=10_000)
    ap.add_argument("--child", nargs=3, metavar=("FAKE_URL", "TOKEN", "DB_URL"))
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_dlt_child(args.records, *args.child)), flush=True)
        return 0
    try:
        import dlt  # noqa: F401
    except ImportError:
        sys.exit("dlt is not installed: pip install -e '.[bench]'")
    from own_store import run_in_store

    def run() -> None:
        from sync_throughput import _fresh_db

        from hissuno_airflow.store.db import resolve_url

        _report(args.records, resolve_url(), _fresh_db)

    run_in_store(run)
    return 0


def _report(n: int, base_url: str, fresh_db: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, str(THROUGHPUT), "--child", "serve", "--n", str(n)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url, token = server.stdout.readline().split()
        db = fresh_db(base_url)  # one database for both: dlt writes its own schema, we write ours
        peer = _run([sys.executable, __file__, str(n), "--child", url, token, db], env)
        ours = _run([sys.executable, str(THROUGHPUT), "--child", "sync", "--plugin", "zendesk", "--n", str(n),
                     "--fake-url", url, "--token", token], dict(env, HISSUNO_DATABASE_URL=db))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {n} tickets in the fake,"
          f" load average {os.getloadavg()[0]:.1f}")
    print(f"dlt rest_api: {peer['wall']:7.2f} s wall, {peer['cpu']:6.2f} s CPU, peak {peer['peak_mb']:.0f} MB"
          f" ({peer['records']} tickets, {peer['comments']} comments loaded)")
    bare = ours["wall"] - ours["enrich"]
    print(f"hissuno sync: {ours['wall']:7.2f} s wall, {ours['cpu']:6.2f} s CPU, peak {ours['peak_mb']:.0f} MB"
          f" ({ours['records']} records; enrichment {ours['enrich']:.2f} s of it)")
    print(f"ratio hissuno/dlt wall: {ours['wall'] / peer['wall']:.2f}x with enrichment,"
          f" {bare / peer['wall']:.2f}x without; client CPU {ours['cpu'] / peer['cpu']:.2f}x;"
          f" peak memory {ours['peak_mb'] / peer['peak_mb']:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
