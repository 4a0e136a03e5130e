"""Exit codes of the real CLI (one per outcome the error tree names), and no secret in clear: CLI output
and every text/jsonb column of the store after connect, a webhook secret, a signed webhook and a sync."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from hissuno_airflow.cli import EXIT_CODES, exit_code
from hissuno_airflow.kit.errors import ProviderAuthError
from tests.fixtures.cli import standalone_env

WEBHOOK_SECRET = "whsec-scan-7f3a9c1e5b2d4086"
OTHER_SECRET = "whsec-scan-plugin-d41d8cd98f00"


@pytest.fixture
def cli(store, database_url, tmp_path):
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db"}

    def run(*args: str, code: int | None = 0, extra: dict[str, str] | None = None) -> Any:
        proc = subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env={**env, **(extra or {})},
                              capture_output=True, text=True, timeout=180)
        if code is not None:
            assert proc.returncode == code, (args, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        return proc

    run.env = env  # type: ignore[attr-defined]
    return run


def test_exit_codes_are_distinct_and_documented(cli, store) -> None:
    help_text = cli("--help").stdout
    for line in ("0  ok", "1  failed", "2  bad input", "3  not found", "4  busy or temporary", "5  not configured"):
        assert line in help_text
    cid = json.loads(cli("connect", "sample", "--set", "workspace=codes", "--json").stdout)["connection_id"]
    assert "--filters" in cli("enable", cid, "sessions", "--filters", "[1]", code=2).stderr  # bad input
    assert cli("streams", "sample_nope0000", code=3).stderr.startswith("error: connection")  # not found
    assert cli("connect", "no-such-plugin", code=3).returncode == 3
    out = cli("connect", "sample", "--set", "workspace=codes2", code=5,
              extra={"HISSUNO_CREDENTIALS_BACKEND": "bogus"})
    assert "HISSUNO_CREDENTIALS_BACKEND" in out.stderr  # not configured
    # A run the provider ended retriably (503) can succeed later: 4, the JSON still says what happened.
    cli("enable", cid, "sessions", "--filters", '{"size": 30, "fail_after": 5}')
    failed = cli("sync", cid, "sessions", "--json", code=4)
    assert json.loads(failed.stdout)["error_code"] == "provider_unavailable"
    # A sync of a stream that is already running (another process holds the stream's lease): 4 (busy,
    # retriable), not 2 (bad input).
    from hissuno_airflow.store import runs

    with store.connection() as c:
        held = runs.start_run(c, connection_id=cid, plugin_id="sample", stream_id="sessions", triggered_by="manual",
                              sync_mode="incremental", cursor_before=None, window=(None, None),
                              external_run_id="another-process", lease_s=600)
    try:
        busy = cli("sync", cid, "sessions", code=4)
        assert "already running" in busy.stderr
    finally:
        with store.connection() as c:
            c.execute("UPDATE integration_sync_runs SET status = 'cancelled', completed_at = now() WHERE id = %s",
                      (held,))


def test_exit_code_of_a_provider_refusal_is_1() -> None:
    assert exit_code(ProviderAuthError("refused", provider="x", status=401)) == 1
    assert "1  failed" in EXIT_CODES


def _scan_store(store: Any, needles: list[str]) -> list[str]:
    with store.connection() as conn:
        cols = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns c WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'jsonb', 'json', 'character varying') AND EXISTS (SELECT 1 FROM "
            "information_schema.tables t WHERE t.table_name = c.table_name AND t.table_schema = 'public' "
            "AND t.table_type = 'BASE TABLE')").fetchall()
        found = []
        for col in cols:
            for needle in needles:
                n = conn.execute(f'SELECT count(*) AS n FROM "{col["table_name"]}" '
                                 f'WHERE "{col["column_name"]}"::text LIKE %s', (f"%{needle}%",)).fetchone()["n"]
                if n:
                    found.append(f"{col['table_name']}.{col['column_name']}")
    return found


def test_no_secret_in_clear_in_cli_output_or_any_store_column(cli, store, web) -> None:
    from hissuno_airflow.store import connections as repo
    from tests.fixtures.web import sign

    cid = json.loads(cli("connect", "sample", "--set", "workspace=scan", "--json").stdout)["connection_id"]
    # A webhook secret set the way the page does it (PATCH settings).
    r = web.client.patch(f"/api/plugins/sample/{cid}", json={"settings": {"webhook_secret": WEBHOOK_SECRET}})
    assert r.status_code == 200 and WEBHOOK_SECRET not in r.text and r.json()["has_webhook_secret"] is True
    assert repo.get_connection(store, cid).settings["webhook_secret"] == WEBHOOK_SECRET  # opened on read
    # A webhook plugin's connection with its secret, and a correctly signed webhook delivered to it.
    row, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001", plugin_id="webkey",
                                    external_account_id="scan", account_label="Scan",
                                    settings={"webhook_secret": OTHER_SECRET})
    repo.upsert_stream(store, connection_id=row.id, plugin_id="webkey", stream_id="events", stream_kind="issues",
                       frequency="webhook")
    body = b'{"id": "evt-scan", "title": "scan"}'
    url = f"{web.url}/api/plugins/webhook/webkey/{row.id}"
    hook = web.anon.post(url, content=body, headers={**sign("github", body, url, secret=OTHER_SECRET),
                                                     "Content-Type": "application/json"})
    assert hook.status_code == 200 and hook.json()["queued"] == 1, hook.text
    # A sync.
    cli("enable", cid, "sessions", "--filters", '{"size": 5}')
    cli("sync", cid, "sessions", "--json")

    outputs = []
    for args in (("connections",), ("streams", cid), ("runs", cid)):
        outputs += [cli(*args).stdout, cli(*args, "--json").stdout]
    outputs.append(web.client.get("/api/connections").text)
    outputs.append(web.client.get(f"/api/plugins/webkey/{row.id}").text)
    for out in outputs:
        assert WEBHOOK_SECRET not in out and OTHER_SECRET not in out, out[:500]
    listed = json.loads(cli("connections", "--json").stdout)
    assert {c["id"]: c["settings"].get("webhook_secret") for c in listed} == {cid: "***", row.id: "***"}
    assert _scan_store(store, [WEBHOOK_SECRET, OTHER_SECRET]) == []


def test_plaintext_secrets_from_before_are_sealed_by_migration_0008(store, database_url) -> None:
    from hissuno_airflow.store import connections as repo
    from hissuno_airflow.store.migrate import migrate
    from tests.fixtures.store import connect_sample

    cid = connect_sample(store, "legacy").id
    with store.connection() as conn:  # as a connection written before 0008 stored it
        conn.execute("UPDATE integration_connections SET settings = %s::jsonb WHERE id = %s",
                     (json.dumps({"webhook_secret": WEBHOOK_SECRET, "region": "eu"}), cid))
        conn.execute("DELETE FROM schema_migrations WHERE version = '0008_seal_secret_settings'")
    assert _scan_store(store, [WEBHOOK_SECRET]) == ["integration_connections.settings"]
    assert "0008_seal_secret_settings" in migrate(database_url)
    assert _scan_store(store, [WEBHOOK_SECRET]) == []
    assert repo.get_connection(store, cid).settings == {"webhook_secret": WEBHOOK_SECRET, "region": "eu"}
