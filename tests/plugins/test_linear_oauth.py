"""Linear's OAuth 2.0 end to end against the fake authorization server of ``tests/fakes/linear.py``.

From the Integrations routes (the real web app on 127.0.0.1) and from ``hissuno connect`` (the CLI as a
subprocess, its loopback listener catching the redirect): connect, callback, the workspace as the account,
encrypted tokens; refresh before expiry and on a 401 (one refresh grant, the rotated refresh token saved
and the old one never presented again); a revoked grant as "reconnect needed" on the run, the CLI, the
connections API and the Airflow task; and Reconnect restoring it with the streams and cursors kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow import cli
from hissuno_airflow.runtime.credentials import credential_store, load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes import linear as fakes
from tests.fakes.linear import ORG, TEAMS, VIEWER, FakeLinear
from tests.fakes.server import FakeClock
from tests.fixtures.airflow import ManualRun, RecordingTI
from tests.fixtures.cli import standalone_env
from tests.fixtures.fakes import retries_on
from tests.fixtures.tokens import stored_at_each_request, stored_when_first_used
from tests.fixtures.web import Web, count

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ENG = TEAMS[0]["id"]
STREAM = f"issues:{ENG}"
SCOPES = "read,write,issues:create,comments:create"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def fake(serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> FakeLinear:
    monkeypatch.setattr("hissuno_airflow.plugins.linear.client.PAGE_SIZE", 3)
    fake = fakes.serve(monkeypatch, serve_fake, 7, clock=clock.time)
    clock.advance(50 * 60)
    return fake


def _browser(url: str) -> str:
    """The user at Linear: consent (the fake grants at once); returns where it redirects."""
    r = httpx.get(url, follow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    return str(r.headers["Location"])


def _web_connect(web: Web, body: dict[str, Any] | None = None) -> dict[str, list[str]]:
    r = web.client.post("/api/plugins/linear/connect", json=body or {})
    assert r.status_code == 200, r.text
    location = _browser(r.json()["authorize_url"])
    back = httpx.get(location, cookies={"hissuno_token": web.client.headers["Authorization"][7:]},
                     follow_redirects=False, timeout=30)
    assert back.status_code == 302, back.text
    return parse_qs(urlsplit(back.headers["Location"]).query)


def _creds(store: Any, cid: str) -> dict[str, Any]:
    return load_credentials(store, repo.get_connection(store, cid))


def _save(store: Any, cid: str, **changes: Any) -> dict[str, Any]:
    creds = {**_creds(store, cid), **changes}
    credential_store(store, "db").save(repo.get_connection(store, cid), creds)
    return creds


# -- connect ---------------------------------------------------------------------------------------


def test_connect_from_the_integrations_page(web: Web, fake: FakeLinear) -> None:
    r = web.client.post("/api/plugins/linear/connect", json={})
    assert r.status_code == 200, r.text
    url = urlsplit(r.json()["authorize_url"])
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/oauth/authorize" and q["client_id"] == fake.client_id and q["response_type"] == "code"
    assert q["scope"] == SCOPES  # Linear's comma-separated list, not space-joined
    assert q["prompt"] == "consent" and q["code_challenge_method"] == "S256" and q["code_challenge"]
    assert q["redirect_uri"].endswith("/api/plugins/oauth/linear/callback")
    assert count(web.store, "integration_connections") == 0

    location = _browser(r.json()["authorize_url"])
    back = httpx.get(location, cookies={"hissuno_token": web.client.headers["Authorization"][7:]},
                     follow_redirects=False, timeout=30)
    done = parse_qs(urlsplit(back.headers["Location"]).query)
    assert done.get("connected") == ["1"], done
    row = repo.get_connection(web.store, done["connection"][0])
    assert (row.plugin_id, row.external_account_id, row.account_label) == ("linear", ORG["id"], ORG["name"])
    assert row.settings["organization_url_key"] == ORG["urlKey"] and row.settings["viewer_email"] == VIEWER["email"]
    creds = load_credentials(web.store, row)
    assert creds["access_token"] in fake.token_accounts and creds["refresh_token"] in fake.live_refresh_tokens
    expires = datetime.fromisoformat(creds["expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    # The token request: client_secret_post, the PKCE verifier; the scope came back as a JSON array.
    token_req = fake.requests_to("/oauth/token")[0]
    form = parse_qs(token_req.body.decode())
    assert form["client_secret"] == [fake.client_secret] and form["code_verifier"][0]
    assert fake.exchanges == 1 and fake.refusals == []
    with web.store.connection() as conn:
        enc = bytes(conn.execute("SELECT credentials_enc FROM integration_connections WHERE id = %s",
                                 (row.id,)).fetchone()["credentials_enc"])
    assert creds["access_token"].encode() not in enc and creds["refresh_token"].encode() not in enc
    listing = web.client.get("/api/plugins/linear").text
    assert creds["access_token"] not in listing and creds["refresh_token"] not in listing


def test_a_refused_consent_saves_nothing(web: Web, fake: FakeLinear) -> None:
    fake.deny_consent = True
    assert _web_connect(web).get("error") == ["access_denied"]
    assert count(web.store, "integration_connections") == 0


def test_teams_handler_and_instances_on_the_web(web: Web, fake: FakeLinear) -> None:
    cid = _web_connect(web)["connection"][0]
    r = web.client.get(f"/api/plugins/linear/{cid}/teams")
    assert r.status_code == 200, r.text
    assert r.json() == {"teams": [{"id": t["id"], "label": f"{t['name']} ({t['key']})", "key": t["key"],
                                   "name": t["name"]} for t in TEAMS]}
    plugin_level = web.client.get("/api/plugins/linear/teams")
    assert plugin_level.status_code == 400 and plugin_level.json()["field"] == "connection_id"


def _cli_connect(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``hissuno connect linear ...`` as a subprocess; the test's browser follows its URL to the loopback."""
    proc = subprocess.Popen([sys.executable, "-m", "hissuno_airflow.cli", "connect", "linear", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = next((line.strip() for line in proc.stderr if line.startswith("http")), "")
        q = parse_qs(urlsplit(url).query)
        assert q["scope"] == [SCOPES] and q["prompt"] == ["consent"], url
        assert urlsplit(q["redirect_uri"][0]).hostname == "127.0.0.1"
        page = httpx.get(_browser(url), timeout=30)
        assert page.status_code == 200 and "Connected" in page.text
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_connect_and_reconnect_from_the_cli_through_its_loopback_listener(
    store: Any, database_url: str, fake: FakeLinear, tmp_path: Any,
) -> None:
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_LINEAR_API_URL": fake.url,
           "HISSUNO_LINEAR_AUTH_URL": fake.url, "LINEAR_CLIENT_ID": fake.client_id,
           "LINEAR_CLIENT_SECRET": fake.client_secret, "PYTHONUNBUFFERED": "1"}
    rc, out, err = _cli_connect(env, "--json")
    assert rc == 0, err
    cid = json.loads(out)["connection_id"]
    row = repo.get_connection(store, cid)
    assert (row.external_account_id, row.account_label) == (ORG["id"], ORG["name"])
    creds = load_credentials(store, row)
    assert creds["access_token"] not in out + err and creds["refresh_token"] not in out + err
    # The connection it made syncs (in process: every CLI start costs Airflow's import again).
    enable_stream(store, cid, STREAM)
    first = run_stream_sync(cid, STREAM, store=store)
    assert first.counts["synced"] == 7

    # Revoked at Linear: reconnect needed; `hissuno connect linear --update` restores the same connection.
    fake.revoke_token(creds["access_token"])
    fake.revoke_token(creds["refresh_token"])
    assert run_stream_sync(cid, STREAM, store=store).error_code == "provider_auth"
    assert repo.get_connection(store, cid).needs_reconnect
    rc, out, err = _cli_connect(env, "--update", cid, "--json")
    assert rc == 0, err
    assert json.loads(out)["connection_id"] == cid and count(store, "integration_connections") == 1
    assert not repo.get_connection(store, cid).needs_reconnect
    assert repo.get_stream(store, cid, STREAM).last_sync_at == first.cursor_after
    assert run_stream_sync(cid, STREAM, store=store).counts["synced"] == 0


# -- refresh ---------------------------------------------------------------------------------------


@pytest.fixture
def connected(store: Any, fake: FakeLinear) -> str:
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, STREAM)
    return cid


