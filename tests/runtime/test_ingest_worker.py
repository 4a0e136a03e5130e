"""A large run's ingest in a worker process (``runtime/ingest_worker.py``): the same writes, counts, cursor,
results and errors as in one process, and a worker that never outlives its run."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import psutil
import psycopg
import pytest

from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.store import connections as repo
from hissuno_airflow.store.ingest import StreamIngest
from tests.fixtures.processes import ended

FORKED = "ingest continues in worker process"


def _n(store, sql, *args):
    with store.connection() as c:
        return c.execute(sql, args).fetchone()["n"]


@pytest.fixture
def worker_after(monkeypatch, caplog):
    """Runs hand their ingest to a worker after 10 records; the fixture says whether one was started."""
    monkeypatch.setenv("HISSUNO_INGEST_WORKER_AFTER", "10")
    caplog.set_level(logging.DEBUG, logger="hissuno_airflow.runtime.ingest_worker")

    def forked() -> int:
        return len(_worker_pids(caplog))

    return forked


def _worker_pids(caplog) -> list[int]:
    return [int(r.args[0]) for r in caplog.records if FORKED in r.getMessage()]


@pytest.fixture
def no_children(caplog):
    """The workers the test's runs started that still exist (running, or zombies their run did not reap)."""
    def left() -> list[int]:
        return [pid for pid in _worker_pids(caplog) if psutil.pid_exists(pid)]

    return left


def test_a_run_in_a_worker_writes_counts_and_moves_the_cursor_as_in_one_process(store, sample_connection,
                                                                                  worker_after, no_children):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 120})
    events: list[tuple[str, dict[str, int]]] = []
    r1 = run_stream_sync(cid, "sessions", store=store, on_progress=lambda e, c: events.append((e.type, dict(c))))
    assert worker_after() == 1, "the run handed its ingest to a worker"
    assert r1.status == "success", r1.error
    assert r1.counts == {"found": 120, "synced": 120, "skipped": 0, "failed": 0, "deleted": 0}
    assert _n(store, "SELECT count(*) n FROM sessions") == 120
    assert _n(store, "SELECT count(*) n FROM integration_synced_records WHERE hissuno_kind = 'sessions'") == 120
    # Enrichment ran in the worker: every session has its vector, nothing is left pending.
    assert _n(store, "SELECT count(*) n FROM embeddings WHERE entity_type = 'session'") == 120
    assert _n(store, "SELECT count(*) n FROM enrich_pending") == 0
    # The counts stored with the run are the final ones, and the cursor is the newest record's time.
    with store.connection() as c:
        run = c.execute("SELECT counts FROM integration_sync_runs WHERE id = %s", (r1.run_id,)).fetchone()
    assert {k: run["counts"][k] for k in r1.counts} == r1.counts
    assert r1.cursor_after is not None and repo.get_stream(store, cid, "sessions").last_sync_at == r1.cursor_after
    # Live progress reached the caller from the worker, its counts growing.
    assert events and events[-1][1]["found"] > 10
    assert no_children() == []

    r2 = run_stream_sync(cid, "sessions", SyncPlan.full(), store=store)  # every record again, all unchanged
    assert worker_after() == 2
    assert r2.status == "success" and r2.counts["synced"] == 0 and r2.counts["skipped"] == 120, r2.counts
    assert _n(store, "SELECT count(*) n FROM sessions") == 120


def test_results_and_synced_ids_are_answered_by_the_worker(store, sample_connection, worker_after):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 5})
    seen: dict[str, object] = {}
    now = datetime(2026, 3, 1, tzinfo=UTC)

    def handler(ctx):
        results = [ctx.ingest.session(external_id=f"s{i}", source="test", name=f"session {i}",
                                      updated_at=now) for i in range(40)]
        results.append(ctx.ingest.session(external_id="bad", source=""))  # invalid: min length 1
        seen["actions"] = [r.action for r in results]
        seen["ids"] = [r.id for r in results]
        seen["error"] = results[-1].error
        seen["is_synced"] = (ctx.is_synced("s35"), ctx.is_synced("nope"))
        seen["synced_ids"] = ctx.get_synced_ids()

    r = run_stream_sync(cid, "sessions", SyncPlan(handler=handler), store=store)
    assert worker_after() == 1
    assert r.status == "success", r.error
    assert seen["actions"] == ["created"] * 40 + ["failed"]
    with store.connection() as c:
        ids = {row["external_id"]: row["id"] for row in c.execute(
            "SELECT external_id, hissuno_id::text AS id FROM integration_synced_records")}
    assert seen["ids"][:40] == [ids[f"s{i}"] for i in range(40)]  # the entity ids the worker wrote
    assert "source" in str(seen["error"])
    # Asked before the worker's next flush: the worker's map knows the buffered records too.
    assert seen["is_synced"] == (True, False)
    assert seen["synced_ids"] == {f"s{i}" for i in range(40)}

    r = run_stream_sync(cid, "sessions", SyncPlan(handler=handler), store=store)
    assert seen["actions"] == ["unchanged"] * 40 + ["failed"]


