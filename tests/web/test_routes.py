"""GitHub App and custom connect legs, management routes, custom handlers, SSE framing, error rendering."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.store import connections as repo
from tests.fixtures.web import ADMIN_TOKEN, Web, count


def _back(web: Web, url: str) -> dict[str, list[str]]:
    r = httpx.get(url, cookies={"hissuno_token": ADMIN_TOKEN}, follow_redirects=False)
    assert r.status_code == 302, r.text
    return parse_qs(urlsplit(r.headers["Location"]).query)


def test_github_app_install_and_return(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    assert web.client.post("/api/plugins/webapp/connect", json={}).json()["error"] == "not_configured"
    monkeypatch.setenv("WEBAPP_SLUG", "hissuno-test")
    monkeypatch.setenv("HISSUNO_WEBAPP_WEB_URL", "https://github.example")
    r = web.client.post("/api/plugins/webapp/connect", json={})
    url = r.json()["authorize_url"]
    assert url.startswith("https://github.example/apps/hissuno-test/installations/new?state=")
    state = parse_qs(urlsplit(url).query)["state"][0]
    cb = f"{web.url}/api/plugins/oauth/webapp/callback"
    assert _back(web, f"{cb}?installation_id=abc&state={state}").get("error") == ["invalid_input"]
    # The state was consumed by the failed attempt: a fresh one is needed.
    state = parse_qs(urlsplit(web.client.post("/api/plugins/webapp/connect", json={}).json()["authorize_url"]).query)["state"][0]
    back = _back(web, f"{cb}?installation_id=4242&setup_action=install&state={state}")
    assert back.get("connected") == ["1"], back
    row = repo.get_connection(web.store, back["connection"][0])
    assert row.external_account_id == "inst-4242"
    assert load_credentials(web.store, row) == {"installation_id": 4242, "app": "webapp"}
    # The same installation again, as a new connection: refused, naming the existing one.
    state = parse_qs(urlsplit(web.client.post("/api/plugins/webapp/connect", json={}).json()["authorize_url"]).query)["state"][0]
    again = _back(web, f"{cb}?installation_id=4242&setup_action=update&state={state}")
    assert again.get("error") == ["account_exists"] and again.get("existing") == [row.id], again
    # Naming the connection (carried in the signed state) updates it.
    start = web.client.post("/api/plugins/webapp/connect", json={"connection_id": row.id}).json()
    state = parse_qs(urlsplit(start["authorize_url"]).query)["state"][0]
    back = _back(web, f"{cb}?installation_id=4242&setup_action=update&state={state}")
    assert back.get("connected") == ["1"] and back["connection"] == [row.id], back
    assert count(web.store, "integration_connections") == 1


def test_custom_connect_reads_body_and_has_a_return_leg(web: Web) -> None:
    direct = web.client.post("/api/plugins/webcustom/connect", content=json.dumps({"token": "abcd-1234"}),
                             headers={"Content-Type": "application/json"})
    assert direct.status_code == 200 and direct.json()["account_label"] == "Direct token"
    # multi_instance=False: a second, different account is refused.
    start = web.client.post("/api/plugins/webcustom/connect", json={"workspace": "blue"}).json()
    state = parse_qs(urlsplit(start["authorize_url"]).query)["state"][0]
    r = httpx.get(f"{web.url}/api/plugins/webcustom/connect/callback?state={state}&code=c0de",
                  cookies={"hissuno_token": ADMIN_TOKEN}, follow_redirects=False)
    assert r.status_code == 409 and r.json()["field"] == "plugin_id"
    assert count(web.store, "integration_connections") == 1
    # After disconnecting, the return leg connects and lands back on the page.
    cid = direct.json()["connection_id"]
    assert web.client.delete(f"/api/plugins/webcustom/{cid}").json() == {"success": True}
    start = web.client.post("/api/plugins/webcustom/connect", json={"workspace": "blue"}).json()
    state = parse_qs(urlsplit(start["authorize_url"]).query)["state"][0]
    back = _back(web, f"{web.url}/api/plugins/webcustom/connect/callback?state={state}&code=c0de")
    assert back.get("connected") == ["1"]
    blue = back["connection"][0]
    # The same account again, without naming the connection: 409 naming it; the stored code stays.
    start = web.client.post("/api/plugins/webcustom/connect", json={"workspace": "blue"}).json()
    state2 = parse_qs(urlsplit(start["authorize_url"]).query)["state"][0]
    r = httpx.get(f"{web.url}/api/plugins/webcustom/connect/callback?state={state2}&code=other",
                  cookies={"hissuno_token": ADMIN_TOKEN}, follow_redirects=False)
    assert r.status_code == 409 and r.json()["error"] == "account_exists" and blue in r.json()["message"]
    assert load_credentials(web.store, repo.get_connection(web.store, blue)) == {"code": "c0de"}
    # Started with ?connection_id= (the intent rides in the plugin's signed state), the return leg updates it.
    start = web.client.post("/api/plugins/webcustom/connect", params={"connection_id": blue},
                            json={"workspace": "blue"}).json()
    state3 = parse_qs(urlsplit(start["authorize_url"]).query)["state"][0]
    assert _back(web, f"{web.url}/api/plugins/webcustom/connect/callback?state={state3}&code=c0de2")["connection"] == [blue]
    assert load_credentials(web.store, repo.get_connection(web.store, blue)) == {"code": "c0de2"}
    assert count(web.store, "integration_connections") == 1
    # Replaying the return leg is refused.
    r = httpx.get(f"{web.url}/api/plugins/webcustom/connect/callback?state={state3}&code=c0de2",
                  cookies={"hissuno_token": ADMIN_TOKEN}, follow_redirects=False)
    assert r.status_code == 400 and r.json()["field"] == "state"


def test_custom_return_leg_is_bound_to_the_user_who_started_it(web: Web) -> None:
    """A state started by the admin cannot be finished by an anonymous request (or anyone else) holding the
    URL: 401 user_mismatch, nothing written, and the rightful user's state is not used up by the attempt."""
    start = web.client.post("/api/plugins/webcustom/connect", json={"workspace": "green"}).json()
    state = parse_qs(urlsplit(start["authorize_url"]).query)["state"][0]
    url = f"{web.url}/api/plugins/webcustom/connect/callback?state={state}&code=stolen"
    r = httpx.get(url, follow_redirects=False)  # anonymous: no token, no cookie
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "user_mismatch" and r.json()["field"] == "state"
    assert count(web.store, "integration_connections") == 0
    back = _back(web, f"{web.url}/api/plugins/webcustom/connect/callback?state={state}&code=mine")
    assert back.get("connected") == ["1"]
    assert load_credentials(web.store, repo.get_connection(web.store, back["connection"][0])) == {"code": "mine"}


