"""Exactly once under faults (issue 9): store restarts, killed backends and processes, a record seen
twice, two writers of one stream. Every test runs against a real PostgreSQL and the sample plugin."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hissuno_airflow import cli, registry
from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthResult,
    Icon,
    Stream,
    SyncAlreadyRunning,
    define_plugin,
)
from hissuno_airflow.plugins.sample import data
from hissuno_airflow.plugins.sample import plugin as sample_plugin
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.store import connections as repo
from hissuno_airflow.store import runs
from hissuno_airflow.store.ingest import StreamIngest

ROOT = Path(__file__).resolve().parents[2]


def _n(store: Any, sql: str, *args: Any) -> int:
    with store.connection() as c:
        return int(c.execute(sql, args).fetchone()["n"])


def _at_record(monkeypatch: pytest.MonkeyPatch, n: int, action: Any) -> None:
    """Run ``action`` once, inside the sync, when the sample plugin reaches its ``n``-th conversation."""
    real, seen = sample_plugin._customer, [0]

    def customer(ctx: Any, person: Any, updated_at: str) -> None:
        seen[0] += 1
        if seen[0] == n:
            action()
        real(ctx, person, updated_at)

    monkeypatch.setattr(sample_plugin, "_customer", customer)


def _terminate_other_backends(url: str) -> int:
    """Kill every other connection to the database, as a PostgreSQL restart or a failover does."""
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                         " AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchall()
    return len(rows)


# -- (a) one entity per external id, whoever writes ------------------------------------------------


def test_two_writers_of_one_stream_make_one_entity_per_external_id(store, sample_connection):
    """Two ingests of one stream (a run that lost its lease and its successor, or a webhook racing a sync)
    both believe the records are new: the database still holds one entity per external id."""
    cid = sample_connection.id
    enable_stream(store, cid, "sessions")

    def ingest() -> StreamIngest:
        i = StreamIngest(store, project_id=sample_connection.project_id, connection_id=cid, stream_id="sessions")
        i.get_synced_ids()  # each loads its map before the other wrote anything
        return i

    a, b = ingest(), ingest()
    for n, ing in enumerate((a, b)):
        for k in range(5):
            ing.session(external_id=f"s{k}", source="t", name=f"v{n}",
                        messages=[{"sender_type": "user", "content": f"hello {n}.{j}"} for j in range(n + 2)])
            ing.issue(external_id=f"i{k}", name=f"issue v{n}", type="bug")
            ing.knowledge(external_id=f"k{k}", type="docs_portal", name="doc", content=f"# Doc\n\nversion {n}")
    a.flush()
    b.flush()
    assert _n(store, "SELECT count(*) n FROM sessions") == 5
    assert _n(store, "SELECT count(*) n FROM issues") == 5
    assert _n(store, "SELECT count(*) n FROM knowledge_sources") == 5
    # The later writer's version won, once: its two messages, not both writers' five.
    assert _n(store, "SELECT count(*) n FROM session_messages") == 5 * 3
    assert _n(store, "SELECT count(*) n FROM sessions WHERE name = 'v1'") == 5
    assert _n(store, "SELECT count(*) n FROM knowledge_chunks c JOIN knowledge_sources s ON s.id = c.source_id"
                     " WHERE c.chunk_text LIKE '%%version 1%%'") == 5
    assert _n(store, "SELECT count(*) n FROM sessions s WHERE NOT EXISTS (SELECT 1 FROM integration_synced_records"
                     " r WHERE r.hissuno_id = s.id)") == 0


# -- 2. the same record twice in one run -------------------------------------------------------------


def _twice_sync(ctx: Any) -> None:
    for version, n_msgs in ((1, 3), (2, 2)):  # updated while the sync paged: fewer messages the second time
        ctx.ingest.session(
            external_id="dup", source="t", name=f"version {version}", updated_at=f"2026-01-0{version}T00:00:00Z",
            messages=[{"sender_type": "user", "content": f"v{version} m{j}"} for j in range(n_msgs)])
        ctx.ingest.issue(external_id="dup-issue", name=f"issue version {version}", type="bug",
                         updated_at=f"2026-01-0{version}T00:00:00Z")
        ctx.ingest.knowledge(external_id="dup-doc", type="docs_portal", name=f"doc {version}",
                             content=f"# Doc\n\nversion {version}", updated_at=f"2026-01-0{version}T00:00:00Z")


@pytest.fixture
def twice_plugin(store):
    p = define_plugin(
        id="twice", name="Twice", description="returns one record twice", category="sessions", icon=Icon(),
        auth=ApiKeyAuth(fields=(), test=lambda c, x: AuthResult(external_account_id="a", account_label="A")),
        streams={"s": Stream(kind="sessions", label="S", sync=_twice_sync)},
    )
    registry.register(p)
    row, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001", plugin_id="twice",
                                    external_account_id="a", account_label="A", settings=None)
    enable_stream(store, row.id, "s")
    yield row.id
    registry.unregister("twice")


def test_the_same_record_twice_in_one_run_is_written_once_in_its_later_version(store, twice_plugin):
    r = run_stream_sync(twice_plugin, "s", store=store)
    assert r.status == "success", r.error
    assert _n(store, "SELECT count(*) n FROM sessions") == 1
    assert _n(store, "SELECT count(*) n FROM sessions WHERE name = 'version 2' AND message_count = 2") == 1
    with store.connection() as c:
        msgs = [m["content"] for m in c.execute("SELECT content FROM session_messages ORDER BY position")]
    assert msgs == ["v2 m0", "v2 m1"]
    assert _n(store, "SELECT count(*) n FROM issues WHERE name = 'issue version 2'") == 1
    assert _n(store, "SELECT count(*) n FROM issues") == 1
    assert _n(store, "SELECT count(*) n FROM knowledge_sources WHERE name = 'doc 2'") == 1
    assert _n(store, "SELECT count(*) n FROM knowledge_chunks WHERE chunk_text LIKE '%%version 1%%'") == 0
    assert _n(store, "SELECT count(*) n FROM ingest_errors") == 0


# -- 3. a store error is not a bad record ---------------------------------------------------------


@pytest.fixture
def contact_write_dies(store):
    """Arms a fault: the third contact write after arming has its backend terminated mid-statement (as a
    restart or failover does), once."""
    armed = []

    def arm() -> None:
        with store.connection() as c:
            c.execute("CREATE SEQUENCE i9_fault_seq")
            c.execute("CREATE FUNCTION i9_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                      " IF nextval('i9_fault_seq') = 3 THEN PERFORM pg_terminate_backend(pg_backend_pid());"
                      " END IF; RETURN NEW; END $$")
            c.execute("CREATE TRIGGER i9_fault BEFORE INSERT ON contacts FOR EACH ROW EXECUTE FUNCTION i9_fault()")
        armed.append(True)

    yield arm
    if armed:
        with store.connection() as c:
            c.execute("DROP TRIGGER i9_fault ON contacts")
            c.execute("DROP FUNCTION i9_fault()")
            c.execute("DROP SEQUENCE i9_fault_seq")


def test_a_store_error_mid_sync_fails_the_run_retriably_with_the_cursor_unmoved(
        store, sample_connection, monkeypatch, contact_write_dies):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 20})
    assert run_stream_sync(cid, "sessions", store=store).status == "success"
    cursor = repo.get_stream(store, cid, "sessions").last_sync_at
    data.touch(sample_connection.external_account_id, [f"conv-{i}" for i in range(10)])
    with store.connection() as c:
        c.execute("DELETE FROM contacts")  # the touched records write contacts again
    monkeypatch.setenv("HISSUNO_STORE_RETRY_SECONDS", "0")  # no retry in place: the blip outlasts it
    contact_write_dies()
    r = run_stream_sync(cid, "sessions", store=store)
    assert r.status == "error" and r.retriable and r.error_code == "store_unavailable", r
    assert _n(store, "SELECT count(*) n FROM ingest_errors") == 0
    stream = repo.get_stream(store, cid, "sessions")
    assert stream.last_sync_at == cursor and stream.last_sync_status == "error"
    with store.connection() as c:
        row = c.execute("SELECT status, counts FROM integration_sync_runs WHERE id = %s", (r.run_id,)).fetchone()
    assert row["status"] == "error" and row["counts"] == r.counts and r.counts["failed"] == 0
    monkeypatch.delenv("HISSUNO_STORE_RETRY_SECONDS")
    ok = run_stream_sync(cid, "sessions", store=store)
    assert ok.status == "success" and ok.counts["synced"] >= 10
    assert _n(store, "SELECT count(*) n FROM sessions WHERE custom_fields->>'sample_revision' = '1'") == 10


def test_a_store_blip_mid_sync_is_ridden_out_in_place(store, sample_connection, contact_write_dies):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 20})
    contact_write_dies()
    r = run_stream_sync(cid, "sessions", store=store)
    assert r.status == "success" and r.counts["synced"] == 20 and r.counts["failed"] == 0, r
    assert _n(store, "SELECT count(*) n FROM sessions") == 20
    assert _n(store, "SELECT count(*) n FROM ingest_errors") == 0
    assert _n(store, "SELECT nextval('i9_fault_seq') n") > 3  # the fault did fire


# -- 7. the CLI after a blip the run survived -------------------------------------------------------


def test_the_cli_prints_a_clean_result_after_a_store_blip(store, sample_connection, monkeypatch, capsys):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 30})
    killed = []
    _at_record(monkeypatch, 10, lambda: killed.append(_terminate_other_backends(store.url)))
    code = cli.main(["sync", cid, "sessions", "--json"])
    out, err = capsys.readouterr()
    assert killed and killed[0] >= 1
    assert "Traceback" not in err and "Traceback" not in out
    result = json.loads(out)
    assert code == 0 and result["status"] == "success", (result, err)
    with store.connection() as c:
        row = c.execute("SELECT status, counts FROM integration_sync_runs WHERE id = %s",
                        (result["run_id"],)).fetchone()
    assert row["status"] == result["status"] and row["counts"] == result["counts"]
    assert result["counts"]["synced"] == 30 == _n(store, "SELECT count(*) n FROM sessions")


# -- 6. a killed run is closed without a next run -----------------------------------------------------

_KILLED_SYNC = """
import sys
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store.ingest import StreamIngest
# A small batch, so several flushes commit before the kill.
orig = StreamIngest.__init__
def init(self, *a, **kw):
    kw["batch_size"] = 25
    orig(self, *a, **kw)
