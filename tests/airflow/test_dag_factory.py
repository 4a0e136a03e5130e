"""The DAG file: one DAG per enabled stream instance, right timetables, disabling, store outages."""

from __future__ import annotations

from hissuno_airflow.dag_factory import cache_path, dag_id_for, ensure_pool, timetable_for
from hissuno_airflow.store import connections as repo

from ..fixtures.airflow import parse_dag_file
from .conftest import enable, make_connection


def _cron(dag):
    return dag.timetable.expression


def test_one_dag_per_enabled_stream_with_right_timetable(store, probe, airflow_db):
    conn = make_connection(store, "afprobe")
    enable(store, conn, "people", "1h")
    enable(store, conn, "people:team/a", "6h")
    enable(store, conn, "people:team-b", "24h")
    enable(store, conn, "people:manual", "manual")
    enable(store, conn, "people:hooked", "webhook")
    enable(store, conn, "people:off", "1h", enabled=False)

    dags = parse_dag_file()
    expected = {dag_id_for(conn.id, s) for s in ("people", "people:team/a", "people:team-b", "people:manual",
                                                  "people:hooked")}
    assert set(dags) == expected

    hourly = dags[dag_id_for(conn.id, "people")]
    assert type(hourly.timetable).__name__ == "StreamTimetable"
    minute, hour, *_ = _cron(hourly).split()
    assert hour == "*" and 0 <= int(minute) < 60
    six = dags[dag_id_for(conn.id, "people:team/a")]
    assert type(six.timetable).__name__ == "StreamTimetable"
    assert _cron(six).split()[1].endswith("/6")
    daily = dags[dag_id_for(conn.id, "people:team-b")]
    assert type(daily.timetable).__name__ == "StreamTimetable"
    assert _cron(daily).split()[1].isdigit()
    for sid in ("people:manual", "people:hooked"):
        assert type(dags[dag_id_for(conn.id, sid)].timetable).__name__ == "NullTimetable"

    assert hourly.max_active_runs == 1
    assert set(hourly.tags) == {"hissuno", "afprobe", "contacts"}
    assert hourly.is_paused_upon_creation is False
    assert "full_refresh" in hourly.params and hourly.params["full_refresh"] is False
    task = hourly.get_task("sync")
    assert task.retries == 3 and task.retry_exponential_backoff
    assert task.owner == "hissuno"
    assert [o.uri for o in task.outlets] == [f"hissuno://{conn.id}/people"]
    assert "People" in hourly.doc_md


def test_offsets_are_stable_and_spread():
    ids = [dag_id_for("conn_x", f"s{i}") for i in range(200)]
    minutes = {timetable_for("1h", d).expression.split()[0] for d in ids}
    assert len(minutes) > 40
    assert [timetable_for("1h", d).expression for d in ids[:5]] == [timetable_for("1h", d).expression for d in ids[:5]]


def test_dag_ids_are_valid_and_distinct():
    a, b = dag_id_for("c1", "issues:org/repo"), dag_id_for("c1", "issues:org_repo")
    assert a != b
    import re

    assert re.fullmatch(r"[\w.-]+", a) and len(dag_id_for("c1", "x" * 400)) <= 250


def test_disabling_a_stream_removes_its_dag(store, probe, airflow_db):
    conn = make_connection(store, "afprobe")
    enable(store, conn, "people", "1h")
    enable(store, conn, "people:b", "manual")
    assert dag_id_for(conn.id, "people:b") in parse_dag_file()
    enable(store, conn, "people:b", "manual", enabled=False)
    dags = parse_dag_file()
    assert dag_id_for(conn.id, "people:b") not in dags
    assert dag_id_for(conn.id, "people") in dags


def test_store_down_keeps_previous_dags(store, probe, airflow_db, monkeypatch):
    conn = make_connection(store, "afprobe")
    enable(store, conn, "people", "6h")
    enable(store, conn, "people:x", "24h")
    before = parse_dag_file()
    assert len(before) == 2

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    monkeypatch.setenv("HISSUNO_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{dead_port}/none")
    after = parse_dag_file()
    assert set(after) == set(before)
    assert {d: type(x.timetable).__name__ for d, x in after.items()} == {
        d: type(x.timetable).__name__ for d, x in before.items()}

    cache_path().unlink()
    assert parse_dag_file() == {}


def test_every_stream_of_one_provider_account_shares_its_pool(store, probe, airflow_db):
    from airflow.models.pool import Pool

    with store.connection() as c:
        c.execute("INSERT INTO projects (id, name) VALUES ('00000000-0000-0000-0000-0000000000b2', 'b') "
                  "ON CONFLICT DO NOTHING")
    here = make_connection(store, "afprobe", account="acct-1")
    # The same provider account connected from a second project spends the same rate budget.
    there, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-0000000000b2",
                                      plugin_id="afprobe", external_account_id="acct-1", account_label="again",
                                      settings={})
    other = make_connection(store, "afprobe", account="acct-2")
    fresh = make_connection(store, "afprobe", account="acct-3")
    for conn in (here, there, other, fresh):
        enable(store, conn, "people", "1h")
        enable(store, conn, "people:x", "6h")
    shared, own = ensure_pool(store, here), ensure_pool(store, other)
    assert ensure_pool(store, repo.get_connection(store, there.id)) == shared != own
    assert Pool.get_pool(shared).slots == 1
    # Its user gives the account more room in Airflow (UI or `airflow pools set`): passing through the pool
    # again (another stream enabled) keeps their size.
    Pool.create_or_update_pool(shared, slots=4, description="raised by its user", include_deferred=False)
    assert ensure_pool(store, here) == shared and Pool.get_pool(shared).slots == 4

    dags = parse_dag_file()

    def pools(conn):
        return {dags[dag_id_for(conn.id, s)].get_task("sync").pool for s in ("people", "people:x")}

    assert pools(here) == pools(there) == {shared} and pools(other) == {own}
    # An account whose pool was never created runs on the default pool instead of never being scheduled.
    assert pools(fresh) == {"default_pool"}


def test_dag_limits_follow_the_airflow_configuration(store, probe, airflow_db, monkeypatch):
    conn = make_connection(store, "afprobe")
    enable(store, conn, "people", "1h")
    dag = parse_dag_file()[dag_id_for(conn.id, "people")]
    assert dag.max_active_tasks == 16 and dag.max_consecutive_failed_dag_runs == 0
    monkeypatch.setenv("AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG", "3")
    monkeypatch.setenv("AIRFLOW__CORE__MAX_CONSECUTIVE_FAILED_DAG_RUNS_PER_DAG", "5")
    dag = parse_dag_file()[dag_id_for(conn.id, "people")]
    assert (dag.max_active_tasks, dag.max_consecutive_failed_dag_runs) == (3, 5)


def test_the_first_retry_delay_follows_the_setting(store, probe, airflow_db, monkeypatch):
    from datetime import timedelta

    conn = make_connection(store, "afprobe")
    enable(store, conn, "people", "1h")
    task = parse_dag_file()[dag_id_for(conn.id, "people")].get_task("sync")
    assert task.retry_delay == timedelta(minutes=1)  # the default
    monkeypatch.setenv("HISSUNO_TASK_RETRY_DELAY_SECONDS", "7")
    task = parse_dag_file()[dag_id_for(conn.id, "people")].get_task("sync")
    assert task.retry_delay == timedelta(seconds=7) and task.max_retry_delay == timedelta(minutes=30)