def test_custom_direct_save_of_a_connected_account_needs_the_connection_named(web: Web) -> None:
    first = web.client.post("/api/plugins/webcustom/connect", json={"token": "abcd-1111"})
    cid = first.json()["connection_id"]
    again = web.client.post("/api/plugins/webcustom/connect", json={"token": "abcd-2222"})
    assert again.status_code == 409 and again.json()["connection"] == {"id": cid, "account_label": "Direct token"}
    assert load_credentials(web.store, repo.get_connection(web.store, cid)) == {"token": "abcd-1111"}
    upd = web.client.post("/api/plugins/webcustom/connect", params={"connection_id": cid}, json={"token": "abcd-2222"})
    assert upd.status_code == 200 and upd.json()["connection_id"] == cid and upd.json()["created"] is False
    assert load_credentials(web.store, repo.get_connection(web.store, cid)) == {"token": "abcd-2222"}
    assert web.client.post("/api/plugins/webcustom/connect", params={"connection_id": "webcustom_nope"},
                           json={"token": "abcd-2222"}).status_code == 404


def test_custom_handlers_plugin_and_connection_level(web: Web) -> None:
    echo = web.client.post("/api/plugins/webcustom/echo", json={"a": 1})
    assert echo.status_code == 202 and echo.json() == {"method": "POST", "body": {"a": 1}}
    needs = web.client.get("/api/plugins/webcustom/teams")
    assert needs.status_code == 400 and needs.json()["field"] == "connection_id"
    cid = web.client.post("/api/plugins/webcustom/connect", json={"token": "zzzz-1"}).json()["connection_id"]
    teams = web.client.get(f"/api/plugins/webcustom/{cid}/teams", params={"q": "x"})
    assert teams.json() == {"teams": [{"id": "t1"}], "connection_id": cid, "query": {"q": "x"}, "has_credentials": True}
    assert web.client.get(f"/api/plugins/webcustom/{cid}/nope").status_code == 404
    assert web.anon.get(f"/api/plugins/webcustom/{cid}/teams").status_code == 401
    boom = web.client.get("/api/plugins/webcustom/boom")
    assert boom.status_code == 500 and boom.json() == {"error": "internal_error", "field": None,
                                                       "message": "an internal error occurred"}
    assert "secret-value-xyz" not in boom.text