StreamIngest.__init__ = init
run_stream_sync(sys.argv[1], "sessions")
"""


def test_a_killed_run_is_closed_as_failed_without_a_next_run(store, sample_connection, tmp_path):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 2000})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HISSUNO_RUN_LEASE_SECONDS": "2",
           "HISSUNO_DATABASE_URL": store.url}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SYNC, cid], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _n(
                store, "SELECT coalesce(max((counts->>'synced')::int), 0) n FROM integration_sync_runs") < 60:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert repo.get_stream(store, cid, "sessions").last_sync_status == "in_progress"
    time.sleep(2.5)  # the lease (2 s) lapses; nothing starts another run of the stream
    (run,) = runs.list_runs(store, cid)  # whoever looks closes it
    assert run["status"] == "error" and "abandoned" in run["error_message"]
    stream = repo.get_stream(store, cid, "sessions")
    assert stream.last_sync_status == "error" and stream.last_sync_at is None
    # Its counts are what it wrote: stored with the writes, not ahead of them.
    written = _n(store, "SELECT count(*) n FROM integration_synced_records WHERE hissuno_kind = 'sessions'")
    assert 0 < written < 2000
    assert run["counts"]["synced"] == written == _n(store, "SELECT count(*) n FROM sessions")


# -- 1. a store restart while a second sync starts ------------------------------------------------


@pytest.mark.slow
def test_a_store_restart_mid_sync_with_a_second_sync_leaves_exactly_one_entity_each(tmp_path, monkeypatch):
    """PostgreSQL restarts under a running sync (every connection and session lock gone) and a second sync
    of the stream starts meanwhile: exactly N sessions afterwards, also after a full resync."""
    from hissuno_airflow.store import db
    from hissuno_airflow.store.migrate import migrate
    from tests.fixtures.store import connect_sample

    # Not under tmp_path: concurrent pytest sessions of one user prune each other's numbered tmp dirs.
    home = Path(tempfile.mkdtemp(prefix="hissuno-restart-"))
    url = db.embedded_url(home)  # a cluster of its own: the session's shared one keeps running
    own = db.Store(url)
    try:
        migrate(url)
        monkeypatch.setenv("HISSUNO_HOME", str(tmp_path))
        conn = connect_sample(own, "restart", epoch="2026-01-01T00:00:00+00:00", every_seconds=600)
        size = 300
        enable_stream(own, conn.id, "sessions", filters={"size": size})
        second: dict[str, Any] = {}

        def restart_and_start_a_second_sync() -> None:
            db.stop_embedded(home)
            assert db.embedded_url(home) == url
            other = db.Store(url)  # the second sync's own process and pool, with fresh connections
            t = threading.Thread(target=lambda: second.update(result=_try_sync(other, conn.id)))
            t.start()
            t.join(120)
            other.close()

        _at_record(monkeypatch, 100, restart_and_start_a_second_sync)
        first = _try_sync(own, conn.id)
        monkeypatch.undo()
        assert _n(own, "SELECT count(*) n FROM sessions") == size
        assert _n(own, "SELECT count(*) n FROM ingest_errors") == 0
        assert isinstance(second.get("result"), SyncAlreadyRunning), second
        assert first.status == "success", first
        full = run_stream_sync(conn.id, "sessions", SyncPlan.full(), store=own)
        assert full.status == "success"
        assert _n(own, "SELECT count(*) n FROM sessions") == size
        assert _n(own, "SELECT count(*) n FROM integration_synced_records WHERE hissuno_kind = 'sessions'") == size
    finally:
        own.close()
        db.stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


def _try_sync(store: Any, cid: str) -> Any:
    try:
        return run_stream_sync(cid, "sessions", store=store)
    except Exception as exc:  # the caller asserts which
        return exc
