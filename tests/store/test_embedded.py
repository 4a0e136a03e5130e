"""The embedded PostgreSQL is started on demand once and shared by every process (a lock, not a second server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from hissuno_airflow.store import db

CODE = (
    "import os, sys; os.environ['HISSUNO_HOME'] = sys.argv[1]; os.environ.pop('HISSUNO_DATABASE_URL', None);"
    "from hissuno_airflow.store.db import embedded_url; print(embedded_url())"
)


def test_concurrent_processes_share_one_server(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", CODE, str(home)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
        urls = {o[0].strip().splitlines()[-1] for o in outs}
        assert len(urls) == 1
        url = urls.pop()
        pid = (home / "pgdata" / "postmaster.pid").read_text().splitlines()[0]
        with psycopg.connect(url) as c:
            assert c.execute("SELECT pg_backend_pid() > 0").fetchone()[0]
            vector = c.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'").fetchone()[0]
        assert vector == 1
        # A later process finds the running server instead of starting another.
        again = subprocess.run([sys.executable, "-c", CODE, str(home)], capture_output=True, text=True, timeout=60)
        assert again.stdout.strip().splitlines()[-1] == url
        assert (home / "pgdata" / "postmaster.pid").read_text().splitlines()[0] == pid
        # `hissuno db stop` stops it (and says so); a second stop finds nothing running.
        env = {k: v for k, v in os.environ.items() if k != "HISSUNO_DATABASE_URL"} | {"HISSUNO_HOME": str(home)}
        stop = [sys.executable, "-m", "hissuno_airflow.cli", "db", "stop", "--json"]
        first = subprocess.run(stop, env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0 and json.loads(first.stdout)["stopped"] is True, first.stderr
        assert not (home / "pgdata" / "postmaster.pid").exists()
        second = subprocess.run(stop, env=env, capture_output=True, text=True, timeout=60)
        assert json.loads(second.stdout)["stopped"] is False
    finally:
        db.stop_embedded(home)
    assert not (home / "pgdata" / "postmaster.pid").exists()