def test_connection_patch_delete_never_return_credentials(web: Web) -> None:
    cid = web.client.post("/api/plugins/webcustom/connect", json={"token": "tttt-secret"}).json()["connection_id"]
    r = web.client.patch(f"/api/plugins/webcustom/{cid}", json={"account_label": "Renamed",
                                                                "settings": {"webhook_secret": "whs-abcdef", "x": 1}})
    assert r.status_code == 200
    body = r.json()
    assert body["account_label"] == "Renamed" and body["settings"]["x"] == 1
    assert body["settings"]["webhook_secret"] == "***" and body["has_webhook_secret"] is True
    listed = web.client.get("/api/connections").text
    assert "tttt-secret" not in listed and "whs-abcdef" not in listed
    assert web.client.patch(f"/api/plugins/webcustom/{cid}", json={"account_label": ""}).json()["field"] == "account_label"
    assert web.client.patch(f"/api/plugins/webcustom/{cid}", content=b"[").json()["field"] == "body"
    assert web.client.get("/api/plugins/webkey/" + cid).status_code == 404  # another plugin's connection
    assert web.client.delete(f"/api/plugins/webcustom/{cid}").status_code == 200
    assert web.client.get(f"/api/plugins/webcustom/{cid}").status_code == 404
    assert count(web.store, "integration_connections") == 0


def _sample(web: Web) -> str:
    return str(web.client.post("/api/plugins/sample/connect", json={"credentials": {"workspace": "w1"}}).json()["connection_id"])


def test_stream_rows_are_validated(web: Web) -> None:
    cid = _sample(web)
    base = f"/api/plugins/sample/{cid}/streams"
    cases = [
        ({"stream_key": "nope"}, "stream_key"),
        ({"stream_key": "sessions", "frequency": "2h"}, "frequency"),
        ({"stream_key": "sessions", "frequency": "webhook"}, "frequency"),
        ({"stream_key": "sessions", "filters": {"size": 0}}, "filters.size"),
        ({"stream_key": "sessions", "filters": {"size": "many"}}, "filters.size"),
        ({"stream_key": "sessions", "filters": []}, "filters"),
        ({"stream_key": "sessions", "enabled": "yes"}, "enabled"),
        ({"stream_key": "knowledge"}, "instance_id"),
        ({"stream_key": "sessions", "instance_id": "x"}, "instance_id"),
        ({"stream_key": "knowledge", "instance_id": "help-center", "settings": {"origin": 5}}, "settings.origin"),
    ]
    for body, field in cases:
        r = web.client.post(base, json=body)
        assert r.status_code == 400 and r.json()["field"] == field, (body, r.text)
    assert count(web.store, "integration_streams") == 0
    ok = web.client.post(base, json={"stream_key": "knowledge", "instance_id": "help-center", "frequency": "24h",
                                     "filters": {"size": 5}})
    assert ok.status_code == 200, ok.text
    row = ok.json()
    assert row["stream_id"] == "knowledge:help-center" and row["frequency"] == "24h"
    # Standalone (hissuno serve) there is no DAG to link to; the Airflow host names one (api-server test).
    assert row["filter_config"]["size"] == 5 and row["settings"] == {} and row["dag_id"] is None
    inst = web.client.get(f"/api/plugins/sample/{cid}/instances/knowledge").json()["instances"]
    assert any(i["id"] == "help-center" for i in inst)
    listing = web.client.get(base).json()
    assert {c["key"] for c in listing["catalog"]} >= {"sessions", "knowledge"}
    assert [s["stream_id"] for s in listing["streams"]] == ["knowledge:help-center"]
    assert web.client.delete(base, params={"stream_id": "knowledge:help-center"}).json() == {"success": True}
    assert web.client.delete(base, params={"stream_id": "knowledge:help-center"}).status_code == 404
    assert web.client.delete(base).json()["field"] == "stream_id"


