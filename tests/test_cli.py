"""The ``hissuno`` command end to end, as a user runs it (subprocesses against the test store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def cli(store, database_url, tmp_path):
    env = {**os.environ, "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db"}

    def run(*args, ok=True):
        proc = subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    return run


def _count(store, table):
    with store.connection() as c:
        return c.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


def test_plugins_json_lists_the_registry(cli):
    data = json.loads(cli("plugins", "--json").stdout)
    sample = next(p for p in data if p["id"] == "sample")
    assert sample["auth"]["type"] == "api_key"
    assert {s["key"] for s in sample["streams"]} == {"sessions", "contacts", "companies", "issues", "knowledge"}
    assert all("sync" not in s and "test" not in json.dumps(sample["auth"]) for s in sample["streams"])


def test_connect_enable_sync_then_nothing_then_exactly_k(cli, store):
    conn = json.loads(cli("connect", "sample", "--set", "workspace=clitest", "--set",
                          "epoch=2026-02-01T00:00:00+00:00", "--set", "every_seconds=900", "--json").stdout)
    cid = conn["connection_id"]
    again = cli("connect", "sample", "--set", "workspace=clitest", "--set", "every_seconds=60", ok=False)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"already connected as {cid!r} (Sample workspace clitest)" in again.stderr
    assert f"--update {cid}" in again.stderr
    again = json.loads(cli("connect", "sample", "--set", "workspace=clitest", "--set",
                           "epoch=2026-02-01T00:00:00+00:00", "--set", "every_seconds=900", "--update", cid,
                           "--json").stdout)
    assert again["connection_id"] == cid and again["created"] is False
    listed = json.loads(cli("connections", "--json").stdout)
    assert [c["id"] for c in listed] == [cid] and listed[0]["account_label"] == "Sample workspace clitest"
    assert "credentials" not in json.dumps(listed) and "epoch" not in json.dumps(listed)

    cli("enable", cid, "sessions", "--filters", '{"size": 25}')
    first = json.loads(cli("sync", cid, "sessions", "--json").stdout)
    assert first["status"] == "success" and first["counts"]["failed"] == 0
    assert _count(store, "sessions") == 25
    assert _count(store, "session_messages") >= 100
    assert _count(store, "contacts") > 0 and _count(store, "companies") > 0

    with store.connection() as c:
        stamp = c.execute("SELECT max(updated_at) t FROM sessions").fetchone()["t"]
    second = json.loads(cli("sync", cid, "sessions", "--json").stdout)
    assert second["counts"]["synced"] == 0 and _count(store, "sessions") == 25
    with store.connection() as c:
        assert c.execute("SELECT count(*) n FROM sessions WHERE updated_at > %s", (stamp,)).fetchone()["n"] == 0

    cli("sample", "touch", cid, "--ids", "conv-2", "conv-5", "conv-9", "conv-20")
    third = json.loads(cli("sync", cid, "sessions", "--json").stdout)
    with store.connection() as c:
        changed = c.execute("SELECT count(*) n FROM sessions WHERE updated_at > %s", (stamp,)).fetchone()["n"]
    assert changed == 4 and _count(store, "sessions") == 25
    assert third["cursor_after"] > second["cursor_after"]


def test_bad_input_names_the_field_and_exits_nonzero(cli):
    cid = json.loads(cli("connect", "sample", "--set", "workspace=bad", "--json").stdout)["connection_id"]
    proc = cli("enable", cid, "sessions", "--filters", '{"size": -3}', ok=False)
    assert proc.returncode == 2 and "filters.size" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("sync", cid, "nope", ok=False)
    assert proc.returncode == 2 and "has no stream 'nope'" in proc.stderr
    proc = cli("connect", "nosuch", ok=False)
    assert proc.returncode == 3 and "unknown plugin 'nosuch'" in proc.stderr  # not found
    proc = cli("enable", cid, "knowledge:help-centre", ok=False)
    assert proc.returncode == 2
    assert "'help-centre' is not an instance of 'knowledge' on this connection; expected one of help-center" in proc.stderr
    cli("enable", cid, "knowledge:help-center")
    cli("enable", cid, "sessions")
    proc = cli("sync", cid, "sessions", "--since", "2026-01-02", "--until", "2026-01-01", ok=False)
    assert proc.returncode == 2 and "until: expected a time after the window start" in proc.stderr
    proc = cli("search", "printer", "--limit", "-1", ok=False)
    assert proc.returncode == 2 and "limit: expected 1 to 100" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_sync_exits_nonzero(cli):
    cid = json.loads(cli("connect", "sample", "--set", "workspace=failing", "--json").stdout)["connection_id"]
    cli("enable", cid, "sessions", "--filters", '{"size": 10, "fail_after": 2}')
    proc = cli("sync", cid, "sessions", "--json", ok=False)
    assert proc.returncode == 4  # the provider's 503 is retriable: a caller may try again
    assert json.loads(proc.stdout)["status"] == "error"


def test_unknown_credential_field_is_refused_naming_it(cli, store):
    proc = cli("connect", "sample", "--set", "workspce=typo", ok=False)
    assert proc.returncode == 2
    assert "credentials.workspce: unknown field; expected epoch, every_seconds, workspace" in proc.stderr
    assert _count(store, "integration_connections") == 0


def test_projects_scope_connections_and_a_bad_project_is_named(cli, store):
    pid = json.loads(cli("projects", "--add", "Research", "--json").stdout)["id"]
    listed = {p["id"]: p for p in json.loads(cli("projects", "--json").stdout)}
    assert listed[pid]["name"] == "Research" and listed[pid]["default"] is False
    assert any(p["default"] for p in listed.values())
    # The same provider account in two projects is two connections.
    here = json.loads(cli("connect", "sample", "--set", "workspace=shared", "--json").stdout)["connection_id"]
    there = json.loads(cli("connect", "sample", "--set", "workspace=shared", "--project", pid, "--json").stdout)
    assert there["created"] is True and there["connection_id"] != here
    scoped = json.loads(cli("connections", "--project", pid, "--json").stdout)
    assert [c["id"] for c in scoped] == [there["connection_id"]]

    for bad, expected, code in (("nope", "project_id: expected a project id (a UUID); got 'nope'", 2),
                                ("00000000-0000-0000-0000-00000000dead", "project_id: no project", 3)):
        proc = cli("connect", "sample", "--set", "workspace=other", "--project", bad, ok=False)
        assert proc.returncode == code and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = cli("connections", "--project", "nope", ok=False)
    assert proc.returncode == 2 and "--project: expected a project id" in proc.stderr
    assert cli("projects", "--add", "  ", ok=False).returncode == 2
    assert _count(store, "integration_connections") == 2


def test_disconnect_forgets_the_connection_but_keeps_ingested_data(cli, store):
    cid = json.loads(cli("connect", "sample", "--set", "workspace=gone", "--json").stdout)["connection_id"]
    cli("enable", cid, "sessions", "--filters", '{"size": 5}')
    cli("sync", cid, "sessions")
    assert _count(store, "sessions") == 5
    assert json.loads(cli("disconnect", cid, "--json").stdout) == {"disconnected": cid}
    assert json.loads(cli("connections", "--json").stdout) == []
    assert _count(store, "integration_streams") == 0 and _count(store, "integration_synced_records") == 0
    assert _count(store, "sessions") == 5
    proc = cli("disconnect", cid, ok=False)
    assert proc.returncode == 3 and f"connection {cid!r} not found" in proc.stderr


def test_runs_show_the_history_newest_first_with_backfill_windows(cli):
    cid = json.loads(cli("connect", "sample", "--set", "workspace=history", "--json").stdout)["connection_id"]
    cli("enable", cid, "sessions", "--filters", '{"size": 5}')
    cli("sync", cid, "sessions")
    cli("sync", cid, "sessions", "--since", "2026-01-01", "--until", "2026-01-02")
    cli("enable", cid, "sessions", "--filters", '{"size": 5, "fail_after": 1}')
    cli("sync", cid, "sessions", "--full", ok=False)
    runs = json.loads(cli("runs", cid, "--json").stdout)
    assert [(r["triggered_by"], r["status"]) for r in runs] == [
        ("manual", "error"), ("backfill", "success"), ("manual", "success")]
    assert runs[0]["error_message"].startswith("sample GET /conversations: 503")
    assert (runs[1]["window_start"], runs[1]["window_end"]) == ("2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")
    assert runs[2]["counts"]["synced"] == 5
    assert [r["status"] for r in json.loads(cli("runs", cid, "sessions", "--status", "error", "--json").stdout)] == ["error"]
    assert len(json.loads(cli("runs", cid, "--limit", "1", "--json").stdout)) == 1
    text = cli("runs", cid).stdout
    assert "backfill success" in " ".join(text.split())
    assert "2026-01-01 00:00:00 UTC → 2026-01-02 00:00:00 UTC" in text


def test_unknown_filter_and_settings_keys_are_refused_naming_them(cli, store):
    cid = json.loads(cli("connect", "sample", "--set", "workspace=keys", "--json").stdout)["connection_id"]
    proc = cli("enable", cid, "sessions", "--filters", '{"bogus": 1}', ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "filters.bogus: unknown field; expected fail_after, from_date, size" in proc.stderr
    proc = cli("enable", cid, "knowledge:help-center", "--settings", '{"origin": "x", "orign": "y"}', ok=False)
    assert proc.returncode == 2 and "settings.orign: unknown field; expected origin" in proc.stderr
    proc = cli("enable", cid, "sessions", "--settings", '{"x": 1}', ok=False)
    assert proc.returncode == 2 and "settings.x: unknown field; stream 'sessions' takes no settings" in proc.stderr
    assert _count(store, "integration_streams") == 0
    cli("enable", cid, "sessions", "--filters", '{"size": 3}')
    proc = cli("enable", cid, "sessions", "--filters", '{"size": 4, "bogus": 1}', ok=False)
    assert proc.returncode == 2
    assert json.loads(cli("streams", cid, "--json").stdout)[0]["rows"][0]["filter_config"]["size"] == 3


def test_connect_where_airflow_is_installed_but_not_initialised(cli, store, tmp_path, monkeypatch):
    """AIRFLOW_HOME names an Airflow whose metadata database was never migrated: ``auto`` keeps the
    credentials in the store and says so; an explicit ``airflow`` backend names the fix and writes nothing."""
    from hissuno_airflow.store import connections as repo

    fresh = tmp_path / "fresh-airflow"
    fresh.mkdir()
    monkeypatch.setenv("AIRFLOW_HOME", str(fresh))
    monkeypatch.setenv("HISSUNO_CREDENTIALS_BACKEND", "auto")
    env = {**os.environ, "HISSUNO_DATABASE_URL": os.environ["HISSUNO_DATABASE_URL"], "HISSUNO_HOME": str(tmp_path)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env,
                              capture_output=True, text=True, timeout=180)

    ok = run("connect", "sample", "--set", "workspace=fresh-af")
    assert ok.returncode == 0, ok.stderr
    cid = ok.stdout.strip()
    assert repo.get_connection(store, cid).credentials_backend == "db"
    assert "airflow db migrate" in ok.stderr and "encrypted in the hissuno store" in ok.stderr
    env["HISSUNO_CREDENTIALS_BACKEND"] = "airflow"
    refused = run("connect", "sample", "--set", "workspace=fresh-af-2")
    assert refused.returncode != 0
    assert "airflow db migrate" in refused.stderr and "HISSUNO_CREDENTIALS_BACKEND=db" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _count(store, "integration_connections") == 1
