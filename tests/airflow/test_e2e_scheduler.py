"""End to end with a real ``airflow api-server`` + ``airflow scheduler`` on 127.0.0.1.

``dag.test()`` hides Airflow 3's task isolation (tasks there may use the ORM), so this test runs the
real thing: the ``hissuno`` CLI connects the sample plugin (credentials go to an Airflow Connection,
the account's pool is created), the DAG file is serialized, the scheduler lets two catch-up
scheduled runs happen, then ``airflow backfill create`` syncs a past window. The store must then
hold the live records plus exactly that window's records, and the live cursor must not move.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hissuno_airflow.dag_factory import dag_id_for, timetable_for
from hissuno_airflow.plugins.sample import data as sample
from hissuno_airflow.store import connections as repo

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EVERY, SIZE = 600, 60

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(env, *cmd, timeout=120):
    # The test's Airflow keeps its metadata in SQLite, which the running scheduler locks for moments at a
    # time; a CLI call that meets the lock is tried again (a deployment uses PostgreSQL and never does).
    for attempt in range(5):
        out = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], env=env, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode == 0 or "database is locked" not in out.stderr:
            break
        time.sleep(2 * (attempt + 1))
    assert out.returncode == 0, f"{cmd}: {out.stdout[-2000:]} {out.stderr[-3000:]}"
    return out.stdout


def _runs(db: Path, dag_id: str, run_type: str):
    with sqlite3.connect(db, timeout=30) as c:
        return c.execute(
            "SELECT run_id, state, data_interval_start, data_interval_end FROM dag_run "
            "WHERE dag_id = ? AND run_type = ? ORDER BY logical_date", (dag_id, run_type)).fetchall()


def _task_log(airflow_home: Path, dag_id: str, run_id: str) -> str:
    """The sync task's log of one run, as the worker wrote it (a real task process, not dag.test)."""
    files = [f for f in (airflow_home / "logs").rglob("*.log")
             if f"dag_id={dag_id}" in str(f) and f"run_id={run_id}" in str(f)]
    assert files, f"no task log for {run_id}"
    return "\n".join(f.read_text() for f in files)


def _listening(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(pred, timeout, what, logs):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def _airflow_credentials(db: Path, conn_id: str) -> dict:
    """The credentials the CLI stored in the Airflow Connection (decrypted with the test's Fernet key)."""
    from cryptography.fernet import Fernet

    with sqlite3.connect(db) as c:
        extra, encrypted = c.execute("SELECT extra, is_extra_encrypted FROM connection WHERE conn_id = ?",
                                     (f"hissuno_{conn_id}",)).fetchone()
    assert encrypted
    return json.loads(Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode()).decrypt(extra.encode()))


