"""Task logs a person can read: the window in words, progress with a rate, final counts and the cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hissuno_airflow.airflow_host.credentials import AirflowCredentialStore
from hissuno_airflow.dag_factory import build_dag, load_manifest
from hissuno_airflow.operators import sync as sync_operator
from hissuno_airflow.runtime.logging import final_line, progress_line, window_line

from ..fixtures.airflow import run_dag
from .conftest import enable, make_connection


def test_a_task_log_reads_in_plain_words(store, probe, airflow_clean, capfd, caplog, monkeypatch):
    monkeypatch.setattr(sync_operator, "_PROGRESS_EVERY_S", 0.0)  # a progress line per event
    # Airflow warns about a short secret once per process: forget an earlier test's warning.
    from airflow._shared.secrets_masker.secrets_masker import SecretsMasker as CoreMasker
    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker as SdkMasker

    for masker in (CoreMasker, SdkMasker):
        monkeypatch.setattr(masker, "_has_warned_short_secret", False)
    now = datetime.now(UTC).replace(microsecond=0)
    conn = make_connection(store, "afprobe", backend="airflow")
    AirflowCredentialStore(store).save(conn, {"api_key": probe.GOOD_KEY, "workspace": "w"})
    enable(store, conn, "people", "1h")
    probe.write_records([("a", now - timedelta(hours=3)), ("b", now - timedelta(hours=2))])
    (row,) = load_manifest()
    dag = build_dag(row)

    assert run_dag(dag).state == "success"
    first = "".join(capfd.readouterr())
    assert ("Syncing People from Airflow Probe (afprobe acct-1): everything, up to now (incremental sync); "
            "no earlier successful run, so everything") in first
    assert "Progress: 0 found, 1 synced, 0 skipped, 0 failed; " in first and " records/s, " in first
    cursor = (now - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"0 found, 2 synced, 0 skipped, 0 failed. New cursor: {cursor}" in first

    probe.write_records([("c", now - timedelta(hours=1))])
    assert run_dag(dag).state == "success"
    second = "".join(capfd.readouterr())
    assert (f"records changed since {cursor}, up to now (incremental sync); "
            "the cursor the last successful run left in Airflow") in second
    # Airflow's own warnings reach pytest's log capture rather than the task's stdout.
    for out in (first, second, caplog.text):
        assert "XCom" not in out and "store fallback" not in out
        # Nothing of ours makes Airflow warn about short secrets. (Its warning about '_' in connection
        # types stays: CONTRACT.md fixes the types as hissuno_<plugin>.)
        assert "Skipping masking for a secret" not in out


def test_log_line_wording():
    since, until = datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    assert window_line("Tickets from Zendesk (acme.zendesk.com)", mode="backfill", since=since, until=until) == (
        "Backfilling Tickets from Zendesk (acme.zendesk.com): records changed from 2026-03-01 00:00:00 UTC "
        "until 2026-03-02 00:00:00 UTC (backfill: the live cursor is neither read nor moved)")
    assert window_line("T", mode="full", since=None, until=None, reason="a full refresh was requested") == (
        "Syncing T: everything, up to now (full sync); a full refresh was requested")
    counts = {"found": 2000, "synced": 1733, "skipped": 0, "failed": 1}
    assert progress_line(counts, 10.0, current=1734, total=2000) == (
        "Progress: 2,000 found, 1,733 synced, 0 skipped, 1 failed (1,734 of 2,000); 173.4 records/s, 10 s elapsed")
    assert final_line("success", counts, 125, cursor_before=since, cursor_after=until, moves_cursor=True) == (
        "Finished in 2 min 5 s: 2,000 found, 1,733 synced, 0 skipped, 1 failed. "
        "New cursor: 2026-03-02 00:00:00 UTC (the next run syncs changes after it).")
    assert final_line("error", counts, 1, cursor_before=since, cursor_after=None, moves_cursor=True).endswith(
        "The cursor did not move.")