def test_refresh_before_expiry(store: Any, fake: FakeLinear, connected: str) -> None:
    old = _save(store, connected, expires_at=(datetime.now(UTC) + timedelta(seconds=60)).isoformat())
    result = run_stream_sync(connected, STREAM, store=store)
    assert result.status == "success", result.error
    assert fake.refreshes == 1 and fake.refusals == []
    new = _creds(store, connected)
    assert new["access_token"] != old["access_token"] and new["refresh_token"] != old["refresh_token"]
    assert fake.used_refresh_tokens == {old["refresh_token"]} and fake.live_refresh_tokens == [new["refresh_token"]]
    # Refreshed before the first query: no request went out with the old token.
    assert {r.bearer_token for r in fake.requests_to("/graphql")[-4:]} == {new["access_token"]}
    assert old["access_token"] not in {r.bearer_token for r in fake.requests_to("/graphql")[-4:]}


def test_a_token_expired_mid_sync_is_refreshed_once(store: Any, fake: FakeLinear, connected: str) -> None:
    old = _creds(store, connected)
    seen = stored_at_each_request(fake, "/graphql", store, connected)
    # Linear expires the token server-side before its stated lifetime: from page three on it answers 401.
    fake.before_request("/graphql", lambda req: fake.expire_access_token(old["access_token"]),
                        when=lambda r: bool((r.json() or {}).get("variables", {}).get("after")))
    result = run_stream_sync(connected, STREAM, store=store)
    assert result.status == "success" and result.counts["synced"] == 7
    assert fake.refreshes == 1 and fake.refusals == []  # one grant; the old refresh token never again
    token_bodies = [parse_qs(r.body.decode()) for r in fake.requests_to("/oauth/token")]
    assert [b["grant_type"] for b in token_bodies] == [["authorization_code"], ["refresh_token"]]
    assert token_bodies[1]["refresh_token"] == [old["refresh_token"]]
    new = _creds(store, connected)
    # The rotated refresh token was saved before the new access token's first request went out.
    assert stored_when_first_used(seen, new["access_token"]) == fake.live_refresh_tokens[0] != old["refresh_token"]
    assert fake.live_refresh_tokens == [new["refresh_token"]] and new["access_token"] != old["access_token"]
    later = [r for r in fake.requests_to("/graphql") if (r.json() or {}).get("variables", {}).get("after")]
    # Page two, page three refused, page three again with the new token.
    assert [r.bearer_token for r in later] == [old["access_token"], old["access_token"], new["access_token"]]
    # The next run uses the saved tokens and needs no refresh.
    assert run_stream_sync(connected, STREAM, store=store).status == "success" and fake.refreshes == 1