def _parse_ts(raw: str) -> datetime:
    ts = datetime.fromisoformat(raw)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _sync_now(port: int, env: dict, conn_id: str) -> list[dict]:
    import httpx

    url = f"http://127.0.0.1:{port}"
    password = json.loads((Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")
                          .read_text())["admin"]
    token = httpx.post(url + "/auth/token", json={"username": "admin", "password": password},
                       timeout=30).json()["access_token"]
    frames = []
    with httpx.stream("GET", f"{url}/hissuno/api/plugins/sample/{conn_id}/sync",
                      params={"stream_id": "sessions"}, headers={"Authorization": f"Bearer {token}"},
                      timeout=httpx.Timeout(10, read=120)) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
    return frames


def test_scheduled_runs_then_backfill_window(store, tmp_path, database_url):
    now = datetime.now(UTC)
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"), "HISSUNO_HOME": str(tmp_path / "hissuno"),
        "HISSUNO_DATABASE_URL": database_url, "HISSUNO_CREDENTIALS_BACKEND": "airflow",
        "HISSUNO_DAG_CATCHUP": "true", "HISSUNO_LOAD_PLUGINS": "sample",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-jwt-secret-0123456789abcdef",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__CORE__FERNET_KEY": "m3WkZvK0pQ8mX2gN5aTq9LbC4dHs7JfR1uYeV6oPiWc=",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "PYTHONPATH": str(REPO),
    }
    db = tmp_path / "airflow" / "airflow.db"
    _run(env, "airflow", "db", "migrate", timeout=180)

    out = _run(env, "hissuno", "connect", "sample", "--set", "workspace=e2e", "--set", f"every_seconds={EVERY}",
               "--json")
    conn_id = json.loads(out)["connection_id"]
    epoch = datetime.fromisoformat(_airflow_credentials(db, conn_id)["epoch"])
    assert repo.get_connection(store, conn_id).credentials_backend == "airflow"
    # Enabling a stream is where the Airflow host gives the account its pool (its shared rate budget).
    _run(env, "hissuno", "enable", conn_id, "sessions", "--frequency", "1h", "--filters", json.dumps({"size": SIZE}))
    conn = repo.get_connection(store, conn_id)
    assert conn.settings.get("airflow_pool")

    dag_id = dag_id_for(conn_id, "sessions")
    minute = int(timetable_for("1h", dag_id).expression.split()[0])
    tick = (now - timedelta(seconds=30)).replace(minute=minute, second=0, microsecond=0)
    if tick > now - timedelta(seconds=30):
        tick -= timedelta(hours=1)
    live_cursor = epoch + timedelta(hours=8, minutes=5)
    with store.connection() as c:
        # The stream was enabled two intervals ago and already synced up to live_cursor.
        c.execute("UPDATE integration_streams SET created_at = %s, last_sync_at = %s "
                  "WHERE connection_id = %s AND stream_id = 'sessions'", (tick - timedelta(hours=2), live_cursor, conn_id))

    _run(env, "airflow", "dags", "reserialize", timeout=180)
    logs = [tmp_path / "api.log", tmp_path / "scheduler.log"]
    procs = []
    try:
        for cmd, log in ((["airflow", "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"], logs[0]),
                         (["airflow", "scheduler", "--skip-serve-logs"], logs[1])):
            procs.append(subprocess.Popen([str(BIN / cmd[0]), *cmd[1:]], env=env, stdout=log.open("w"),
                                          stderr=subprocess.STDOUT, start_new_session=True))
            if cmd[1] == "api-server":
                # Tasks report to the API server's execution API: a task started before it listens fails
                # (on a loaded machine it took the server over 10 s to start).
                _wait(lambda: _listening(port), 120, "the API server", logs[:1])

        def scheduled_done():
            runs = _runs(db, dag_id, "scheduled")
            return len([r for r in runs if r[1] == "success"]) >= 2 and all(r[1] == "success" for r in runs)

        _wait(scheduled_done, 240, "two successful scheduled runs", logs)
        first, second = (_task_log(tmp_path / "airflow", dag_id, r[0]) for r in _runs(db, dag_id, "scheduled")[:2])
        # The first run has no earlier success, so it must not ask XCom (the task's supervisor logs a
        # miss as an error); the second, in its own task process, reads the first's cursor from XCom.
        assert (": everything, up to now (incremental sync); no earlier successful run" in first
                or "the cursor Hissuno recorded for this stream" in first), first[:6000]
        assert "XCom not found" not in logs[1].read_text()
        assert re.search(r"records changed since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, up to now \(incremental sync\); "
                         r"the cursor the last successful run left in Airflow", second), second[-3000:]
        row = repo.get_stream(store, conn_id, "sessions")
        cursor_before_backfill = row.last_sync_at
        with store.connection() as c:
            live_runs = c.execute("SELECT triggered_by, status, counts, cursor_before, cursor_after, error_message "
                                  "FROM integration_sync_runs ORDER BY started_at").fetchall()
        live = {c["id"] for c in sample.conversations(sample.SampleSource("e2e", epoch, EVERY), size=SIZE,
                                                      since=live_cursor, until=None)}
        assert cursor_before_backfill == max(_parse_ts(c["updated_at"]) for c in sample.conversations(
            sample.SampleSource("e2e", epoch, EVERY), size=SIZE, since=None, until=None)), live_runs

        start = (epoch + timedelta(hours=2)).replace(minute=minute)
        if start < epoch + timedelta(hours=2):
            start += timedelta(hours=1)
        _run(env, "airflow", "backfill", "create", "--dag-id", dag_id, "--from-date", start.isoformat(),
             "--to-date", (start + timedelta(hours=1)).isoformat(), "--max-active-runs", "1")

        def backfill_done():
            runs = _runs(db, dag_id, "backfill")
            return len(runs) == 2 and all(r[1] in ("success", "failed") for r in runs)

        _wait(backfill_done, 120, "two finished backfill runs", logs)
        runs = _runs(db, dag_id, "backfill")
        assert [r[1] for r in runs] == ["success", "success"], runs
        lo, hi = _parse_ts(runs[0][2]), _parse_ts(runs[-1][3])
        assert (lo, hi) == (start, start + timedelta(hours=2))
        # Right after the backfill, before anything else syncs: the live cursor has not moved. (The
        # sync-now below rewrites it, so checking only at the end would let a backfill that moved it pass.)
        assert repo.get_stream(store, conn_id, "sessions").last_sync_at == cursor_before_backfill

        # Sync-now from the integrations page: queued as a DAG run (not run inside the API server),
        # followed over SSE through the run row the worker writes.
        frames = _sync_now(port, env, conn_id)
        types = [f["type"] for f in frames]
        assert types[0] == "connected" and "queued" in types and types[-1] == "complete", frames
        queued = next(f for f in frames if f["type"] == "queued")["data"]
        assert queued["dag_id"] == dag_id and queued["run_id"].startswith("manual__")
        assert frames[-1]["data"]["counts"]["failed"] == 0
        _wait(lambda: [(r[0], r[1]) for r in _runs(db, dag_id, "manual")] == [(queued["run_id"], "success")],
              60, "the manual run to finish", logs)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    window = {c["id"] for c in sample.conversations(sample.SampleSource("e2e", epoch, EVERY), size=SIZE,
                                                    since=lo, until=hi)}
    assert len(window) >= 8 and live and not window & live
    with store.connection() as c:
        synced = {r["external_id"] for r in c.execute(
            "SELECT external_id FROM integration_synced_records WHERE connection_id = %s AND stream_id = 'sessions' "
            "AND hissuno_kind = 'sessions'", (conn_id,)).fetchall()}
        backfill_rows = c.execute(
            "SELECT window_start, window_end, status FROM integration_sync_runs WHERE connection_id = %s "
            "AND triggered_by = 'backfill' ORDER BY window_start", (conn_id,)).fetchall()
    assert synced == live | window
    assert [(r["window_start"], r["window_end"], r["status"]) for r in backfill_rows] == [
        (lo, lo + timedelta(hours=1), "success"), (lo + timedelta(hours=1), hi, "success")]
    assert repo.get_stream(store, conn_id, "sessions").last_sync_at == cursor_before_backfill
