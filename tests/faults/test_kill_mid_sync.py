"""Fault: the task process of a running sync is SIGKILLed mid-sync, under a real Airflow scheduler.

3,000 new issues of one Linear team (the Linear fake, on a loopback socket, each page slowed a little so the kill
lands mid-sync) sync in a real task process, whose ingest goes to a worker process after 200 (as a large
run's does, after ``HISSUNO_INGEST_WORKER_AFTER``). Once part of them are committed, the task process gets
SIGKILL: nothing in it runs again (no ``finally``, no ``on_kill``). Airflow marks the try failed and retries
it (``HISSUNO_TASK_RETRY_DELAY_SECONDS``); the killed run's lease lapses and the next start closes it.
Afterwards every issue is in the store exactly once; the retry started from the cursor the last successful
run left, and the cursor (the store's and the one in XCom) is where the successful retry put it: the newest
update time of the team's issues.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest

from hissuno_airflow.dag_factory import dag_id_for
from hissuno_airflow.store import connections as repo
from tests.fakes.linear import TEAMS, FakeLinear, connect, oauth_env
from tests.fakes.server import FakeClock
from tests.fixtures.processes import ended

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

OLD, ISSUES = 1000, 3000
"""Issues synced before (below the stream's cursor), and issues the killed run and its retry fetch."""
TEAM = TEAMS[0]["id"]
STREAM = f"issues:{TEAM}"


def _ts(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


def _n(store: Any, sql: str, *args: Any) -> int:
    with store.connection() as c:
        return int(c.execute(sql, args).fetchone()["n"])


def _live_run(store: Any, cid: str) -> dict[str, Any] | None:
    with store.connection() as c:
        return c.execute("SELECT id::text AS id, counts FROM integration_sync_runs WHERE connection_id = %s"
                         " AND status = 'in_progress'", (cid,)).fetchone()


def _task_process(stack: Any, dag_id: str) -> psutil.Process | None:
    """The running try's task process: the pid Airflow recorded, checked to be a live Airflow task runner."""
    running = [t for t in stack.task_instances(dag_id) if t["state"] == "running" and t["pid"]]
    if not running:
        return None
    try:
        proc = psutil.Process(running[0]["pid"])
        return proc if "airflow" in " ".join(proc.cmdline()) else None
    except psutil.NoSuchProcess:
        return None


def test_a_sync_killed_mid_run_is_retried_to_every_record_exactly_once(store, database_url, serve_fake, monkeypatch,
                                                                       airflow_stack):
    fake = FakeLinear(0, clock=FakeClock().time)
    fake.page_delay = 0.3  # a page takes a moment, as a real API's does: the kill lands mid-sync
    serve_fake(fake)
    fake.add_issues(TEAM, OLD + ISSUES)
    oauth_env(monkeypatch, fake)
    cid = connect(store, fake)
    stack = airflow_stack(
        database_url, HISSUNO_LOAD_PLUGINS="linear", HISSUNO_LINEAR_API_URL=fake.url,
        HISSUNO_LINEAR_AUTH_URL=fake.url, LINEAR_CLIENT_ID=fake.client_id, LINEAR_CLIENT_SECRET=fake.client_secret,
        # A killed run's lease lapses after 6 s; Airflow retries 5-10 s after a failure, then 10-20 s.
        HISSUNO_RUN_LEASE_SECONDS="6", HISSUNO_TASK_RETRY_DELAY_SECONDS="5",
        # The run's ingest goes to a worker process after 200 issues: the kill must take the worker with it.
        HISSUNO_INGEST_WORKER_AFTER="200",
    )
    stack.enable(cid, [STREAM])
    dag_id = dag_id_for(cid, STREAM)
    # The stream already synced the oldest 1,000 issues: its cursor sits between the 1,000th and the 1,001st
    # update, so this run fetches the newer 3,000, and the retry must start from that cursor again.
    issues = fake.team_issues(TEAM)
    cursor = _ts(issues[OLD - 1]["updatedAt"]) + timedelta(seconds=30)
    assert cursor < _ts(issues[OLD]["updatedAt"])
    with store.connection() as c:
        c.execute("UPDATE integration_streams SET last_sync_at = %s, last_sync_status = 'success'"
                  " WHERE connection_id = %s AND stream_id = %s", (cursor, cid, STREAM))
    started = time.monotonic()
    stack.start()

    # Kill once a few batches are committed (the run's counts are stored with its writes) and most are not.
    run = stack.wait(lambda: (r := _live_run(store, cid)) and r["counts"].get("synced", 0) >= 500 and r,
                     150, "the first try to commit 500 issues")
    victim = stack.wait(lambda: _task_process(stack, dag_id), 30, "the running task process")
    workers = victim.children()
    assert workers, "the task's ingest worker runs (forked after 200 issues)"
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait(10)
    assert all(ended(w, 5) for w in workers), "the ingest worker died with its task"
    written_before_kill = _n(store, "SELECT count(*) n FROM issues")
    time.sleep(2)  # before the lease lapses (6 s) no retry can write: whatever changes now is the dead run's
    assert _n(store, "SELECT count(*) n FROM issues") == written_before_kill, "nothing is written after the kill"
    assert 500 <= written_before_kill < ISSUES, written_before_kill
    # The killed run moved no cursor: it never finished.
    assert repo.get_stream(store, cid, STREAM).last_sync_at == cursor

    ti = stack.wait(lambda: stack.first_task(dag_id), 150, "the retried task to finish")
    timings = f"killed after {killed_at - started:.0f} s; done {time.monotonic() - killed_at:.0f} s later"
    story = "\n".join(stack.events(dag_id, ti["run_id"]))
    assert ti["state"] == "success" and ti["try_number"] >= 2, f"{ti}; {timings}\n{story}"

    # Every issue of the team exactly once: one entity per external id, one synced record each.
    with store.connection() as c:
        per_id = c.execute("SELECT r.external_id, count(i.id) AS n FROM integration_synced_records r"
                           " JOIN issues i ON i.id = r.hissuno_id WHERE r.connection_id = %s"
                           " GROUP BY r.external_id", (cid,)).fetchall()
        runs = c.execute("SELECT id::text AS id, status, error_message, cursor_before, cursor_after, counts"
                         " FROM integration_sync_runs WHERE connection_id = %s ORDER BY started_at", (cid,)).fetchall()
    expected = {i["id"] for i in issues[OLD:]}
    assert len(expected) == ISSUES
    assert {r["external_id"] for r in per_id} == expected
    assert all(r["n"] == 1 for r in per_id)
    assert _n(store, "SELECT count(*) n FROM issues") == ISSUES
    assert _n(store, "SELECT count(*) n FROM ingest_errors") == 0

    # The killed run was closed as failed (abandoned); the retry started from the cursor the last successful
    # run left (not from where the killed run got to) and moved it to the newest issue.
    assert runs[0]["id"] == run["id"] and runs[0]["status"] == "error" and runs[0]["cursor_after"] is None, runs[0]
    assert "abandoned" in (runs[0]["error_message"] or "")
    assert runs[0]["cursor_before"] == cursor
    last = runs[-1]
    assert last["status"] == "success" and last["cursor_before"] == cursor, last
    newest = max(_ts(i["updatedAt"]) for i in issues)
    assert last["cursor_after"] == newest
    stream = repo.get_stream(store, cid, STREAM)
    assert stream.last_sync_at == newest and stream.last_sync_status == "success"
    (xcom,) = stack.sql("SELECT value FROM xcom WHERE dag_id = ? AND key = 'hissuno_cursor'", dag_id)
    assert datetime.fromisoformat(json.loads(xcom[0])).astimezone(UTC) == newest
    print(f"\n{timings}; {written_before_kill} of {ISSUES} issues were committed before the kill; "
          f"tries: {ti['try_number']}; pid killed: {victim.pid} (test pid {os.getpid()})")
