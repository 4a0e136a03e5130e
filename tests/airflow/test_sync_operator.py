"""SyncOperator under ``dag.test()``: credentials from the Airflow Connection, cursor through XCom."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hissuno_airflow.airflow_host.credentials import AirflowCredentialStore
from hissuno_airflow.dag_factory import build_dag, load_manifest
from hissuno_airflow.operators.sync import CURSOR_KEY
from hissuno_airflow.store import connections as repo

from ..fixtures.airflow import RecordingTI, run_dag
from .conftest import enable, make_connection


def _synced_ids(store, conn_id):
    with store.connection() as c:
        rows = c.execute("SELECT external_id FROM integration_synced_records WHERE connection_id = %s",
                         (conn_id,)).fetchall()
    return {r["external_id"] for r in rows}


def _xcom(dag_run, key):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as s:
        row = s.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, key=key).one_or_none()
        return None if row is None else XComModel.deserialize_value(row)


def _probe_stream(store, probe):
    """An ``afprobe`` connection with credentials in Airflow and its hourly ``people`` stream enabled."""
    conn = make_connection(store, "afprobe", backend="airflow")
    AirflowCredentialStore(store).save(conn, {"api_key": probe.GOOD_KEY, "workspace": "w"})
    enable(store, conn, "people", "1h")
    return conn


def test_second_run_pulls_first_runs_cursor(store, probe, airflow_clean):
    now = datetime.now(UTC).replace(microsecond=0)
    conn = _probe_stream(store, probe)
    probe.write_records([("a", now - timedelta(hours=3)), ("b", now - timedelta(hours=2))])

    (row,) = load_manifest()
    dag = build_dag(row)
    first = run_dag(dag)
    assert first.state == "success"
    assert _synced_ids(store, conn.id) == {"a", "b"}
    assert _xcom(first, CURSOR_KEY) == (now - timedelta(hours=2)).isoformat()

    # Forget the store's own cursor: only XCom can tell the second run where to start.
    with store.connection() as c:
        c.execute("UPDATE integration_streams SET last_sync_at = NULL WHERE connection_id = %s", (conn.id,))
    probe.write_records([("a", now - timedelta(hours=3)), ("b", now - timedelta(hours=2)),
                         ("c", now - timedelta(hours=1))])
    second = run_dag(dag)
    assert second.state == "success"
    counts = _xcom(second, "return_value")["counts"]
    assert counts["synced"] == 1
    assert _xcom(second, CURSOR_KEY) == (now - timedelta(hours=1)).isoformat()
    with store.connection() as c:
        runs = c.execute("SELECT cursor_before FROM integration_sync_runs WHERE connection_id = %s "
                         "ORDER BY started_at", (conn.id,)).fetchall()
    assert runs[1]["cursor_before"] == now - timedelta(hours=2)


def test_bad_credentials_fail_without_retry(store, probe, airflow_clean):
    conn = make_connection(store, "afprobe", backend="airflow")
    AirflowCredentialStore(store).save(conn, {"api_key": "wrong-key-xyz"})
    enable(store, conn, "people", "manual")
    probe.write_records([("a", datetime.now(UTC) - timedelta(hours=1))])
    (row,) = load_manifest()
    run = run_dag(build_dag(row))
    assert run.state == "failed"
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as s:
        ti = s.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).one()
        assert ti.state == "failed"  # fatal: not up_for_retry
    stream = repo.get_stream(store, conn.id, "people")
    assert stream.last_sync_status == "error"
    # The failed task and the connection say what to do: reconnect (not retry).
    assert f"reconnect needed: run `hissuno connect afprobe --update {conn.id}`" in (stream.last_sync_error or "")
    assert repo.get_connection(store, conn.id).needs_reconnect


def test_on_kill_cancels_the_running_sync_and_keeps_the_cursor(store, probe, airflow_clean):
    import threading
    import time
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowException

    now = datetime.now(UTC).replace(microsecond=0)
    conn = _probe_stream(store, probe)
    probe.write_records([("a", now - timedelta(hours=2)), ("wait", now - timedelta(hours=1))])
    task = build_dag(load_manifest()[0]).get_task("sync")
    ti = RecordingTI("hissuno__kill", allow_pull=False)  # a first run must not pull a cursor
    context = {"ti": ti, "params": {}, "prev_start_date_success": None,
               "dag_run": SimpleNamespace(run_id="manual__kill", conf={}, run_type="manual")}
    raised = []

    def run():
        try:
            task.execute(context)
        except Exception as exc:
            raised.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with store.connection() as c:
            if c.execute("SELECT 1 FROM integration_sync_runs WHERE connection_id = %s AND status = 'in_progress'",
                         (conn.id,)).fetchone():
                break
        time.sleep(0.05)
    task.on_kill()  # what the Task SDK calls on SIGTERM
    worker.join(30)
    assert not worker.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], AirflowException) and "cancelled" in str(raised[0])
    with store.connection() as c:
        run = c.execute("SELECT status, error_message FROM integration_sync_runs WHERE connection_id = %s",
                        (conn.id,)).fetchone()
    assert (run["status"], run["error_message"]) == ("cancelled", "airflow task killed")
    assert repo.get_stream(store, conn.id, "people").last_sync_at is None and CURSOR_KEY not in ti.pushed


def test_a_cli_sync_between_scheduled_runs_is_not_read_again(store, probe, airflow_clean):
    """One cursor: ``hissuno sync`` moves the store's high-water mark; the next Airflow run starts from the
    newer of its XCom cursor and the store's, so it does not re-read what the terminal already synced."""
    from hissuno_airflow.runtime.sync import run_stream_sync

    now = datetime.now(UTC).replace(microsecond=0)
    conn = _probe_stream(store, probe)
    probe.write_records([("a", now - timedelta(hours=5))])
    (row,) = load_manifest()
    dag = build_dag(row)
    assert run_dag(dag).state == "success"
    # Between two Airflow runs, a person syncs from the terminal (what ``hissuno sync`` calls).
    probe.write_records([("a", now - timedelta(hours=5)), ("b", now - timedelta(hours=3)),
                         ("c", now - timedelta(hours=2))])
    assert run_stream_sync(conn.id, "people", store=store).counts["synced"] == 2
    second = run_dag(dag)
    assert second.state == "success"
    counts = _xcom(second, "return_value")["counts"]
    assert counts["found"] == counts["synced"] == counts["skipped"] == 0, counts
    assert _xcom(second, CURSOR_KEY) == (now - timedelta(hours=2)).isoformat()