def test_a_store_failure_in_the_worker_fails_the_run_retriably_and_stops_the_worker(store, sample_connection,
                                                                                     worker_after, monkeypatch,
                                                                                     no_children):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 200})
    monkeypatch.setenv("HISSUNO_STORE_RETRY_SECONDS", "0.5")
    flush = StreamIngest._flush_once

    def flaky(self):
        if os.getpid() != parent:  # the worker's batches: the store is gone
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return flush(self)

    parent = os.getpid()
    monkeypatch.setattr(StreamIngest, "_flush_once", flaky)
    r = run_stream_sync(cid, "sessions", store=store)
    assert worker_after() == 1
    assert r.status == "error" and r.error_code == "store_unavailable" and r.retriable, (r.status, r.error)
    assert r.cursor_after is None and repo.get_stream(store, cid, "sessions").last_sync_at is None
    assert no_children() == []
    # The retry, with the store back, completes every record exactly once.
    monkeypatch.setattr(StreamIngest, "_flush_once", flush)
    r = run_stream_sync(cid, "sessions", store=store)
    assert r.status == "success" and r.counts["found"] == 200, r.error
    assert _n(store, "SELECT count(*) n FROM sessions") == 200
    assert _n(store, "SELECT count(DISTINCT external_id) n FROM integration_synced_records"
                     " WHERE hissuno_kind = 'sessions'") == 200


def test_a_failed_worker_stops_the_plugin_at_its_next_calls(store, sample_connection, worker_after, monkeypatch,
                                                            no_children):
    """The plugin learns of the worker's failure while it fetches, not after fetching everything."""
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 5})
    monkeypatch.setenv("HISSUNO_STORE_RETRY_SECONDS", "0")
    parent = os.getpid()
    flush = StreamIngest._flush_once

    def down(self):
        if os.getpid() != parent:
            raise psycopg.OperationalError("the database system is shutting down")
        return flush(self)

    monkeypatch.setattr(StreamIngest, "_flush_once", down)
    sent = [0]

    def handler(ctx):
        for i in range(5000):  # a provider that answers a record every half millisecond
            time.sleep(0.0005)
            ctx.ingest.session(external_id=f"s{i}", source="test", name=f"session {i} " + "x" * 200)
            sent[0] += 1

    r = run_stream_sync(cid, "sessions", SyncPlan(handler=handler), store=store)
    assert worker_after() == 1
    assert r.status == "error" and r.error_code == "store_unavailable" and r.retriable, (r.status, r.error)
    assert 500 < sent[0] < 2500, f"the plugin went on for {sent[0]} records after the worker's first batch failed"
    assert no_children() == []


SECRET = "s3cr3t-token-value-0042"


@pytest.fixture
def secret_stream(store, sample_connection, monkeypatch):
    """A 60-session stream of a connection whose credential is ``SECRET``; its id."""
    from hissuno_airflow.runtime import services as services_module

    enable_stream(store, sample_connection.id, "sessions", filters={"size": 60})
    monkeypatch.setattr(services_module, "secret_values", lambda *a, **k: [SECRET])
    return sample_connection.id


def test_a_bug_in_the_worker_ends_the_run_with_its_error_redacted_and_keeps_what_came_before(
        store, secret_stream, worker_after, monkeypatch, no_children):
    cid, secret = secret_stream, SECRET
    session = StreamIngest.session
    done = [0]

    def broken(self, record=None, /, **fields):
        done[0] += 1
        if done[0] == 30:  # in the worker (the run forks after 10 calls): a bug quoting a credential
            assert os.getpid() != parent
            raise KeyError(f"mapper exploded near {self.secrets[0]}")
        return session(self, record, **fields)

    parent = os.getpid()
    monkeypatch.setattr(StreamIngest, "session", broken)
    r = run_stream_sync(cid, "sessions", store=store)
    assert worker_after() == 1
    assert r.status == "error" and r.error_code == "plugin_error", (r.status, r.error_code, r.error)
    # As the run reports a failure in one process: the exception's name and text, the credential masked.
    assert r.error.startswith("KeyError: ") and "mapper exploded" in r.error and secret not in r.error, r.error
    # The 29 sessions before the failing one were flushed by the worker's close, as in one process; none after.
    assert _n(store, "SELECT count(*) n FROM sessions") == 29
    assert r.cursor_after is None
    assert no_children() == []