# -- revoked grant, reconnect ---------------------------------------------------------------------


def test_a_revoked_grant_needs_a_reconnect_and_reconnect_keeps_streams_and_cursors(
    store: Any, fake: FakeLinear, connected: str, web: Web, capsys: pytest.CaptureFixture[str],
) -> None:
    first = run_stream_sync(connected, STREAM, store=store)
    assert first.status == "success"
    enable_stream(store, connected, STREAM, frequency="6h", filters={"state_types": ["started", "completed",
                                                                                   "unstarted", "backlog",
                                                                                   "triage", "canceled"]})
    before = repo.get_stream(store, connected, STREAM)
    creds = _creds(store, connected)
    # The workspace revoked the app: the access token and the refresh token are dead.
    fake.revoke_token(creds["access_token"])
    fake.revoke_token(creds["refresh_token"])

    failed = run_stream_sync(connected, STREAM, store=store)
    assert failed.status == "error" and failed.error_code == "provider_auth" and not failed.retriable
    assert f"reconnect needed: run `hissuno connect linear --update {connected}`" in failed.error
    assert creds["refresh_token"] not in failed.error and creds["access_token"] not in failed.error
    assert fake.count("/oauth/token") == 2  # the exchange, and one refused refresh: no retry loop
    row = repo.get_connection(store, connected)
    assert row.needs_reconnect
    assert repo.get_stream(store, connected, STREAM).last_sync_at == before.last_sync_at
    # The CLI and the Integrations page's data say so.
    assert cli.main(["connections"]) == 0
    assert f"RECONNECT NEEDED (hissuno connect linear --update {connected})" in capsys.readouterr().out
    listed = web.client.get("/api/plugins/linear").json()["connections"]
    assert [c["needs_reconnect"] for c in listed] == [True]
    # The Airflow task fails without a retry.
    from airflow.sdk.exceptions import AirflowFailException

    from hissuno_airflow.operators.sync import SyncOperator

    op = SyncOperator(task_id="sync", connection_id=connected, stream_id=STREAM, retries=3)
    context = {"ti": RecordingTI("hissuno__linear", allow_pull=False), "dag_run": ManualRun(run_id="manual__1"),
               "params": {}}
    with pytest.raises(AirflowFailException, match="reconnect needed"):
        op.execute(context)  # type: ignore[arg-type]

    # Reconnect from the page: the same connection, its streams, filters and cursor kept.
    back = _web_connect(web, {"connection_id": connected})
    assert back.get("connected") == ["1"] and back["connection"] == [connected], back
    assert count(store, "integration_connections") == 1
    row = repo.get_connection(store, connected)
    assert not row.needs_reconnect
    after = repo.get_stream(store, connected, STREAM)
    assert (after.enabled, after.frequency, after.filter_config, after.last_sync_at) == (
        before.enabled, before.frequency, before.filter_config, before.last_sync_at)
    resumed = run_stream_sync(connected, STREAM, store=store)
    assert resumed.status == "success" and resumed.counts["synced"] == 0
    assert "updatedAt" in fake.graphql_bodies("Issues")[-1]["variables"]["filter"]  # incremental, not a restart
