"""Acceptance through a real ``airflow api-server`` on 127.0.0.1 (SimpleAuthManager, temp AIRFLOW_HOME).

The server runs the package's Airflow plugin (entry point, or a plugins-folder shim when the package is
not installed) plus a shim registering the ``webkey`` test plugin; credentials go to Airflow Connections.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.web import count, sign
from tests.web.plugins import FakeAuthServer, FakeKeyProvider

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
STARTUP_TIMEOUT = 150
SHIM = """
import sys
sys.path.insert(0, {repo!r})
from hissuno_airflow import registry
from tests.web import plugins as _p
for _make in (_p.webkey_plugin, _p.webauth_plugin):
    try:
        registry.register(_make(), "api-server test shim")
    except Exception:
        pass
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiServer:
    def __init__(self, url: str, token: str, home: Path) -> None:
        self.url = url
        self.token = token
        self.home = home

    def client(self, *, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def key_fake() -> Iterator[FakeKeyProvider]:
    fake = FakeKeyProvider()
    fake.add_account("good-key-1", "acct-1", "Account One")
    fake.add_account("good-key-1b", "acct-1", "Account One (rotated)")
    with fake:
        yield fake


@pytest.fixture(scope="module")
def auth_fake() -> Iterator[FakeAuthServer]:
    fake = FakeAuthServer()
    with fake:
        yield fake


@pytest.fixture(scope="module")
def api_server(database_url: str, key_fake: FakeKeyProvider, auth_fake: FakeAuthServer) -> Iterator[ApiServer]:
    home = Path(tempfile.mkdtemp(prefix="hissuno-afapi-"))
    (home / "plugins").mkdir()
    shim = SHIM.format(repo=str(REPO))
    if not any(ep.value.startswith("hissuno_airflow.airflow_plugin") for ep in entry_points(group="airflow.plugins")):
        shim += "from hissuno_airflow.airflow_plugin import HissunoPlugin  # noqa: F401\n"
    (home / "plugins" / "hissuno_test_shim.py").write_text(shim)
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__FERNET_KEY": os.environ.get("AIRFLOW__CORE__FERNET_KEY", "m3WkZvK0pQ8mX2gN5aTq9LbC4dHs7JfR1uYeV6oPiWc="),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HISSUNO_DATABASE_URL": database_url, "HISSUNO_CREDENTIALS_BACKEND": "airflow",
        "HISSUNO_WEBKEY_API_URL": key_fake.url, "WEBKEY_WEBHOOK_SECRET": "static-secret-123",
        "HISSUNO_LOAD_PLUGINS": "sample",
        "HISSUNO_WEBAUTH_AUTH_URL": auth_fake.url, "HISSUNO_WEBAUTH_API_URL": auth_fake.url,
        "WEBAUTH_CLIENT_ID": auth_fake.client_id, "WEBAUTH_CLIENT_SECRET": auth_fake.client_secret,
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = open(home / "api-server.log", "wb")
    proc = subprocess.Popen([AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail("api-server exited:\n" + (home / "api-server.log").read_text()[-4000:])
            try:
                if httpx.get(url + "/api/v2/version", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail("api-server did not start:\n" + (home / "api-server.log").read_text()[-4000:])
            time.sleep(0.5)
        pw_file = home / "simple_auth_manager_passwords.json.generated"
        password = json.loads(pw_file.read_text())["admin"]
        tok = httpx.post(url + "/auth/token", json={"username": "admin", "password": password}, timeout=10)
        assert tok.status_code in (200, 201), tok.text
        yield ApiServer(url, tok.json()["access_token"], home)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _hissuno_conns(api: ApiServer) -> list[dict[str, Any]]:
    with api.client() as c:
        r = c.get("/api/v2/connections", params={"limit": 100})
    assert r.status_code == 200, r.text
    return [x for x in r.json()["connections"] if str(x["conn_type"]).startswith("hissuno")]


def test_catalog_needs_an_airflow_login(api_server: ApiServer, store: Any) -> None:
    with api_server.client(auth=False) as anon:
        r = anon.get("/hissuno/api/plugins/catalog")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert anon.get("/hissuno/api/plugins/catalog", headers={"Authorization": "Bearer forged.jwt.x"}).status_code == 401
        assert anon.get("/hissuno/health").status_code == 200
        page = anon.get("/hissuno/")
        assert page.status_code == 200 and "Integrations" in page.text
        # The UI's cookie works like the Bearer header.
        cookie = anon.get("/hissuno/api/plugins/catalog", cookies={"_token": api_server.token})
        assert cookie.status_code == 200
    with api_server.client() as c:
        r = c.get("/hissuno/api/plugins/catalog")
    assert r.status_code == 200
    ids = {p["id"] for p in r.json()["plugins"]}
    assert {"sample", "webkey"} <= ids


def test_nav_entry_is_registered(api_server: ApiServer) -> None:
    with api_server.client() as c:
        plugins = c.get("/api/v2/plugins").json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "hissuno")
    assert any(v["name"] == "Integrations" and v["href"] == "/hissuno/" for v in ours["external_views"])


def test_api_key_connect_through_airflow(api_server: ApiServer, store: Any) -> None:
    before = len(_hissuno_conns(api_server))
    with api_server.client() as c:
        bad = c.post("/hissuno/api/plugins/webkey/connect", json={"credentials": {"api_key": "nope-key-1"}})
        assert bad.status_code == 400 and bad.json()["message"] == "Invalid API key", bad.text
        assert count(store, "integration_connections") == 0
        assert len(_hissuno_conns(api_server)) == before
        good = c.post("/hissuno/api/plugins/webkey/connect", json={"credentials": {"api_key": "good-key-1"}})
        assert good.status_code == 201, good.text
        cid = good.json()["connection_id"]
        again = c.post("/hissuno/api/plugins/webkey/connect", json={"credentials": {"api_key": "good-key-1b"}})
        assert again.status_code == 409 and again.json()["connection"]["id"] == cid, again.text
        again = c.post("/hissuno/api/plugins/webkey/connect",
                       json={"credentials": {"api_key": "good-key-1b"}, "connection_id": cid})
        assert again.status_code == 200 and again.json()["connection_id"] == cid
    assert count(store, "integration_connections") == 1
    conns = [x for x in _hissuno_conns(api_server) if x["connection_id"].endswith(cid)]
    assert len(conns) == 1
    assert "good-key" not in json.dumps(conns)  # masked by Airflow's API
    with store.connection() as conn:
        row = conn.execute("SELECT credentials_backend, credentials_enc FROM integration_connections").fetchone()
    assert row["credentials_backend"] == "airflow" and row["credentials_enc"] is None
    # The Airflow DB holds the key encrypted (Fernet), never in plaintext.
    db = (api_server.home / "airflow.db").read_bytes()
    assert b"good-key-1b" not in db
    # Disconnecting removes the Airflow Connection with the row.
    with api_server.client() as c:
        assert c.delete(f"/hissuno/api/plugins/webkey/{cid}").json() == {"success": True}
    assert count(store, "integration_connections") == 0
    assert [x for x in _hissuno_conns(api_server) if x["connection_id"].endswith(cid)] == []


def test_signed_webhook_accepted_without_login(api_server: ApiServer, store: Any) -> None:
    from hissuno_airflow.store import connections as repo

    row, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001", plugin_id="webkey",
                                    external_account_id="team-9", account_label="Team 9", settings={})
    repo.upsert_stream(store, connection_id=row.id, plugin_id="webkey", stream_id="events", stream_kind="issues",
                       frequency="webhook")
    path = "/hissuno/api/plugins/webhook/webkey"
    body = b'{"team_id": "team-9", "id": "w-1", "title": "from airflow"}'
    headers = sign("github", body, api_server.url + path, secret="static-secret-123", event_id="gh-1")
    with api_server.client(auth=False) as anon:
        r = anon.post(path, content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["queued"] == 1
        forged = anon.post(path, content=body, headers={**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
        assert forged.status_code == 401
    assert count(store, "webhook_events") == 1


def test_oauth_round_trip_tokens_land_encrypted_in_an_airflow_connection(
    api_server: ApiServer, auth_fake: FakeAuthServer, store: Any
) -> None:
    from urllib.parse import parse_qs, urlsplit

    with api_server.client() as c:
        start = c.post("/hissuno/api/plugins/webauth/connect", json={})
    assert start.status_code == 200, start.text
    authorize_url = start.json()["authorize_url"]
    assert parse_qs(urlsplit(authorize_url).query)["redirect_uri"] == [
        api_server.url + "/hissuno/api/plugins/oauth/webauth/callback"]
    location = httpx.get(authorize_url, follow_redirects=False).headers["Location"]
    # The browser returns with the Airflow UI's session cookie (SameSite=Lax is sent on this GET).
    back = httpx.get(location, cookies={"_token": api_server.token}, follow_redirects=False)
    assert back.status_code == 302, back.text
    q = parse_qs(urlsplit(back.headers["Location"]).query)
    assert q.get("connected") == ["1"], q
    assert back.headers["Location"].startswith("/hissuno/")
    cid = q["connection"][0]
    replay = httpx.get(location, cookies={"_token": api_server.token}, follow_redirects=False)
    assert parse_qs(urlsplit(replay.headers["Location"]).query)["error"] == ["replayed_state"]
    assert count(store, "integration_connections") == 1
    conns = [x for x in _hissuno_conns(api_server) if x["connection_id"].endswith(cid)]
    assert len(conns) == 1 and conns[0]["conn_type"] == "hissuno_webauth"
    token = next(iter(auth_fake.tokens))
    assert token not in json.dumps(conns)
    assert token.encode() not in (api_server.home / "airflow.db").read_bytes()


def test_airflow_connection_form_carries_the_plugin_fields(api_server: ApiServer) -> None:
    # What the Airflow UI's "Add connection" form is built from.
    with api_server.client() as c:
        r = c.get("/ui/connections/hook_meta")
    assert r.status_code == 200, r.text
    meta = {m["connection_type"]: m for m in r.json()}
    sample = meta["hissuno_sample"]
    assert sample["hook_name"] and "Sample" in sample["hook_name"]
    extra = sample["extra_fields"]
    assert {"workspace", "epoch", "every_seconds"} <= set(extra), extra
    from hissuno_airflow import registry

    labels = {f.id: f.label for f in registry.get_plugin("sample").auth.fields}
    assert {name: extra[name]["schema"]["title"] for name in labels} == labels
