"""A HubSpot stream's Airflow task when the grant was revoked: failed, not up for retry, and the
connection marked "reconnect needed" (the SyncOperator under ``dag.test()``, against the HubSpot fake)."""

from __future__ import annotations

from typing import Any

import pytest

from hissuno_airflow.dag_factory import build_dag, load_manifest
from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.store import connections as repo
from tests.fakes import hubspot as fakes

from ..fixtures.airflow import run_dag


def test_a_revoked_grant_fails_the_task_without_retry(store: Any, serve_fake: Any, airflow_clean: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    fake = fakes.serve(monkeypatch, serve_fake, 2, 3)
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, "contacts", frequency="manual")
    creds = load_credentials(store, repo.get_connection(store, cid))
    fake.revoke_token(creds["refresh_token"])
    fake.expire_access_token(creds["access_token"])

    (row,) = [r for r in load_manifest() if r["connection_id"] == cid]
    run = run_dag(build_dag(row))
    assert run.state == "failed"
    with create_session() as s:
        ti = s.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).one()
        assert ti.state == "failed"  # fatal: not up_for_retry
    stream = repo.get_stream(store, cid, "contacts")
    assert stream.last_sync_status == "error"
    assert f"reconnect needed: run `hissuno connect hubspot --update {cid}`" in (stream.last_sync_error or "")
    assert creds["refresh_token"] not in (stream.last_sync_error or "")
    assert repo.get_connection(store, cid).needs_reconnect
    # One refused refresh grant, no retry loop.
    assert [r["error"] for r in fake.refusals] == ["invalid_grant"] and fake.refreshes == 0
