"""Credentials in Airflow: Connection written server-side, refreshed tokens overlaid from tasks."""

from __future__ import annotations

from datetime import datetime

from hissuno_airflow.airflow_host.credentials import AirflowCredentialStore, overlay_key
from hissuno_airflow.hooks import airflow_conn_id, hook_for

from ..fixtures.airflow import run_dag
from .conftest import make_connection


def _orm_conn(conn_id):
    from airflow.models import Connection

    return Connection.get_connection_from_secrets(conn_id)


def test_server_side_save_writes_an_encrypted_connection(store, probe, airflow_clean):
    conn = make_connection(store, "afprobe", backend="airflow")
    creds = AirflowCredentialStore(store)
    creds.save(conn, {"api_key": probe.GOOD_KEY, "workspace": "w1"})

    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as s:
        row = s.query(Connection).filter_by(conn_id=airflow_conn_id(conn.id)).one()
        assert row.conn_type == "hissuno_afprobe"
        assert row.is_extra_encrypted
        assert probe.GOOD_KEY not in (row._extra or "")
    from hissuno_airflow.store import connections as repo

    fresh = repo.get_connection(store, conn.id)
    assert (fresh.credentials_backend, fresh.credentials_ref) == ("airflow", airflow_conn_id(conn.id))
    assert creds.load(fresh) == {"api_key": probe.GOOD_KEY, "workspace": "w1"}


def test_task_save_goes_to_the_variable_overlay(store, probe, airflow_clean):
    from airflow.sdk import DAG, task

    conn = make_connection(store, "afprobe", backend="airflow")
    AirflowCredentialStore(store).save(conn, {"api_key": "old-key-123", "workspace": "w1"})

    with DAG("hissuno_test_overlay", schedule=None, start_date=datetime(2024, 1, 1)) as dag:

        @task
        def rotate() -> None:
            from hissuno_airflow.airflow_host.credentials import in_task_sandbox
            from hissuno_airflow.store import connections as repo
            from hissuno_airflow.store.db import get_store

            assert in_task_sandbox()
            s = get_store()
            row = repo.get_connection(s, conn.id)
            cs = AirflowCredentialStore(s)
            assert cs.load(row)["api_key"] == "old-key-123"
            cs.save(row, {**cs.load(row), "api_key": "new-key-456"})
            assert cs.load(row)["api_key"] == "new-key-456"

        rotate()

    assert run_dag(dag).state == "success"
    from airflow.models import Variable

    assert "new-key-456" in Variable.get(overlay_key(conn.id))
    assert _orm_conn(airflow_conn_id(conn.id)).extra_dejson["api_key"] == "old-key-123"
    from hissuno_airflow.store import connections as repo

    row = repo.get_connection(store, conn.id)
    cs = AirflowCredentialStore(store)
    assert cs.load(row)["api_key"] == "new-key-456"
    # A server-side save (a reconnect) is newer than any overlay and drops it.
    cs.save(row, {"api_key": "reconnected-789"})
    assert Variable.get(overlay_key(conn.id), default_var=None) is None
    assert cs.load(row) == {"api_key": "reconnected-789"}


def test_hook_test_connection_runs_the_plugin_test(store, probe, airflow_clean):
    conn = make_connection(store, "afprobe", backend="airflow")
    cs = AirflowCredentialStore(store)
    hook_cls = hook_for(probe.plugin)
    cs.save(conn, {"api_key": probe.GOOD_KEY})
    ok, message = hook_cls(hissuno_conn_id=airflow_conn_id(conn.id)).test_connection()
    assert ok and "Probe Workspace" in message
    cs.save(conn, {"api_key": "bad-secret-value"})
    ok, message = hook_cls(hissuno_conn_id=airflow_conn_id(conn.id)).test_connection()
    assert not ok and "401" in message and "bad-secret-value" not in message


def test_ui_prefixed_extra_fields_are_read(probe):
    from airflow.models import Connection

    from hissuno_airflow.hooks import credentials_from_connection

    c = Connection(conn_id="x", conn_type="hissuno_afprobe",
                   extra='{"extra__hissuno_afprobe__api_key": "k1", "extra__hissuno_afprobe__workspace": ""}')
    assert credentials_from_connection(c, "hissuno_afprobe") == {"api_key": "k1"}




def test_the_cli_reads_airflow_connections_without_the_scheme_warning(store, database_url, airflow_clean, tmp_path):
    # Each server-side read of a "hissuno_<plugin>" Connection made Airflow warn that schemes "shall not
    # contain '_'" (on every CLI call; it also broke the terminal's progress line).
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__LOGGING__NAMESPACE_LEVELS"}
    env.update(HISSUNO_DATABASE_URL=database_url, HISSUNO_HOME=str(tmp_path), HISSUNO_CREDENTIALS_BACKEND="airflow")

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        return proc

    out = cli("connect", "sample", "--set", "workspace=quiet", "--json")
    cid = __import__("json").loads(out.stdout)["connection_id"]
    cli("enable", cid, "contacts")
    synced = cli("sync", cid, "contacts")  # loads the credentials from the Airflow Connection
    assert _orm_conn(airflow_conn_id(cid)).conn_type == "hissuno_sample"
    assert "shall not contain" not in out.stderr + synced.stderr
