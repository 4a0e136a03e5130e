"""A revoked Jira grant under Airflow: the stream's task fails once, is not retried, and says to reconnect."""

from __future__ import annotations

from typing import Any

import pytest

from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.store import connections as repo
from tests.fakes import jira as fakes
from tests.fakes.jira import ENG_A
from tests.fixtures.airflow import run_dag


def test_a_revoked_grant_fails_the_task_without_retry(store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch,
                                                      airflow_clean: None, airflow_host: Any) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from hissuno_airflow.dag_factory import build_dag, load_manifest

    fake = fakes.serve(monkeypatch, serve_fake, 4)
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, ENG_A, frequency="1h")
    (row,) = [r for r in load_manifest() if r["connection_id"] == cid]
    dag = build_dag(row)
    assert run_dag(dag).state == "success"
    assert repo.get_stream(store, cid, ENG_A).last_sync_status == "success"

    live = load_credentials(store, repo.get_connection(store, cid))
    fake.revoke_token(live["refresh_token"])
    fake.revoke_token(live["access_token"])
    grants = len(fake.requests_to("/oauth/token"))
    run = run_dag(dag)
    assert run.state == "failed"
    with create_session() as s:
        (ti,) = s.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        assert ti.state == "failed" and ti.try_number == 1  # fatal: not up_for_retry
    assert len(fake.requests_to("/oauth/token")) == grants + 1  # one refused grant
    assert fake.refusals[-1]["error"] == "invalid_grant"  # refused for the revoked token, not the body's format
    stream = repo.get_stream(store, cid, ENG_A)
    assert f"reconnect needed: run `hissuno connect jira --update {cid}`" in (stream.last_sync_error or "")
    assert repo.get_connection(store, cid).needs_reconnect
