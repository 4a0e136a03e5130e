"""Connecting Jira Cloud end to end: Atlassian 3LO from the Integrations page's routes and from
``hissuno connect`` (a subprocess, loopback redirect), against the fake of ``tests/fakes/jira.py``;
a revoked grant shown as "reconnect needed" on the CLI and the page, and Reconnect keeping the
connection's streams and cursors; the ``projects`` and ``issueTypes`` handlers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream, list_instances
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes import jira as fakes
from tests.fakes.jira import ENG_A, ENG_B, SITE_A, SITE_B, FakeJira
from tests.fixtures.cli import standalone_env
from tests.fixtures.web import Web, count


@pytest.fixture
def fake(serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> FakeJira:
    return fakes.serve(monkeypatch, serve_fake, 6)


def _browser(url: str) -> str:
    """The user at Atlassian: consents (the fake answers at once); returns where it redirects."""
    r = httpx.get(url, follow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def _web_connect(web: Web, body: dict[str, Any] | None = None) -> dict[str, list[str]]:
    r = web.client.post("/api/plugins/jira/connect", json=body or {})
    assert r.status_code == 200, r.text
    location = _browser(r.json()["authorize_url"])
    back = httpx.get(location, cookies={"hissuno_token": web.client.headers["Authorization"][7:]},
                     follow_redirects=False, timeout=30)
    assert back.status_code == 302, back.text
    return parse_qs(urlsplit(back.headers["Location"]).query)


# -- the Integrations page's routes ------------------------------------------------------------------


def test_web_connect_asks_atlassian_3lo_and_stores_the_account_encrypted(web: Web, fake: FakeJira) -> None:
    r = web.client.post("/api/plugins/jira/connect", json={})
    q = parse_qs(urlsplit(r.json()["authorize_url"]).query)
    assert q["audience"] == ["api.atlassian.com"] and q["prompt"] == ["consent"] and q["response_type"] == ["code"]
    assert q["scope"] == ["read:jira-work read:jira-user offline_access"]  # space-separated, offline_access
    assert q["redirect_uri"][0].endswith("/hissuno/api/plugins/oauth/jira/callback")
    assert r.json()["authorize_url"].startswith(fake.url + "/authorize?")

    back = _web_connect(web)
    assert back.get("connected") == ["1"], back
    row = repo.get_connection(web.store, back["connection"][0])
    assert row.external_account_id == fakes.USER["accountId"] and row.account_label == "Ada Atlas (acme, beta-labs)"
    assert [s["name"] for s in row.settings["sites"]] == ["acme", "beta-labs"]
    creds = load_credentials(web.store, row)
    assert creds["access_token"] in fake.token_accounts and creds["refresh_token"] in fake.refresh_tokens
    assert fake.exchanges == 1 and fake.requests_to("/oauth/token/accessible-resources")[0].bearer_token == \
        creds["access_token"]
    # The code went to Atlassian as a JSON body with the client credentials in it (no Basic header, no query).
    [grant] = fakes.token_grants(fake)
    assert grant == {"grant_type": "authorization_code", "code": grant["code"], "redirect_uri": q["redirect_uri"][0],
                     "client_id": fake.client_id, "client_secret": fake.client_secret} and grant["code"]
    with web.store.connection() as c:
        enc = bytes(c.execute("SELECT credentials_enc FROM integration_connections WHERE id = %s",
                              (row.id,)).fetchone()["credentials_enc"])
    assert creds["access_token"].encode() not in enc and creds["refresh_token"].encode() not in enc
    # The page's instance picker offers every project of both sites.
    listed = web.client.get(f"/api/plugins/jira/{row.id}/instances/issues").json()["instances"]
    assert {i["id"] for i in listed} == {f"{SITE_A['id']}/ENG", f"{SITE_A['id']}/OPS", f"{SITE_B['id']}/ENG"}
    # Connecting the same Atlassian account again needs the connection named (Reconnect).
    assert _web_connect(web).get("error") == ["account_exists"]
    assert count(web.store, "integration_connections") == 1


def test_the_fake_token_endpoint_takes_only_a_json_body(fake: FakeJira) -> None:
    """As Atlassian documents it (providers.md §4.1): the same refresh grant form-encoded is an OAuth
    ``invalid_request`` and leaves the refresh token alive; as JSON it is granted."""
    rt = fake.seed_refresh_token("rt-seeded")
    grant = {"grant_type": "refresh_token", "client_id": fake.client_id, "client_secret": fake.client_secret,
             "refresh_token": rt}
    form = httpx.post(fake.url + "/oauth/token", data=grant, timeout=10)
    assert form.status_code == 400 and form.json()["error"] == "invalid_request", form.text
    assert rt in fake.refresh_tokens and fake.refreshes == 0
    answer = httpx.post(fake.url + "/oauth/token", json=grant, timeout=10)
    assert answer.status_code == 200 and answer.json()["access_token"] and fake.refreshes == 1, answer.text


def test_a_grant_without_jira_sites_is_refused_and_saves_nothing(web: Web, fake: FakeJira) -> None:
    fake.granted = [fakes.CONFLUENCE["id"]]
    back = _web_connect(web)
    assert back.get("error") == ["provider_auth"] and "connected" not in back
    assert count(web.store, "integration_connections") == 0


def test_projects_and_issue_types_handlers(web: Web, fake: FakeJira) -> None:
    cid = _web_connect(web)["connection"][0]
    projects = web.client.get(f"/api/plugins/jira/{cid}/projects").json()["projects"]
    assert [(p["site"], p["key"], p["name"]) for p in projects] == [
        ("acme", "ENG", "Engineering"), ("acme", "OPS", "Operations"), ("beta-labs", "ENG", "Beta Engineering")]
    only_b = web.client.get(f"/api/plugins/jira/{cid}/projects", params={"cloud_id": SITE_B["id"]}).json()
    assert [p["key"] for p in only_b["projects"]] == ["ENG"]

    r = web.client.get(f"/api/plugins/jira/{cid}/issueTypes", params={"projectKey": "ENG", "cloud_id": SITE_A["id"]})
    assert r.status_code == 200, r.text
    assert [t["name"] for t in r.json()["issueTypes"]] == ["Bug", "Story", "Task"]
    assert set(r.json()["issueTypes"][0]) == {"id", "name", "description", "subtask", "iconUrl"}
    missing = web.client.get(f"/api/plugins/jira/{cid}/issueTypes")
    assert missing.status_code == 400 and "projectKey" in missing.text
    ambiguous = web.client.get(f"/api/plugins/jira/{cid}/issueTypes", params={"projectKey": "ENG"})
    assert ambiguous.status_code == 400 and "several sites" in ambiguous.text
    assert web.client.get("/api/plugins/jira/projects").status_code == 400  # needs a connection


# -- hissuno connect, a revoked grant, Reconnect -----------------------------------------------------


@pytest.fixture
def hissuno(store: Any, database_url: str, tmp_path: Any, fake: FakeJira) -> Iterator[Any]:
    """``hissuno ...`` as a subprocess against the test store and the fake."""
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_JIRA_API_URL": fake.url, "HISSUNO_JIRA_AUTH_URL": fake.url,
           "JIRA_CLIENT_ID": fake.client_id, "JIRA_CLIENT_SECRET": fake.client_secret}
    procs: list[subprocess.Popen[str]] = []

    def run(*args: str, browser: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "hissuno_airflow.cli", *args]
        if not browser:
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stderr is not None
        err = ""
        for line in proc.stderr:
            err += line
            if line.startswith("http"):
                break
        else:
            raise AssertionError(f"no authorize URL printed:\n{err}")
        page = httpx.get(_browser(line.strip()), timeout=60)
        assert page.status_code == 200 and "Connected" in page.text, page.text
        out, rest = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err + rest)

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def test_cli_connect_sync_revoked_grant_and_reconnect_keeps_streams_and_cursors(
        hissuno: Any, store: Any, fake: FakeJira, web: Web) -> None:
    out = hissuno("connect", "jira", "--json", browser=True)
    assert out.returncode == 0, out.stderr
    cid = json.loads(out.stdout)["connection_id"]
    creds = load_credentials(store, repo.get_connection(store, cid))
    assert creds["access_token"] not in out.stdout + out.stderr and creds["refresh_token"] not in out.stderr

    # Enabling and the first syncs are the other CLI tests' subject: in process here (each subprocess costs seconds).
    offered = {f"issues:{i.id}" for i in list_instances(store, cid, "issues")}
    assert {ENG_A, ENG_B} < offered
    for sid, n in ((ENG_A, 6), (ENG_B, 3)):
        enable_stream(store, cid, sid)
        first = run_stream_sync(cid, sid, store=store)
        assert first.status == "success" and first.counts["synced"] == n
    cursor = repo.get_stream(store, cid, ENG_A).last_sync_at

    # The user revokes the app at Atlassian: the grant's tokens die.
    live = load_credentials(store, repo.get_connection(store, cid))
    fake.revoke_token(live["refresh_token"])
    fake.revoke_token(live["access_token"])
    failed = run_stream_sync(cid, ENG_A, store=store)
    assert failed.status == "error" and failed.error_code == "provider_auth" and not failed.retriable
    assert f"hissuno connect jira --update {cid}" in (failed.error or "")
    listing = hissuno("connections").stdout
    assert f"RECONNECT NEEDED (hissuno connect jira --update {cid})" in listing
    # The page's data says so too.
    entry = next(c for c in web.client.get("/api/connections").json()["connections"] if c["id"] == cid)
    assert entry["needs_reconnect"] is True and live["refresh_token"] not in json.dumps(entry)

    again = hissuno("connect", "jira", "--update", cid, "--json", browser=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["connection_id"] == cid
    assert count(store, "integration_connections") == 1
    assert not repo.get_connection(store, cid).needs_reconnect
    assert {s.stream_id for s in repo.list_streams(store, cid)} == {ENG_A, ENG_B}
    assert repo.get_stream(store, cid, ENG_A).last_sync_at == cursor
    after = run_stream_sync(cid, ENG_A, store=store)
    assert after.status == "success" and after.counts["synced"] == 0 and after.cursor_before == cursor


def test_web_reconnect_restores_a_revoked_connection(web: Web, fake: FakeJira) -> None:
    fake.granted = [SITE_A["id"]]  # the user consented to one site first
    cid = _web_connect(web)["connection"][0]
    assert [s["name"] for s in repo.get_connection(web.store, cid).settings["sites"]] == ["acme"]
    repo.update_connection(web.store, cid, settings={"webhook_secret": "s3cret-for-jira-hooks"})
    enable_stream(web.store, cid, ENG_A)
    assert run_stream_sync(cid, ENG_A, store=web.store).status == "success"
    cursor = repo.get_stream(web.store, cid, ENG_A).last_sync_at
    live = load_credentials(web.store, repo.get_connection(web.store, cid))
    fake.revoke_token(live["refresh_token"])
    fake.revoke_token(live["access_token"])
    assert run_stream_sync(cid, ENG_A, store=web.store).error_code == "provider_auth"
    assert web.client.get(f"/api/plugins/jira/{cid}").json()["needs_reconnect"] is True

    fake.granted = [SITE_A["id"], SITE_B["id"]]  # and adds the second site on the consent screen of Reconnect
    back = _web_connect(web, {"connection_id": cid})
    assert back.get("connected") == ["1"] and back["connection"] == [cid]
    row = repo.get_connection(web.store, cid)
    assert not row.needs_reconnect and repo.get_stream(web.store, cid, ENG_A).last_sync_at == cursor
    assert row.account_label == "Ada Atlas (acme, beta-labs)" and row.settings["webhook_secret"]
    listed = web.client.get(f"/api/plugins/jira/{cid}/instances/issues").json()["instances"]
    assert f"{SITE_B['id']}/ENG" in {i["id"] for i in listed}
    assert run_stream_sync(cid, ENG_A, store=web.store).status == "success"
