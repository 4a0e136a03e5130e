"""The sync runtime: cursor as a high-water mark, failure and cancellation, locking, validation."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthResult,
    CancelSignal,
    Field,
    Icon,
    InputError,
    Stream,
    SyncAlreadyRunning,
    define_plugin,
)
from hissuno_airflow.plugins.sample import data
from hissuno_airflow.runtime.credentials import credential_store
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.store import connections as repo


def _n(store, sql, *args):
    with store.connection() as c:
        return c.execute(sql, args).fetchone()["n"]


def _stream(store, cid, sid="sessions"):
    return repo.get_stream(store, cid, sid)


def test_first_sync_then_nothing_then_exactly_the_touched_records(store, sample_connection):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 40})
    r1 = run_stream_sync(cid, "sessions", store=store)
    assert r1.status == "success"
    # Counts are of the stream's own records: the contacts and companies it also upserts are not sessions.
    assert r1.counts == {"found": 40, "synced": 40, "skipped": 0, "failed": 0, "deleted": 0}
    assert _n(store, "SELECT count(*) n FROM sessions") == 40
    assert _n(store, "SELECT count(*) n FROM session_messages") >= 160
    assert _n(store, "SELECT count(*) n FROM contacts") > 0 and _n(store, "SELECT count(*) n FROM companies") > 0
    newest = max(datetime.fromisoformat(c["updated_at"]) for c in data.conversations(
        data.SampleSource(sample_connection.account_label.split()[-1], datetime(2026, 1, 1, tzinfo=UTC),
                          600), size=40, since=None, until=None))
    assert _stream(store, cid).last_sync_at == newest == r1.cursor_after

    with store.connection() as c:
        before = c.execute("SELECT max(updated_at) t FROM sessions").fetchone()["t"]
    r2 = run_stream_sync(cid, "sessions", store=store)
    assert r2.status == "success" and r2.counts["synced"] == 0
    assert _n(store, "SELECT count(*) n FROM sessions") == 40
    assert _n(store, "SELECT count(*) n FROM sessions WHERE updated_at > %s", before) == 0

    workspace = sample_connection.external_account_id
    touched = ["conv-3", "conv-11", "conv-27"]
    data.touch(workspace, touched)
    r3 = run_stream_sync(cid, "sessions", store=store)
    assert r3.status == "success" and r3.counts["synced"] == len(touched)
    with store.connection() as c:
        rows = c.execute(
            "SELECT r.external_id FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id"
            " WHERE s.updated_at > %s ORDER BY 1", (before,)).fetchall()
    assert sorted(r["external_id"] for r in rows) == sorted(touched)
    assert _n(store, "SELECT count(*) n FROM sessions") == 40
    assert r3.cursor_after > r2.cursor_after


def _outage_after(monkeypatch, n):
    """The sample provider goes down after ``n`` conversations were ingested: a failure mid-run, with
    records already written (``fail_after`` fails while listing, before anything is ingested)."""
    from hissuno_airflow.kit import ProviderUnavailable
    from hissuno_airflow.plugins.sample import plugin as sample_plugin

    real, seen = sample_plugin._customer, [0]

    def customer(ctx, person, updated_at):
        seen[0] += 1
        if seen[0] > n:
            raise ProviderUnavailable("sample GET /conversations/next: 503 Service Unavailable", provider="sample",
                                      status=503)
        real(ctx, person, updated_at)

    monkeypatch.setattr(sample_plugin, "_customer", customer)


def test_a_failing_run_keeps_the_cursor_and_the_next_run_recovers(store, sample_connection, monkeypatch):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 30})
    assert run_stream_sync(cid, "sessions", store=store).status == "success"
    cursor = _stream(store, cid).last_sync_at
    data.touch(sample_connection.external_account_id, [f"conv-{i}" for i in range(10)])
    with monkeypatch.context() as m:
        _outage_after(m, 4)
        failed = run_stream_sync(cid, "sessions", store=store)
    assert failed.status == "error" and "503" in failed.error and failed.retriable
    # Newer records were ingested before the outage, and they stay; the cursor does not move past them.
    assert failed.counts["synced"] >= 1, failed.counts
    with store.connection() as c:
        assert c.execute("SELECT count(*) n FROM sessions WHERE custom_fields->>'sample_revision' = '1'"
                         ).fetchone()["n"] == failed.counts["synced"]
    assert _stream(store, cid).last_sync_at == cursor
    assert _stream(store, cid).last_sync_status == "error"
    ok = run_stream_sync(cid, "sessions", store=store)
    assert ok.status == "success"
    with store.connection() as c:
        revs = c.execute("SELECT custom_fields->>'sample_revision' r, count(*) n FROM sessions GROUP BY 1").fetchall()
    assert {r["r"]: r["n"] for r in revs} == {"0": 20, "1": 10}
    assert _stream(store, cid).last_sync_at > cursor


def test_cancellation_stops_the_run_without_moving_the_cursor(store, sample_connection):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 50})
    sig = CancelSignal()

    def on_progress(ev, counts):
        if counts["synced"] == 5:  # cancelled after records were ingested, not while listing
            sig.cancel("user asked")

    r = run_stream_sync(cid, "sessions", store=store, signal=sig, on_progress=on_progress)
    assert r.status == "cancelled" and r.error == "user asked"
    assert r.counts["synced"] >= 5 and _n(store, "SELECT count(*) n FROM sessions") >= 5
    assert _stream(store, cid).last_sync_at is None
    assert _stream(store, cid).last_sync_status == "cancelled"


def test_backfill_window_is_exact_and_leaves_live_cursor(store, sample_connection):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 60})
    lo = datetime(2026, 1, 1, 2, tzinfo=UTC)
    hi = lo + timedelta(hours=2)
    r = run_stream_sync(cid, "sessions", SyncPlan.backfill(lo, hi), store=store)
    assert r.status == "success"
    with store.connection() as c:
        ts = [row["t"] for row in c.execute(
            "SELECT source_updated_at t FROM integration_synced_records WHERE hissuno_kind = 'sessions'").fetchall()]
    assert ts and all(lo <= t < hi for t in ts)
    src = data.SampleSource(sample_connection.external_account_id, datetime(2026, 1, 1, tzinfo=UTC), 600)
    expected = list(data.conversations(src, size=60, since=lo, until=hi))
    all_convs = list(data.conversations(src, size=60, since=None, until=None))
    assert 0 < len(expected) < len(all_convs)
    assert len(ts) == len(expected)
    assert _stream(store, cid).last_sync_at is None


def test_filters_are_validated_naming_the_field(store, sample_connection):
    with pytest.raises(InputError) as ei:
        enable_stream(store, sample_connection.id, "sessions", filters={"size": "lots"})
    assert ei.value.field == "filters.size"
    with pytest.raises(InputError) as ei:
        enable_stream(store, sample_connection.id, "sessions", frequency="2h")
    assert "frequency: expected one of manual, 1h, 6h, 24h; got '2h'" in str(ei.value)
    with pytest.raises(InputError):
        enable_stream(store, sample_connection.id, "knowledge")  # parameterized: instance required
    assert enable_stream(store, sample_connection.id, "knowledge:handbook").stream_id == "knowledge:handbook"


def test_one_run_per_stream_at_a_time(store, sample_connection):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 50})
    started, release = threading.Event(), threading.Event()

    def slow(ev, counts):
        started.set()
        release.wait(10)

    results = {}
    t = threading.Thread(target=lambda: results.setdefault(
        "a", run_stream_sync(cid, "sessions", store=store, on_progress=slow)))
    t.start()
    assert started.wait(10)
    with pytest.raises(SyncAlreadyRunning, match="already running") as ei:
        run_stream_sync(cid, "sessions", store=store)
    assert ei.value.retriable and ei.value.http_status == 409
    release.set()
    t.join(30)
    assert results["a"].status == "success"


SECRET = "sk_live_ABCDEF0123456789"


def _leaky_sync(ctx):
    ctx.progress("found", message=f"calling with {ctx.credentials['apiKey']}")
    ctx.logger.info(f"token is {ctx.credentials['apiKey']}")
    raise RuntimeError(f"provider said no to key {ctx.credentials['apiKey']}")


@pytest.fixture
def leaky_plugin():
    p = define_plugin(
        id="leaky", name="Leaky", description="d", category="sessions", icon=Icon(),
        auth=ApiKeyAuth(fields=(Field(id="apiKey", label="Key", secret=True),),
                        test=lambda c, x: AuthResult(external_account_id="a", account_label="A", credentials=c)),
        streams={"s": Stream(kind="sessions", label="S", sync=_leaky_sync)},
    )
    registry.register(p)
    yield p
    registry.unregister("leaky")


def test_secrets_never_reach_errors_progress_or_logs(store, leaky_plugin, caplog):
    row, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001", plugin_id="leaky",
                                    external_account_id="a", account_label="A", settings=None)
    credential_store(store, "db").save(row, {"apiKey": SECRET})
    with store.connection() as c:
        blob = c.execute("SELECT credentials_enc FROM integration_connections WHERE id = %s", (row.id,)).fetchone()
    assert SECRET.encode() not in bytes(blob["credentials_enc"])
    enable_stream(store, row.id, "s")
    events = []
    caplog.set_level("INFO")
    r = run_stream_sync(row.id, "s", store=store, on_progress=lambda e, c: events.append(e.model_dump_json()))
    assert r.status == "error"
    assert SECRET not in r.error and "***" in r.error
    assert events and all(SECRET not in e for e in events)
    assert SECRET not in caplog.text and "token is ***" in caplog.text
    with store.connection() as c:
        stored = c.execute("SELECT error_message FROM integration_sync_runs").fetchone()["error_message"]
    assert SECRET not in stored


def test_a_run_abandoned_by_a_dead_process_is_closed_by_the_next_run(store, sample_connection):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 5})
    with store.connection() as c:
        c.execute("INSERT INTO integration_sync_runs (connection_id, plugin_id, stream_id, triggered_by)"
                  " VALUES (%s, 'sample', 'sessions', 'cron')", (cid,))
        c.execute("UPDATE integration_streams SET last_sync_status = 'in_progress' WHERE connection_id = %s", (cid,))
    r = run_stream_sync(cid, "sessions", store=store)
    assert r.status == "success"
    with store.connection() as c:
        rows = c.execute("SELECT status, error_message FROM integration_sync_runs ORDER BY started_at").fetchall()
    assert [x["status"] for x in rows] == ["error", "success"]
    assert "abandoned" in rows[0]["error_message"]


def test_live_progress_is_stored_with_no_listener(store, sample_connection, monkeypatch):
    # Without an on_progress listener the events are only counted (nothing is built for each), but the
    # live counts still reach the run row for a page following the run from another process.
    from hissuno_airflow.runtime import sync as sync_mod

    monkeypatch.setattr(sync_mod, "PERSIST_EVERY_S", 0.0)
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 1})
    seen = []

    def handler(ctx):
        for n in range(3):
            ctx.progress("found", external_id=str(n))
            ctx.progress("skipped", f"not wanted {n}", external_id=str(n))
        with store.connection() as c:
            seen.append(c.execute("SELECT progress FROM integration_sync_runs WHERE connection_id = %s"
                                  " AND status = 'in_progress'", (cid,)).fetchone()["progress"])

    r = run_stream_sync(cid, "sessions", SyncPlan(handler=handler), store=store)
    assert r.status == "success" and (r.counts["found"], r.counts["skipped"]) == (3, 3)
    assert seen[0]["counts"]["found"] == 3 and seen[0]["counts"]["skipped"] == 3