def test_the_workers_log_records_are_written_by_its_run_redacted(store, secret_stream, worker_after,
                                                                  monkeypatch, caplog, no_children):
    # Under Airflow the run's handlers write the task's log; the worker must not write that channel itself.
    cid, secret = secret_stream, SECRET
    session = StreamIngest.session
    done = [0]

    def chatty(self, record=None, /, **fields):
        done[0] += 1
        if done[0] in (20, 40):  # in the worker: a warning quoting a credential, and one with a traceback
            try:
                raise ValueError("blip")
            except ValueError:
                logging.getLogger("hissuno_airflow.store.transient").warning(
                    "worker %d says %s", os.getpid(), self.secrets[0], exc_info=done[0] == 40)
        return session(self, record, **fields)

    monkeypatch.setattr(StreamIngest, "session", chatty)
    r = run_stream_sync(cid, "sessions", store=store)
    assert r.status == "success" and worker_after() == 1
    said = [rec for rec in caplog.records if "says" in rec.getMessage()]
    assert len(said) == 2, [rec.getMessage() for rec in caplog.records]
    worker = _worker_pids(caplog)[0]
    for rec in said:
        assert rec.process == os.getpid() and rec.levelno == logging.WARNING, (rec.process, rec.levelno)
        assert rec.name == "hissuno_airflow.store.transient"
        assert f"worker {worker} says" in rec.getMessage() and secret not in rec.getMessage()
    assert "ValueError: blip" in said[1].getMessage() and "Traceback" in said[1].getMessage()
    assert no_children() == []


def test_a_killed_run_takes_its_worker_with_it(store, sample_connection, database_url, tmp_path):
    """SIGKILL the run's process while its worker works: the worker dies at once and writes nothing more."""
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 6000})
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        from hissuno_airflow.runtime.sync import run_stream_sync
        from hissuno_airflow.store.db import get_store
        run_stream_sync({cid!r}, "sessions", store=get_store({database_url!r}))
    """))
    env = dict(os.environ, HISSUNO_INGEST_WORKER_AFTER="50", PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.monotonic() + 120
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline and not workers:
            workers = psutil.Process(proc.pid).children()
            time.sleep(0.05)
        assert workers, "the run started an ingest worker"
        while time.monotonic() < deadline and _n(store, "SELECT count(*) n FROM sessions") < 600:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert all(ended(w, 5.0) for w in workers), "the worker outlived its run"
        written = _n(store, "SELECT count(*) n FROM sessions")
        time.sleep(2)
        assert _n(store, "SELECT count(*) n FROM sessions") == written, "nothing is written after the kill"
        assert 600 <= written < 6000
        # Whole batches only: each session came with its synced record in one transaction.
        assert _n(store, "SELECT count(*) n FROM integration_synced_records WHERE hissuno_kind = 'sessions'") \
            == written
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_worker_busy_when_its_run_is_killed_dies_before_it_writes(store, sample_connection, database_url,
                                                                      tmp_path):
    """The worker is inside a batch write (held for seconds here) when the run's process is SIGKILLed: the
    kernel ends it there (``PR_SET_PDEATHSIG``), so the batch it held is never written."""
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 600})
    marker = tmp_path / "writing"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import os, pathlib, time
        from hissuno_airflow.runtime.sync import run_stream_sync
        from hissuno_airflow.store.db import get_store
        from hissuno_airflow.store.ingest import StreamIngest

        parent, write = os.getpid(), StreamIngest._flush_once

        def slow(self):
            if os.getpid() != parent:
                pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))
                time.sleep(4)
            return write(self)

        StreamIngest._flush_once = slow
        run_stream_sync({cid!r}, "sessions", store=get_store({database_url!r}))
    """))
    env = dict(os.environ, HISSUNO_INGEST_WORKER_AFTER="20", PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not marker.exists():
            time.sleep(0.02)
        assert marker.exists(), "the worker began a batch"
        worker = psutil.Process(int(marker.read_text()))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert ended(worker, 1.0), "the worker died within a second, not after its 4 s write"
        time.sleep(4)
        assert _n(store, "SELECT count(*) n FROM sessions") == 0, "the held batch was never written"
    finally:
        if proc.poll() is None:
            proc.kill()
