"""DAGs that explain themselves and run on time: display names, descriptions, first runs, next_sync_at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hissuno_airflow.airflow_host import schedule
from hissuno_airflow.dag_factory import dag_id_for
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.store import connections as repo

from ..fixtures.airflow import parse_dag_file
from .conftest import enable, make_connection


def _core(timetable):
    from airflow.serialization.encoders import coerce_to_core_timetable

    return coerce_to_core_timetable(timetable)


def _next(dag, last=None):
    """What Airflow's scheduler computes for the DAG's next scheduled run (catchup off, as built)."""
    from airflow.timetables.base import TimeRestriction

    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup)
    return _core(dag.timetable).next_dagrun_info(last_automated_data_interval=last, restriction=restriction)


def test_dag_names_its_provider_account_and_stream_and_documents_itself(store, probe, airflow_db):
    conn = make_connection(store, "afprobe")
    enable(store, conn, "people", "6h")
    repo.upsert_stream(store, connection_id=conn.id, plugin_id="afprobe", stream_id="people:vip",
                       stream_kind="contacts", frequency="manual", filter_config={"tag": "vip"})
    dags = parse_dag_file()
    dag_id = dag_id_for(conn.id, "people")
    dag = dags[dag_id]
    assert dag.dag_id == f"hissuno__{conn.id}__people"  # ids unchanged
    assert dag.dag_display_name == "Airflow Probe · afprobe acct-1 · People"
    words = schedule.describe("6h", dag_id)
    assert words.startswith("every 6 hours, at ") and words.endswith(" UTC")
    assert dag.description == f"Syncs People from Airflow Probe (afprobe acct-1) into Hissuno contacts, {words}."
    doc = dag.doc_md
    assert f"airflow backfill create --dag-id {dag_id} " in doc and "<this dag>" not in doc
    assert f"Hissuno connection `{conn.id}`" in doc and "`people` (contacts)" in doc
    assert "Filters | none" in doc and f"Schedule | {words}" in doc
    assert "table `contacts`" in doc and f"hissuno://{conn.id}/people" in doc

    manual = dags[dag_id_for(conn.id, "people:vip")]
    assert manual.dag_display_name == "Airflow Probe · afprobe acct-1 · People (vip)"
    assert "`tag` = `\"vip\"`" in manual.doc_md
    assert "cannot backfill" in manual.doc_md and f"airflow dags trigger {manual.dag_id}" in manual.doc_md


def test_schedule_in_words_matches_the_cron_slot():
    for i in range(50):
        dag_id = f"hissuno__c{i}__s"
        _hours, hour, minute = schedule.slot("6h", dag_id)  # type: ignore[misc]
        cron = schedule.cron_for("6h", dag_id)
        assert cron == f"{minute} {hour}-23/6 * * *"
        assert f"{hour:02d}:{minute:02d}" in schedule.describe("6h", dag_id)
        m = schedule.slot("1h", dag_id)[2]  # type: ignore[index]
        assert schedule.describe("1h", dag_id) == f"every hour, at {m:02d} minutes past the hour (UTC)"
    assert schedule.describe("manual", "x") == "only when triggered (manual)"


@pytest.mark.parametrize("frequency", ["1h", "6h", "24h"])
def test_a_new_stream_runs_as_soon_as_its_dag_appears_then_keeps_its_slot(store, probe, airflow_db, frequency):
    conn = make_connection(store, "afprobe")
    # Several streams, so some slots fall just before now (the reported 33-hour case) and some just after.
    for i in range(8):
        enable(store, conn, f"people:s{i}", frequency)
    now = datetime.now(UTC)
    for dag_id, dag in parse_dag_file().items():
        first = _next(dag)
        assert first is not None
        # The scheduler creates a run once its run_after has passed: right away for a new stream.
        assert first.run_after <= now, (dag_id, first.run_after, now)
        assert first.run_after > now - timedelta(hours=schedule.FREQ_HOURS[frequency]) - timedelta(minutes=1)
        # Then the spread slot: the next run is where schedule.next_run_after (next_sync_at) says.
        second = _next(dag, first.data_interval)
        assert second is not None
        assert second.run_after == schedule.next_run_after(frequency, dag_id, now)
        assert second.run_after.strftime("%M") == schedule.cron_for(frequency, dag_id).split()[0].zfill(2)


def test_next_sync_at_agrees_with_airflow(store, probe, airflow_clean):
    """Enabling sets "soon"; a finished run stores the DAG's next slot, as Airflow will schedule it."""
    from hissuno_airflow.airflow_host.credentials import AirflowCredentialStore
    from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync

    from . import probe_plugin

    conn = make_connection(store, "afprobe", backend="airflow")
    AirflowCredentialStore(store).save(conn, {"api_key": probe_plugin.GOOD_KEY})
    probe_plugin.write_records([("a", datetime(2026, 1, 1, tzinfo=UTC))])
    before = datetime.now(UTC)
    row = enable_stream(store, conn.id, "people", frequency="6h")
    assert row.next_sync_at is not None
    assert before < row.next_sync_at <= datetime.now(UTC) + schedule.FIRST_RUN_DELAY

    result = run_stream_sync(conn.id, "people", SyncPlan(triggered_by="cron"), store=store)
    assert result.status == "success", result.error
    after = repo.get_stream(store, conn.id, "people").next_sync_at
    dag = parse_dag_file()[dag_id_for(conn.id, "people")]
    from airflow.timetables.base import DataInterval

    # Airflow's answer after the run that covered the latest completed interval.
    first = _next(dag)
    second = _next(dag, DataInterval(first.data_interval.start, first.data_interval.end))
    assert after == second.run_after

    row = enable_stream(store, conn.id, "people", frequency="manual")
    assert row.next_sync_at is None


def test_airflow_shows_the_schedule_in_words(store, probe, airflow_db):
    """Serialized as the DAG processor does: the Schedule column (timetable_summary) reads in words."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    from ..fixtures.airflow import serialize

    conn = make_connection(store, "afprobe")
    enable(store, conn, "people", "6h")
    dag_id = dag_id_for(conn.id, "people")
    serialize(parse_dag_file()[dag_id])
    with create_session() as s:
        row = s.query(DagModel).filter_by(dag_id=dag_id).one()
        summary, description = row.timetable_summary, row.timetable_description
    assert summary == schedule.describe("6h", dag_id)
    assert summary.startswith("every 6 hours, at ") and "*" not in summary
    assert description  # Airflow's own wording of the cron expression stays as the tooltip
