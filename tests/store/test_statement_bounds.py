"""Statements on the store's connections are bounded and die with their client (real PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from hissuno_airflow.store.db import Store

MARK = "hissuno-killed-client-probe"


def _backends(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                         (f"%{MARK}%",)).fetchall()
    return [r[0] for r in rows]


def test_a_statement_running_past_its_bound_is_cancelled(database_url, monkeypatch):
    monkeypatch.setenv("HISSUNO_STATEMENT_TIMEOUT_S", "1")
    store = Store(database_url)
    try:
        t = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"), store.connection() as c:
            c.execute("SELECT pg_sleep(8)")
        assert time.monotonic() - t < 5
        with store.connection() as c:  # the connection stays usable for the next statement
            assert c.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        store.close()


def test_a_bad_bound_is_named(monkeypatch):
    monkeypatch.setenv("HISSUNO_STATEMENT_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="HISSUNO_STATEMENT_TIMEOUT_S: expected a whole number"):
        Store("postgresql://127.0.0.1:1/none")


def test_a_killed_clients_statement_ends_with_it(database_url):
    # A client killed mid-statement (kill -9: no goodbye) must not leave its statement running for
    # minutes (the issue saw 9 min 41 s): the backend checks its client while the statement runs.
    code = ("import sys\nfrom hissuno_airflow.store.db import Store\n"
            "s = Store(sys.argv[1])\nwith s.connection() as c:\n"
            f"    c.execute('SELECT pg_sleep(120) /* {MARK} */')\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", code, database_url], env=env)
    try:
        deadline = time.monotonic() + 30
        while not _backends(database_url):
            assert proc.poll() is None and time.monotonic() < deadline, "the probe's statement never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while _backends(database_url):
            assert time.monotonic() - killed < 15, "the killed client's statement is still running"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
