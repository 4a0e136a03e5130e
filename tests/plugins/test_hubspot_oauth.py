"""HubSpot's OAuth flow end to end against the fake authorization server of ``tests/fakes/hubspot.py``:
from the Integrations page's routes (served for real) and from ``hissuno connect`` (a subprocess with its
loopback listener); a revoked grant is "reconnect needed" (CLI, page API, failed run, not retried); a
reconnect keeps the connection's streams and cursors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes import hubspot as fakes
from tests.fakes.hubspot import CLIENT_ID, CLIENT_SECRET, HUB_DOMAIN, HUB_ID, FakeHubSpot
from tests.fakes.server import FakeClock
from tests.fixtures.airflow import ManualRun, RecordingTI
from tests.fixtures.cli import standalone_env
from tests.fixtures.fakes import retries_on
from tests.fixtures.web import Web, count


@pytest.fixture
def hub(serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> FakeHubSpot:
    clock = FakeClock()
    retries_on(monkeypatch, clock)
    return fakes.serve(monkeypatch, serve_fake, 4, 6, clock.time)


def _browser(url: str) -> str:
    """The user at HubSpot: consent (the fake grants at once); returns where it redirects."""
    r = httpx.get(url, follow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def _web_connect(web: Web, body: dict[str, Any]) -> dict[str, list[str]]:
    r = web.client.post("/api/plugins/hubspot/connect", json=body)
    assert r.status_code == 200, r.text
    url = r.json()["authorize_url"]
    q = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == "/oauth/authorize" and q["client_id"] == [CLIENT_ID]
    assert q["scope"] == ["crm.objects.contacts.read crm.objects.companies.read oauth"]  # space-joined
    assert q["redirect_uri"][0].endswith("/hissuno/api/plugins/oauth/hubspot/callback")
    back = httpx.get(_browser(url), cookies={"hissuno_token": web.client.headers["Authorization"][7:]},
                     follow_redirects=False, timeout=30)
    assert back.status_code == 302, back.text
    return parse_qs(urlsplit(back.headers["Location"]).query)


def _cli_env(database_url: str, tmp_path: Any) -> dict[str, str]:
    return {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
            "HISSUNO_CREDENTIALS_BACKEND": "db"}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _cli_connect(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``hissuno connect hubspot --json [args]``: follow the printed URL as the browser would."""
    proc = subprocess.Popen([sys.executable, "-m", "hissuno_airflow.cli", "connect", "hubspot", "--json", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if line.startswith("http"):
            page = httpx.get(_browser(line.strip()), timeout=30)
            assert page.status_code == 200 and "Connected" in page.text, page.text
            break
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, seen + err


def test_the_integrations_page_connects_a_portal_with_encrypted_tokens(web: Web, hub: FakeHubSpot) -> None:
    back = _web_connect(web, {})
    assert back.get("connected") == ["1"], back
    row = repo.get_connection(web.store, back["connection"][0])
    # Account identity from HubSpot's token-info endpoint: the portal id and its domain.
    assert (row.plugin_id, row.external_account_id, row.account_label) == ("hubspot", str(HUB_ID), HUB_DOMAIN)
    assert row.settings["portal_id"] == str(HUB_ID)
    creds = load_credentials(web.store, row)
    assert creds["access_token"] in hub.token_accounts and creds["refresh_token"] in hub.live_refresh_tokens
    assert hub.exchanges == 1 and hub.count(f"/oauth/v1/access-tokens/{creds['access_token']}") == 1
    with web.store.connection() as conn:
        enc = bytes(conn.execute("SELECT credentials_enc FROM integration_connections WHERE id = %s",
                                 (row.id,)).fetchone()["credentials_enc"])
    assert creds["access_token"].encode() not in enc and creds["refresh_token"].encode() not in enc
    # The token exchange was form-encoded with the client's id and secret in the body (client_secret_post).
    (token_req,) = hub.requests_to("/oauth/v1/token")
    assert token_req.header("content-type", "").startswith("application/x-www-form-urlencoded")
    form = parse_qs(token_req.body.decode())
    assert form["client_id"] == [CLIENT_ID] and form["client_secret"] == [CLIENT_SECRET]
    assert form["grant_type"] == ["authorization_code"]


def test_a_token_hubspot_does_not_know_connects_nothing(web: Web, hub: FakeHubSpot,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # HubSpot forgets the token between the exchange and the identity check.
    hub.before_request("/oauth/v1/access-tokens/{token}", lambda req: hub.revoke_token(req.path.rsplit("/", 1)[1]))
    back = _web_connect(web, {})
    assert back.get("error") == ["provider_auth"] and "connected" not in back
    assert count(web.store, "integration_connections") == 0


def test_hissuno_connect_in_a_terminal_connects_through_the_loopback_listener(
    store: Any, hub: FakeHubSpot, database_url: str, tmp_path: Any,
) -> None:
    env = _cli_env(database_url, tmp_path)
    rc, out, err = _cli_connect(env)
    assert rc == 0, err
    cid = json.loads(out)["connection_id"]
    row = repo.get_connection(store, cid)
    assert (row.external_account_id, row.account_label) == (str(HUB_ID), HUB_DOMAIN)
    creds = load_credentials(store, row)
    assert creds["access_token"] not in out + err and creds["refresh_token"] not in out + err
    assert CLIENT_SECRET not in out + err
    assert hub.exchanges == 1 and count(store, "integration_connections") == 1


def test_a_revoked_grant_is_reconnect_needed_everywhere_and_a_reconnect_keeps_streams_and_cursors(
    store: Any, web: Web, hub: FakeHubSpot, database_url: str, tmp_path: Any,
) -> None:
    cid = fakes.connect(store, hub)
    enable_stream(store, cid, "companies", frequency="6h", filters={"overwrite_policy": "hubspot_wins"})
    enable_stream(store, cid, "contacts")
    assert run_stream_sync(cid, "companies", store=store).status == "success"
    assert run_stream_sync(cid, "contacts", store=store).status == "success"
    cursors = {s: repo.get_stream(store, cid, s).last_sync_at for s in ("companies", "contacts")}
    creds = load_credentials(store, repo.get_connection(store, cid))

    # The user uninstalled the app: the refresh token is dead, and HubSpot refuses the access token early.
    hub.revoke_token(creds["refresh_token"])
    hub.expire_access_token(creds["access_token"])
    hub.add_companies(3)  # one of them without a domain
    searches = len(hub.searches("companies"))
    failed = run_stream_sync(cid, "companies", store=store)
    assert failed.status == "error" and failed.error_code == "provider_auth" and not failed.retriable
    assert f"reconnect needed: run `hissuno connect hubspot --update {cid}`" in (failed.error or "")
    assert creds["refresh_token"] not in (failed.error or "") and CLIENT_SECRET not in (failed.error or "")
    # One refused search, one refused refresh grant: no retry loop.
    assert len(hub.searches("companies")) == searches + 1
    assert [r["error"] for r in hub.refusals] == ["invalid_grant"] and hub.refreshes == 0
    assert repo.get_stream(store, cid, "companies").last_sync_at == cursors["companies"]

    env = _cli_env(database_url, tmp_path)
    assert f"RECONNECT NEEDED (hissuno connect hubspot --update {cid})" in _cli(env, "connections").stdout
    page = web.client.get("/api/connections").json()["connections"]
    assert [c["needs_reconnect"] for c in page if c["id"] == cid] == [True]
    assert creds["refresh_token"] not in json.dumps(page)
    # The stream's Airflow task fails without a retry (one more refused search, no refresh grant).
    from airflow.sdk.exceptions import AirflowFailException

    from hissuno_airflow.operators.sync import SyncOperator

    op = SyncOperator(task_id="sync", connection_id=cid, stream_id="companies", retries=3)
    context = {"ti": RecordingTI("hissuno__hubspot", allow_pull=False), "dag_run": ManualRun(run_id="manual__1"),
               "params": {}}
    with pytest.raises(AirflowFailException, match="reconnect needed"):
        op.execute(context)  # type: ignore[arg-type]
    assert len(hub.searches("companies")) == searches + 2 and hub.refreshes == 0
    assert repo.get_stream(store, cid, "companies").last_sync_at == cursors["companies"]

    # Reconnect from the terminal: same connection, same streams, filters, schedules and cursors.
    rc, out, err = _cli_connect(env, "--update", cid)
    assert rc == 0, err
    assert json.loads(out)["connection_id"] == cid
    row = repo.get_connection(store, cid)
    assert not row.needs_reconnect and count(store, "integration_connections") == 1
    companies = repo.get_stream(store, cid, "companies")
    assert (companies.frequency, companies.filter_config, companies.last_sync_at) == (
        "6h", {"overwrite_policy": "hubspot_wins"}, cursors["companies"])
    assert repo.get_stream(store, cid, "contacts").last_sync_at == cursors["contacts"]
    fresh = load_credentials(store, row)
    assert fresh["refresh_token"] in hub.live_refresh_tokens
    again = run_stream_sync(cid, "companies", store=store)
    assert again.status == "success" and again.counts["synced"] == 2, again.error  # only the two new ones
    assert not [c for c in web.client.get("/api/connections").json()["connections"] if c["needs_reconnect"]]


def test_a_reconnect_from_the_page_to_another_portal_is_refused(web: Web, hub: FakeHubSpot) -> None:
    cid = _web_connect(web, {})["connection"][0]
    hub.account = {**hub.account, "hub_id": 99999, "hub_domain": "other.hubspot.com"}
    back = _web_connect(web, {"connection_id": cid})
    assert "connected" not in back and back.get("error"), back
    assert repo.get_connection(web.store, cid).external_account_id == str(HUB_ID)
