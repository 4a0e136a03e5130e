"""Connect flows over real HTTP (serve mode): api_key, OAuth 2.0 round trip, state refusals."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow.runtime.credentials import credential_store, load_credentials
from hissuno_airflow.store import connections as repo
from tests.fixtures.web import Web, count
from tests.web.plugins import FakeAuthServer, FakeKeyProvider


@pytest.fixture
def key_provider(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeKeyProvider()
    fake.add_account("good-key-1", "acct-1", "Account One")
    fake.add_account("good-key-1b", "acct-1", "Account One (renamed)")
    fake.add_account("good-key-2", "acct-2", "Account Two")
    with fake:
        monkeypatch.setenv("HISSUNO_WEBKEY_API_URL", fake.url)
        yield fake


def test_api_key_bad_credentials_is_400_with_plugin_message_and_no_rows(web: Web, key_provider: Any) -> None:
    r = web.client.post("/api/plugins/webkey/connect", json={"credentials": {"api_key": "wrong-key-123"}})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "connect_failed"
    assert body["message"] == "Invalid API key"
    assert "wrong-key-123" not in r.text
    assert count(web.store, "integration_connections") == 0
    assert count(web.store, "oauth_states") == 0
    assert key_provider.count("/me") == 1


def test_api_key_missing_field_names_it(web: Web, key_provider: Any) -> None:
    r = web.client.post("/api/plugins/webkey/connect", json={"credentials": {}})
    assert r.status_code == 400
    assert r.json()["field"] == "credentials.api_key"
    r = web.client.post("/api/plugins/webkey/connect", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    assert key_provider.count("/me") == 0


def test_a_bad_or_unknown_project_is_named_before_the_provider_is_called(web: Web, key_provider: Any) -> None:
    creds = {"api_key": "good-key-1"}
    r = web.client.post("/api/plugins/webkey/connect", json={"credentials": creds, "project_id": "nope"})
    assert r.status_code == 400 and r.json()["field"] == "project_id" and "UUID" in r.json()["message"]
    r = web.client.post("/api/plugins/webkey/connect",
                        json={"credentials": creds, "project_id": "00000000-0000-0000-0000-00000000dead"})
    assert r.status_code == 404 and r.json()["field"] == "project_id"
    assert web.client.get("/api/connections", params={"project_id": "nope"}).json()["field"] == "project_id"
    assert web.client.get("/api/plugins/webkey", params={"project_id": "x"}).status_code == 400
    assert count(web.store, "integration_connections") == 0 and key_provider.count("/me") == 0


def test_projects_route_lists_and_creates_and_connect_targets_one(web: Web, key_provider: Any) -> None:
    made = web.client.post("/api/projects", json={"name": "Research"})
    assert made.status_code == 201, made.text
    pid = made.json()["id"]
    listed = {p["id"]: p for p in web.client.get("/api/projects").json()["projects"]}
    assert listed[pid]["name"] == "Research" and listed[pid]["default"] is False
    assert web.client.post("/api/projects", json={"name": ""}).json()["field"] == "name"
    assert web.client.post("/api/projects", json={"name": 3}).json()["field"] == "name"
    assert web.anon.get("/api/projects").status_code == 401
    r = web.client.post("/api/plugins/webkey/connect", json={"credentials": {"api_key": "good-key-1"}, "project_id": pid})
    assert r.status_code == 201, r.text
    scoped = web.client.get("/api/connections", params={"project_id": pid}).json()["connections"]
    assert [c["id"] for c in scoped] == [r.json()["connection_id"]]


def test_api_key_good_then_reconnect_updates(web: Web, key_provider: Any) -> None:
    r = web.client.post("/api/plugins/webkey/connect", json={"credentials": {"api_key": "good-key-1"}})
    assert r.status_code == 201, r.text
    cid = r.json()["connection_id"]
    assert count(web.store, "integration_connections") == 1
    row = repo.get_connection(web.store, cid)
    assert load_credentials(web.store, row) == {"api_key": "good-key-1"}
    # Same provider account, new key, without naming the connection: refused, naming it; nothing changes.
    r2 = web.client.post("/api/plugins/webkey/connect", json={"credentials": {"api_key": "good-key-1b"}})
    assert r2.status_code == 409, r2.text
    body = r2.json()
    assert body["error"] == "account_exists" and body["field"] == "connection_id"
    assert body["connection"] == {"id": cid, "account_label": "Account One"}
    assert cid in body["message"] and "Account One" in body["message"] and "good-key" not in r2.text
    row = repo.get_connection(web.store, cid)
    assert row.account_label == "Account One" and load_credentials(web.store, row) == {"api_key": "good-key-1"}
    # Naming the connection updates it: a reconnect, not a second row.
    r2 = web.client.post("/api/plugins/webkey/connect",
                         json={"credentials": {"api_key": "good-key-1b"}, "connection_id": cid})
    assert r2.status_code == 200 and r2.json()["connection_id"] == cid and r2.json()["created"] is False
    assert count(web.store, "integration_connections") == 1
    row = repo.get_connection(web.store, cid)
    assert row.account_label == "Account One (renamed)"
    assert load_credentials(web.store, row) == {"api_key": "good-key-1b"}
    # A different account is a second connection (multi_instance defaults to True).
    r3 = web.client.post("/api/plugins/webkey/connect", json={"credentials": {"api_key": "good-key-2"}})
    assert r3.status_code == 201
    assert count(web.store, "integration_connections") == 2
    # Listing never returns credentials.
    listing = web.client.get("/api/plugins/webkey")
    assert listing.status_code == 200
    assert "good-key" not in listing.text and len(listing.json()["connections"]) == 2


def test_reconnect_target_must_belong_to_plugin_and_account(web: Web, key_provider: Any) -> None:
    cid = web.client.post("/api/plugins/webkey/connect", json={"credentials": {"api_key": "good-key-1"}}).json()["connection_id"]
    r = web.client.post("/api/plugins/webkey/connect",
                        json={"credentials": {"api_key": "good-key-2"}, "connection_id": cid})
    assert r.status_code == 409 and r.json()["field"] == "connection_id"
    r = web.client.post("/api/plugins/webkey/connect",
                        json={"credentials": {"api_key": "good-key-1"}, "connection_id": "nope_00000000"})
    assert r.status_code == 404
    assert count(web.store, "integration_connections") == 1


def test_management_routes_need_the_admin_token(web: Web) -> None:
    assert web.anon.get("/api/plugins/catalog").status_code == 401
    assert web.anon.post("/api/plugins/webkey/connect", json={}).status_code == 401
    bad = httpx.get(web.url + "/api/plugins/catalog", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
    assert web.anon.get("/health").status_code == 200
    cat = web.client.get("/api/plugins/catalog").json()["plugins"]
    webkey = next(p for p in cat if p["id"] == "webkey")
    assert webkey["auth"]["fields"][0]["secret"] is True
    assert "test" not in webkey["auth"]


# -- OAuth ----------------------------------------------------------------------------------------


@pytest.fixture
def auth_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeAuthServer()
    with fake:
        monkeypatch.setenv("HISSUNO_WEBAUTH_AUTH_URL", fake.url)
        monkeypatch.setenv("HISSUNO_WEBAUTH_API_URL", fake.url)
        monkeypatch.setenv("WEBAUTH_CLIENT_ID", fake.client_id)
        monkeypatch.setenv("WEBAUTH_CLIENT_SECRET", fake.client_secret)
        yield fake


def _start(web: Web) -> str:
    r = web.client.post("/api/plugins/webauth/connect", json={})
    assert r.status_code == 200, r.text
    return str(r.json()["authorize_url"])


def _provider_redirect(authorize_url: str) -> str:
    """Act as the browser at the provider: the fake grants at once and redirects back."""
    r = httpx.get(authorize_url, follow_redirects=False)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def _callback(web: Web, location: str) -> dict[str, list[str]]:
    # The browser follows the redirect back with its session (the admin cookie under serve).
    r = httpx.get(location, cookies={"hissuno_token": web.client.headers["Authorization"][7:]},
                  follow_redirects=False)
    assert r.status_code == 302, r.text
    return parse_qs(urlsplit(r.headers["Location"]).query)


def test_oauth_round_trip_pkce_scopes_and_encrypted_tokens(web: Web, auth_server: FakeAuthServer) -> None:
    url = _start(web)
    q = parse_qs(urlsplit(url).query)
    assert q["scope"] == ["read,write"]  # the plugin's separator, not a space
    assert q["code_challenge_method"] == ["S256"] and q["code_challenge"][0]
    assert q["prompt"] == ["consent"]
    assert q["redirect_uri"][0].endswith("/hissuno/api/plugins/oauth/webauth/callback")
    assert count(web.store, "integration_connections") == 0
    location = _provider_redirect(url)
    back = _callback(web, location)
    assert back.get("connected") == ["1"], back
    cid = back["connection"][0]
    row = repo.get_connection(web.store, cid)
    assert row.account_label == "Acme Org" and row.external_account_id == "org-42"
    creds = load_credentials(web.store, row)
    assert creds["access_token"] in auth_server.tokens and creds["refresh_token"].startswith("rt-")
    with web.store.connection() as conn:
        enc = bytes(conn.execute("SELECT credentials_enc FROM integration_connections WHERE id = %s",
                                 (cid,)).fetchone()["credentials_enc"])
    assert creds["access_token"].encode() not in enc and b"rt-" not in enc
    # Replaying the same callback (same state) is refused and writes nothing new.
    again = _callback(web, location)
    assert again.get("error") == ["replayed_state"]
    assert count(web.store, "integration_connections") == 1


def test_oauth_tampered_state_refused(web: Web, auth_server: FakeAuthServer) -> None:
    location = _provider_redirect(_start(web))
    parts = urlsplit(location)
    q = parse_qs(parts.query)
    state = q["state"][0]
    flipped = state[:-6] + ("A" if state[-6] != "A" else "B") + state[-5:]
    tampered = f"{parts.scheme}://{parts.netloc}{parts.path}?code={q['code'][0]}&state={flipped}"
    assert _callback(web, tampered).get("error") == ["invalid_state"]
    missing = f"{parts.scheme}://{parts.netloc}{parts.path}?code={q['code'][0]}"
    assert _callback(web, missing).get("error") == ["missing_state"]
    assert count(web.store, "integration_connections") == 0


def test_oauth_expired_state_refused(web: Web, auth_server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISSUNO_OAUTH_STATE_TTL", "1")
    location = _provider_redirect(_start(web))
    time.sleep(2.2)
    assert _callback(web, location).get("error") == ["expired_state"]
    assert count(web.store, "integration_connections") == 0


def test_oauth_state_is_bound_to_the_user(web: Web, auth_server: FakeAuthServer) -> None:
    from hissuno_airflow.runtime.connect import finish_callback

    location = _provider_redirect(_start(web))
    q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert finish_callback("webauth", q, web.store, user_id="mallory") == {"plugin": "webauth",
                                                                            "error": "user_mismatch"}
    # Anonymous return (no session) is refused too.
    r = httpx.get(location, follow_redirects=False)
    assert r.status_code == 302
    assert parse_qs(urlsplit(r.headers["Location"]).query)["error"] == ["user_mismatch"]
    assert count(web.store, "integration_connections") == 0
    # Those refusals did not burn the state: the user who started the flow still completes it.
    assert _callback(web, location).get("connected") == ["1"]


def test_oauth_provider_error_and_bad_code(web: Web, auth_server: FakeAuthServer) -> None:
    location = _provider_redirect(_start(web))
    parts = urlsplit(location)
    state = parse_qs(parts.query)["state"][0]
    bad = f"{parts.scheme}://{parts.netloc}{parts.path}?code=forged-code&state={state}"
    assert _callback(web, bad).get("error") == ["connect_failed"]
    denied = _provider_redirect(_start(web))
    p2 = urlsplit(denied)
    st2 = parse_qs(p2.query)["state"][0]
    assert _callback(web, f"{p2.scheme}://{p2.netloc}{p2.path}?error=access_denied&state={st2}").get("error") == ["access_denied"]
    assert count(web.store, "integration_connections") == 0


def test_connection_handlers_get_a_refreshed_token(web: Web, auth_server: FakeAuthServer) -> None:
    back = _callback(web, _provider_redirect(_start(web)))
    cid = back["connection"][0]
    row = repo.get_connection(web.store, cid)
    creds = load_credentials(web.store, row)
    assert web.client.get(f"/api/plugins/webauth/{cid}/whoami").json() == auth_server.account
    # The access token ran out (the provider now answers token_expired): the handler gets a refreshed one.
    auth_server.expire_access_token(creds["access_token"])
    past = "2000-01-01T00:00:00+00:00"
    credential_store(web.store, "db").save(row, {**creds, "expires_at": past})
    r = web.client.get(f"/api/plugins/webauth/{cid}/whoami")
    assert r.status_code == 200 and r.json() == auth_server.account, r.text
    assert auth_server.refreshes == 1
    fresh = load_credentials(web.store, row)
    assert fresh["refresh_token"] != creds["refresh_token"] and fresh["expires_at"] > past


def test_oauth_connecting_a_connected_account_again_needs_the_connection_named(
    web: Web, auth_server: FakeAuthServer
) -> None:
    cid = _callback(web, _provider_redirect(_start(web)))["connection"][0]
    first = load_credentials(web.store, repo.get_connection(web.store, cid))
    # The same provider account again, as a new connection: refused on the return leg, nothing saved.
    back = _callback(web, _provider_redirect(_start(web)))
    assert back.get("error") == ["account_exists"] and back.get("existing") == [cid], back
    assert "connected" not in back
    assert load_credentials(web.store, repo.get_connection(web.store, cid)) == first
    assert count(web.store, "integration_connections") == 1
    # The intent to update travels in the signed state: naming the connection updates it.
    r = web.client.post("/api/plugins/webauth/connect", json={"connection_id": cid})
    assert r.status_code == 200, r.text
    back = _callback(web, _provider_redirect(r.json()["authorize_url"]))
    assert back.get("connected") == ["1"] and back["connection"] == [cid], back
    assert load_credentials(web.store, repo.get_connection(web.store, cid))["access_token"] != first["access_token"]
    assert count(web.store, "integration_connections") == 1