def test_unknown_filter_and_settings_keys_are_400_naming_them(web: Web) -> None:
    cid = _sample(web)
    base = f"/api/plugins/sample/{cid}/streams"
    cases = [
        ({"stream_key": "sessions", "filters": {"size": 5, "bogus": 1}}, "filters.bogus", "expected fail_after, from_date, size"),
        ({"stream_key": "knowledge", "instance_id": "help-center", "settings": {"orign": "x"}}, "settings.orign",
         "expected origin"),
        ({"stream_key": "sessions", "settings": {"x": 1}}, "settings.x", "stream 'sessions' takes no settings"),
    ]
    for body, field, expected in cases:
        r = web.client.post(base, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["field"] == field and f"{field}: unknown field; {expected}" in r.json()["message"], r.text
    assert count(web.store, "integration_streams") == 0


def test_sync_sse_framing(web: Web) -> None:
    cid = _sample(web)
    web.client.post(f"/api/plugins/sample/{cid}/streams", json={"stream_key": "issues", "filters": {"size": 12}})
    assert web.client.get(f"/api/plugins/sample/{cid}/sync").json()["field"] == "stream_id"
    assert web.client.get(f"/api/plugins/sample/{cid}/sync", params={"stream_id": "contacts"}).status_code == 404
    with web.client.stream("GET", f"/api/plugins/sample/{cid}/sync", params={"stream_id": "issues"}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache, no-transform"
        raw = resp.read().decode()
    frames = [f for f in raw.split("\n\n") if f.strip()]
    assert all(f.startswith("event: message\ndata: ") for f in frames)
    events = [json.loads(f.split("data: ", 1)[1]) for f in frames]
    assert events[0]["type"] == "connected"
    assert events[-1]["type"] == "complete" and events[-1]["data"]["status"] == "success"
    assert any(e["type"] == "found" and e["total"] == 12 for e in events)
    counts = events[-1]["data"]["counts"]
    assert counts["found"] == 12 and counts["synced"] + counts["skipped"] == 12
    assert events[-1]["message"].startswith(f"{counts['synced']} synced")


def test_run_history_route(web: Web) -> None:
    cid = _sample(web)
    web.client.post(f"/api/plugins/sample/{cid}/streams", json={"stream_key": "issues", "filters": {"size": 4}})
    with web.client.stream("GET", f"/api/plugins/sample/{cid}/sync", params={"stream_id": "issues"}) as resp:
        last = [f for f in resp.read().decode().split("\n\n") if f.strip()][-1]
    counts = json.loads(last.split("data: ", 1)[1])["data"]["counts"]
    runs = web.client.get(f"/api/plugins/sample/{cid}/runs").json()["runs"]
    assert [(r["stream_id"], r["status"], r["counts"]) for r in runs] == [("issues", "success", counts)]
    assert counts["synced"] > 0
    assert web.client.get(f"/api/plugins/sample/{cid}/runs", params={"status": "error"}).json() == {"runs": [], "total": 0}
    assert web.client.get(f"/api/plugins/sample/{cid}/runs", params={"limit": "x"}).json()["field"] == "limit"
    assert web.client.get(f"/api/plugins/sample/{cid}/runs", params={"status": "meh"}).json()["field"] == "status"
    assert web.anon.get(f"/api/plugins/sample/{cid}/runs").status_code == 401


def test_sync_failure_is_an_error_event(web: Web) -> None:
    cid = _sample(web)
    web.client.post(f"/api/plugins/sample/{cid}/streams", json={"stream_key": "sessions",
                                                                "filters": {"size": 10, "fail_after": 3}})
    with web.client.stream("GET", f"/api/plugins/sample/{cid}/sync", params={"stream_id": "sessions"}) as resp:
        raw = resp.read().decode()
    last = json.loads([f for f in raw.split("\n\n") if f.strip()][-1].split("data: ", 1)[1])
    assert last["type"] == "error" and "503" in last["message"]


def test_unknown_routes_and_plugins_are_json_404(web: Web) -> None:
    r = web.client.get("/api/plugins/nope")
    assert r.status_code == 404 and r.json()["error"] == "unknown_plugin"
    r = web.client.get("/api/nothing/here")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    page = web.anon.get("/")
    assert page.status_code == 200 and "marketplace.js" in page.text


def test_serve_main_is_importable() -> None:
    from hissuno_airflow.web.serve import main

    assert callable(main)


def test_airflow_plugin_module_is_import_light() -> None:
    import subprocess
    import sys

    code = ("import sys; import hissuno_airflow.airflow_plugin as p; "
            "bad=[m for m in ('flask','psycopg','a2wsgi','authlib','hissuno_airflow.store.db') if m in sys.modules]; "
            "assert not bad, bad; assert p.HissunoPlugin.fastapi_apps[0]['url_prefix'] == '/hissuno'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_any_credentials_value_types_are_refused(web: Web) -> None:
    r = web.client.post("/api/plugins/sample/connect", json={"credentials": {"workspace": {"a": 1}}})
    assert r.status_code == 400 and r.json()["field"] == "credentials.workspace"
    r = web.client.post("/api/plugins/sample/connect", json={"credentials": "x"})
    assert r.status_code == 400 and r.json()["field"] == "credentials"
    assert count(web.store, "integration_connections") == 0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("WEBAPP_SLUG", raising=False)
    yield


@pytest.mark.parametrize("mode", ["airflow", "serve"])
def test_sync_now_of_a_stream_that_is_not_enabled_is_a_409_and_writes_nothing(store: Any, mode: str,
                                                                             page_mode: Any) -> None:
    from hissuno_airflow.web.app import create_app
    from tests.fixtures.web import register_test_plugins

    register_test_plugins()
    page_mode(mode)
    app = create_app(authenticate=lambda req: "tester", store=store, url_prefix="/hissuno")
    client = app.test_client()
    cid = client.post("/hissuno/api/plugins/sample/connect", json={"credentials": {"workspace": "w1"}}).get_json()
    cid = cid["connection_id"]
    client.post(f"/hissuno/api/plugins/sample/{cid}/streams", json={"stream_key": "issues", "enabled": False,
                                                                    "filters": {"size": 3}})
    before = repo.get_stream(store, cid, "issues")
    r = client.get(f"/hissuno/api/plugins/sample/{cid}/sync", query_string={"stream_id": "issues"})
    assert r.status_code == 409 and r.mimetype == "application/json", r.data[:300]
    body = r.get_json()
    assert body["error"] == "stream_not_enabled" and body["field"] == "stream_id"
    assert body["message"] == (f"stream_id: stream 'issues' is not enabled on connection {cid!r}; "
                               "enable it first, then sync")
    # A stream with no row at all: the same plain answer, still a 404 (nothing by that id exists).
    r = client.get(f"/hissuno/api/plugins/sample/{cid}/sync", query_string={"stream_id": "contacts"})
    assert r.status_code == 404 and "enable it first" in r.get_json()["message"]
    assert repo.get_stream(store, cid, "issues") == before
    assert [s.stream_id for s in repo.list_streams(store, cid)] == ["issues"]
    assert count(store, "integration_sync_runs") == 0


def test_paging_numbers_out_of_range_are_refused_by_name(web):
    # Found by the hypothesis fault test: an offset past PostgreSQL's bigint answered 500.
    cid = web.client.post("/api/plugins/sample/connect", json={"credentials": {"workspace": "pages"}}).json()["connection_id"]
    for path in (f"/api/plugins/sample/{cid}/runs", "/api/connections"):
        for bad in ("99999999999999999999", "²", "-1", "1e3"):
            r = web.client.get(path, params={"limit": "10", "offset": bad})
            assert r.status_code == 400 and r.json()["field"] == "offset", (path, bad, r.text[:200])
        assert web.client.get(path, params={"limit": "10", "offset": str(2**31 - 1)}).status_code == 200
    for bad in ("²", "99999999999999999999"):
        r = web.client.get(f"/api/plugins/sample/{cid}/errors", params={"limit": bad})
        assert r.status_code == 400 and r.json()["field"] == "limit", (bad, r.text[:200])
