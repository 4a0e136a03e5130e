"""The ``notion`` plugin end to end: connect, sync, webhooks and custom handlers against the stateful fake of
``tests/fakes/notion.py`` on 127.0.0.1, into the real store, through the real web routes and the real CLI.

Every HTTP client's retries and the 3-requests-a-second pacing run on the fake's clock: waits are
asserted, not taken.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow.kit import ProviderAuthError
from hissuno_airflow.kit.http.ratelimit import RateBudget
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes import notion as nf
from tests.fakes.notion import FIELD_MAPPING, T0, Notion
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer
from tests.fixtures.cli import standalone_env
from tests.fixtures.fakes import retries_on
from tests.fixtures.web import Web

ROWS = 12


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake's clock; retries and the plugin's pacing (180 a minute, bursts of 3) wait on it."""
    from hissuno_airflow import registry

    plugin = registry.get_plugin("notion")
    assert plugin.rate_limit_per_minute is not None
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock, RateBudget(plugin.rate_limit_per_minute, burst=plugin.rate_limit_burst,
                                              clock=clock.time, sleep=clock.sleep))
    return clock


@pytest.fixture
def fake(serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Notion:
    """Twelve roadmap rows and the handbook tree; Notion's 3 requests a second; block children four a page."""
    fake = nf.serve(monkeypatch, serve_fake, rows=ROWS, clock=clock.time, burst=3, block_page_size=4)
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    return fake


@pytest.fixture
def token(fake: Notion) -> str:
    return fake.issue_internal_token()


@pytest.fixture
def cid(store: Any, fake: Notion, token: str) -> str:
    """A connection by internal token, with the roadmap's issues and the handbook's knowledge enabled."""
    connection_id = nf.connect_token(store, token)
    enable_stream(store, connection_id, f"issues:{fake.roadmap}", settings={"fieldMapping": FIELD_MAPPING})
    enable_stream(store, connection_id, f"knowledge:{fake.handbook}")
    return connection_id


def _rows(store: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    with store.connection() as c:
        return list(c.execute(sql, args).fetchall())


def _issue(store: Any, external_id: str) -> dict[str, Any]:
    (row,) = _rows(store, "SELECT i.*, r.deleted_at AS record_deleted FROM issues i JOIN integration_synced_records r"
                          " ON r.hissuno_id = i.id WHERE r.external_id = %s AND r.hissuno_kind = 'issues'", external_id)
    return row


def _source(store: Any, external_id: str) -> dict[str, Any]:
    (row,) = _rows(store, "SELECT k.*, r.deleted_at AS record_deleted FROM knowledge_sources k"
                          " JOIN integration_synced_records r ON r.hissuno_id = k.id"
                          " WHERE r.external_id = %s AND r.hissuno_kind = 'knowledge'", external_id)
    return row


def _issues_stream(fake: Notion) -> str:
    return f"issues:{fake.roadmap}"


# -- connect -------------------------------------------------------------------------------------------


def test_oauth_and_token_connect_end_in_one_connection_through_the_web_routes(
    web: Web, fake: Notion, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = web.client.post("/api/plugins/notion/connect", json={})
    assert refused.status_code == 503 and "NOTION_CLIENT_ID" in refused.text  # OAuth not configured
    monkeypatch.setenv("NOTION_CLIENT_ID", nf.CLIENT_ID)
    monkeypatch.setenv("NOTION_CLIENT_SECRET", nf.CLIENT_SECRET)
    monkeypatch.setenv("HISSUNO_PUBLIC_URL", web.url)

    started = web.client.post("/api/plugins/notion/connect", json={})
    assert started.status_code == 200, started.text
    url = started.json()["authorize_url"]
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(fake.url + "/v1/oauth/authorize?")
    assert query["owner"] == ["user"] and query["response_type"] == ["code"] and query["client_id"] == [nf.CLIENT_ID]
    assert query["redirect_uri"] == [f"{web.url}/api/plugins/notion/connect/callback"]
    # The user consents at Notion, which redirects back with a code.
    back = httpx.get(url).headers["location"]
    assert back.startswith(f"{web.url}/api/plugins/notion/connect/callback?")
    stranger = web.anon.get(back.replace(web.url, ""))
    assert stranger.status_code == 401 and not repo.list_connections(web.store, plugin_id="notion")
    done = web.client.get(back.replace(web.url, ""))
    assert done.status_code == 302 and "connected=1" in done.headers["location"], done.text
    (conn,) = repo.list_connections(web.store, plugin_id="notion")
    assert (conn.external_account_id, conn.account_label) == (nf.WORKSPACE_ID, nf.WORKSPACE_NAME)
    assert conn.settings["workspaceIcon"] == "🏢"
    (exchange,) = fake.requests_to("/v1/oauth/token")
    assert exchange.basic_auth == (nf.CLIENT_ID, nf.CLIENT_SECRET)
    assert exchange.json() == {"grant_type": "authorization_code", "code": parse_qs(urlsplit(back).query)["code"][0],
                               "redirect_uri": f"{web.url}/api/plugins/notion/connect/callback"}
    # The same return URL again: the state is spent; nothing changes.
    again = web.client.get(back.replace(web.url, ""))
    assert again.status_code >= 400 and "replayed" in again.text
    assert len(repo.list_connections(web.store, plugin_id="notion")) == 1

    # The internal-token path names the same workspace: the same connection, updated only when named.
    dup = web.client.post("/api/plugins/notion/connect", json={"access_token": token})
    assert dup.status_code == 409 and "account_exists" in dup.text, dup.text
    same = web.client.post(f"/api/plugins/notion/connect?connection_id={conn.id}", json={"access_token": token})
    assert same.status_code == 200 and same.json()["connection_id"] == conn.id, same.text
    assert len(repo.list_connections(web.store, plugin_id="notion")) == 1
    # A revoked token is a 400 naming Notion's refusal, and never echoed.
    fake.revoke_token(token)
    bad = web.client.post("/api/plugins/notion/connect", json={"access_token": token})
    assert bad.status_code == 400 and "401" in bad.text and token not in bad.text
    assert web.client.post("/api/plugins/notion/connect", json={"access_token": "nope"}).status_code == 400


def test_a_refused_consent_and_a_bad_client_secret_save_nothing(
    web: Web, fake: Notion, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTION_CLIENT_ID", nf.CLIENT_ID)
    monkeypatch.setenv("NOTION_CLIENT_SECRET", "wrong-secret")
    monkeypatch.setenv("HISSUNO_PUBLIC_URL", web.url)
    url = web.client.post("/api/plugins/notion/connect", json={}).json()["authorize_url"]
    back = httpx.get(url).headers["location"].replace(web.url, "")
    failed = web.client.get(back)
    assert failed.status_code == 400 and "code exchange failed" in failed.text and "wrong-secret" not in failed.text
    url = web.client.post("/api/plugins/notion/connect", json={}).json()["authorize_url"]
    state = parse_qs(urlsplit(url).query)["state"][0]
    denied = web.client.get("/api/plugins/notion/connect/callback", params={"error": "access_denied", "state": state})
    assert denied.status_code == 400 and "access_denied" in denied.text
    assert not repo.list_connections(web.store, plugin_id="notion")


# -- issues --------------------------------------------------------------------------------------------


def test_first_sync_maps_every_row_as_the_reference_and_sends_the_version_header(
    store: Any, fake: Notion, cid: str, token: str, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run_stream_sync(cid, _issues_stream(fake), store=store)
    assert "/v1/databases/" in caplog.text and token not in caplog.text  # per-request debug lines, redacted
    assert result.status == "success", result.error
    assert result.counts["synced"] == ROWS and result.counts["failed"] == 0
    assert len(_rows(store, "SELECT id FROM issues")) == ROWS
    assert all(r.header("notion-version") == "2022-06-28" and r.bearer_token == token
               for r in fake.requests if r.path.startswith("/v1/") and "/oauth/" not in r.path)
    rows = list(fake.pages)[:ROWS]
    # Row i: Type cycles Bug/Feature/Improvement/'' -> bug (raw), feature_request, change_request (maps),
    # default; Priority High/Low/Urgent -> high, low, high (map); Status -> open (map), in_progress (raw), resolved.
    expect = [("bug", "high", "open"), ("feature_request", "low", "in_progress"),
              ("change_request", "high", "resolved"), ("feature_request", "high", "open")]
    for i, row in enumerate(rows[:4]):
        issue = _issue(store, row["id"])
        assert (issue["type"], issue["priority"], issue["status"]) == expect[i], i
        assert issue["name"] == f"Row {i + 1}"
    first, third = _issue(store, rows[0]["id"]), _issue(store, rows[2]["id"])
    assert first["description"] == "Details of Row 1"
    assert third["description"] == "Row 3: what happened.\n\n- Steps to reproduce"  # no Details: the page content
    assert first["custom_fields"] == {
        "notion_page_id": rows[0]["id"], "notion_url": rows[0]["url"], "notion_database_id": fake.roadmap,
        "tags": ["api", "t0"], "owner": ["Ada"], "due_date": "2026-04-01"}  # Votes is empty on row 1
    assert _issue(store, rows[1]["id"])["custom_fields"]["votes"] == 2


def test_a_second_sync_writes_nothing_and_an_incremental_one_exactly_the_edits(
    store: Any, fake: Notion, cid: str, clock: FakeClock
) -> None:
    sid = _issues_stream(fake)
    first = run_stream_sync(cid, sid, store=store)
    again = run_stream_sync(cid, sid, store=store)
    assert again.status == "success" and again.counts["synced"] == 0 and again.counts["failed"] == 0
    # The cursor's minute is asked again (on_or_after): Notion rounds last_edited_time to the minute.
    assert fake.query_bodies()[-1]["filter"] == {
        "timestamp": "last_edited_time", "last_edited_time": {"on_or_after": "2026-03-02T09:00:00.000Z"}}
    assert first.cursor_after == T0

    clock.advance(300)
    rows = list(fake.pages)[:ROWS]
    fake.edit_row(rows[4]["id"], Status="Done", Name="Row 5 renamed")
    fake.edit_row(rows[7]["id"], Priority="Urgent")
    added = fake.add_row("Row 13", 12)
    third = run_stream_sync(cid, sid, store=store)
    assert third.status == "success" and third.counts["synced"] == 3, third.counts
    assert len(_rows(store, "SELECT id FROM issues")) == ROWS + 1  # updated in place, no duplicates
    renamed = _issue(store, rows[4]["id"])
    assert (renamed["name"], renamed["status"]) == ("Row 5 renamed", "resolved")
    assert _issue(store, added["id"])["name"] == "Row 13"
    assert third.cursor_after == T0 + timedelta(minutes=5)


def test_an_edit_in_the_cursors_minute_is_not_missed(store: Any, fake: Notion, cid: str) -> None:
    sid = _issues_stream(fake)
    assert run_stream_sync(cid, sid, store=store).status == "success"
    row = list(fake.pages)[2]
    fake.edit_row(row["id"], Name="Edited in the same minute")  # same rounded stamp as the cursor
    assert row["last_edited_time"] == "2026-03-02T09:00:00.000Z"
    later = run_stream_sync(cid, sid, store=store)
    assert later.counts["synced"] == 1 and _issue(store, row["id"])["name"] == "Edited in the same minute"


def test_trashed_rows_are_deleted_by_a_full_sync(store: Any, fake: Notion, cid: str, clock: FakeClock) -> None:
    sid = _issues_stream(fake)
    assert run_stream_sync(cid, sid, store=store).status == "success"
    rows = list(fake.pages)[:ROWS]
    fake.trash(rows[0]["id"], archived_alias=False)  # ``in_trash`` alone: ``archived`` is a deprecated alias
    fake.delete_for_good(rows[1]["id"])
    full = run_stream_sync(cid, sid, store=store, plan=SyncPlan(sync_mode="full"))
    assert full.status == "success" and full.counts["deleted"] == 2, full.counts
    assert _issue(store, rows[0]["id"])["deleted_at"] is not None
    assert _issue(store, rows[1]["id"])["deleted_at"] is not None
    assert _issue(store, rows[2]["id"])["deleted_at"] is None


def test_a_run_without_a_title_mapping_fails_naming_it(store: Any, fake: Notion, cid: str) -> None:
    sid = _issues_stream(fake)
    enable_stream(store, cid, sid, settings={"fieldMapping": {"status": "Status"}})
    failed = run_stream_sync(cid, sid, store=store)
    assert failed.status == "error" and "Field mapping requires at least a title mapping." in (failed.error or "")
    assert not _rows(store, "SELECT id FROM issues")


# -- rate limit and auth -------------------------------------------------------------------------------


def test_three_requests_a_second_paced_without_a_single_429(store: Any, fake: Notion, cid: str,
                                                            clock: FakeClock) -> None:
    clock.advance(1)  # time passes between connecting (one request) and the first sync
    start, refused = clock.now, fake.refusals
    assert run_stream_sync(cid, f"knowledge:{fake.handbook}", store=store).status == "success"
    sent = [r for r in fake.requests if r.path.startswith("/v1/") and r.at >= start]
    assert fake.refusals == refused and len(sent) > 10
    # A bucket of three refilled at three a second: request n (from 1) goes no earlier than (n - 3) / 3 s.
    for n, req in enumerate(sent, start=1):
        assert req.at - start >= (n - 3) / 3 - 1e-6, n
    assert sent[-1].at - start < len(sent) / 3  # and no slower than that


def test_a_429_is_waited_out_as_retry_after_says(store: Any, fake: Notion, cid: str, clock: FakeClock,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    retries_on(monkeypatch, clock, RateBudget(10**6, clock=clock.time, sleep=clock.sleep))  # no pacing
    result = run_stream_sync(cid, f"knowledge:{fake.handbook}", store=store)
    assert result.status == "success" and result.counts["synced"] == 5
    assert fake.refusals > 0 and clock.sleeps.count(1.0) == fake.refusals  # Retry-After: 1, each time


def test_a_revoked_token_marks_the_connection_reconnect_needed(store: Any, fake: Notion, cid: str,
                                                               token: str, clock: FakeClock) -> None:
    sid = _issues_stream(fake)
    assert run_stream_sync(cid, sid, store=store).status == "success"
    fake.revoke_token(token)
    failed = run_stream_sync(cid, sid, store=store)
    assert failed.status == "error" and failed.error_code == ProviderAuthError.code and not failed.retriable
    assert "reconnect needed" in (failed.error or "") and token not in (failed.error or "")
    assert repo.get_connection(store, cid).needs_reconnect


# -- knowledge -----------------------------------------------------------------------------------------


def test_the_page_tree_becomes_embedded_knowledge_in_markdown(store: Any, fake: Notion, cid: str) -> None:
    sid = f"knowledge:{fake.handbook}"
    result = run_stream_sync(cid, sid, store=store)
    assert result.status == "success" and result.counts["synced"] == 5, result.counts
    tree = {fake.handbook, fake.onboarding, fake.first_week, *fake.runbook_rows}
    got = {r["external_id"] for r in _rows(store, "SELECT external_id FROM integration_synced_records"
                                                  " WHERE stream_id = %s", sid)}
    assert got == tree  # child pages and the child database's rows; not the page elsewhere
    handbook = _source(store, fake.handbook)
    assert handbook["status"] == "done" and handbook["type"] == "notion"
    assert _rows(store, "SELECT count(*) AS n FROM knowledge_chunks WHERE source_id = %s", handbook["id"])[0]["n"] > 0
    md = handbook["content"]
    for piece in ("# Welcome", "**Read this first.**", "[Ask in chat](https://chat.acme.test)", "- Be kind",
                  "  - Always", "1. Clone the repo", "- [x] Get a laptop", "- [ ] Meet the team",
                  "<details><summary>Secrets policy</summary>", "Never paste tokens.", "```bash\nmake dev\n```",
                  "> Ship it.", "> 💡 Office closed on Fridays", "---", "![Org chart](https://img.acme.test/org.png)",
                  "[https://acme.test/policies](https://acme.test/policies)", "$$e=mc^2$$", "## Contacts",
                  "`hr@acme.test`", f"**[Onboarding](https://www.notion.so/{fake.onboarding.replace('-', '')})**",
                  "**[Database: Runbooks]**"):
        assert piece in md, piece
    # 17 top-level blocks + 2 children, four a page: the handbook's children took five requests.
    assert fake.count(f"/v1/blocks/{fake.handbook}/children") == 5
    assert _source(store, fake.first_week)["parent_id"] == _source(store, fake.onboarding)["id"]


def test_knowledge_resync_is_free_edits_update_in_place_and_trashed_pages_are_deleted(
    store: Any, fake: Notion, cid: str, clock: FakeClock
) -> None:
    sid = f"knowledge:{fake.handbook}"
    assert run_stream_sync(cid, sid, store=store).status == "success"
    again = run_stream_sync(cid, sid, store=store)
    assert again.counts["synced"] == 0 and again.counts["deleted"] == 0
    clock.advance(120)
    fake.set_blocks(fake.first_week, [nf.block("paragraph", "Now with a checklist.")])
    edited = run_stream_sync(cid, sid, store=store)
    assert edited.counts["synced"] == 1, edited.counts
    assert _source(store, fake.first_week)["content"] == "Now with a checklist."
    # The cursor is now past the handbook's minute: its top-level blocks are read again (to walk the
    # tree), its nested ones (the toggle's) are not: only edited pages are converted.
    toggle = next(b for b in fake.blocks[fake.handbook] if b["type"] == "toggle")
    nested = fake.count(f"/v1/blocks/{toggle['id']}/children")
    assert run_stream_sync(cid, sid, store=store).counts["synced"] == 0
    assert fake.count(f"/v1/blocks/{toggle['id']}/children") == nested
    assert len(_rows(store, "SELECT id FROM knowledge_sources")) == 5
    fake.trash(fake.onboarding)  # its child page leaves the tree with it
    trashed = run_stream_sync(cid, sid, store=store)
    assert trashed.counts["deleted"] == 2, trashed.counts
    assert _source(store, fake.onboarding)["deleted_at"] is not None
    assert _source(store, fake.first_week)["deleted_at"] is not None
    assert _source(store, fake.handbook)["deleted_at"] is None


# -- webhooks ------------------------------------------------------------------------------------------


def test_webhook_handshake_then_signed_events_update_and_delete(web: Web, fake: Notion, cid: str,
                                                                clock: FakeClock) -> None:
    store = web.store
    assert run_stream_sync(cid, _issues_stream(fake), store=store).status == "success"
    assert run_stream_sync(cid, f"knowledge:{fake.handbook}", store=store).status == "success"
    path = f"/api/plugins/webhook/notion/{cid}"
    verification = "secret_" + "v" * 40
    shake = web.anon.post(path, json={"verification_token": verification})
    assert shake.status_code == 200 and verification not in shake.text
    shown = web.client.get(f"/api/plugins/notion/{cid}/webhookVerification").json()
    assert shown == {"received": True, "verification_token": verification}  # to paste into Notion
    assert web.anon.get(f"/api/plugins/notion/{cid}/webhookVerification").status_code == 401
    sign = Signer(fake_scheme()).with_secret(verification)
    now = datetime.now(UTC).timestamp()

    def post(payload: Any, *, signer: Any = sign, ts: float = now, event_id: str = "e") -> httpx.Response:
        d = signer(payload, url=web.url + path, timestamp=ts, event_id=event_id)
        return web.anon.post(path, content=d.body, headers=dict(d.headers))

    def drain() -> None:
        for sid in (_issues_stream(fake), f"knowledge:{fake.handbook}"):
            out = web.client.post(f"/api/plugins/notion/{cid}/events/process", json={"stream_id": sid}).json()
            assert out["failed"] == 0, out

    rows = list(fake.pages)[:ROWS]
    clock.advance(120)
    fake.edit_row(rows[0]["id"], Name="Renamed by webhook")
    event = fake.event("page.properties_updated", rows[0]["id"])
    assert post(event).json()["queued"] == 2  # the issues and knowledge instances each get it
    assert post(event).json()["duplicate"] is True  # a replay is stored once
    # Notion's retry of the same event (same id, next attempt_number): other bytes, still a duplicate.
    assert post({**event, "attempt_number": 2}).json()["duplicate"] is True
    assert post(fake.event("page.properties_updated", rows[1]["id"]), signer=sign.forged()).status_code == 401
    stale = post(fake.event("page.properties_updated", rows[1]["id"]), ts=now - 3600)
    assert stale.status_code == 401
    drain()
    assert _issue(store, rows[0]["id"])["name"] == "Renamed by webhook"
    assert len(_rows(store, "SELECT id FROM knowledge_sources")) == 5  # not in the handbook tree: ignored

    clock.advance(60)
    fake.set_blocks(fake.first_week, [nf.block("heading_2", "Day one")])
    post(fake.event("page.content_updated", fake.first_week))
    post(fake.event("page.deleted", rows[3]["id"]))
    drain()
    assert _source(store, fake.first_week)["content"] == "## Day one"
    assert _issue(store, rows[3]["id"])["deleted_at"] is not None
    assert _issue(store, rows[4]["id"])["deleted_at"] is None


def fake_scheme() -> Any:
    from hissuno_airflow import registry

    return registry.get_plugin("notion").webhook_signature


# -- custom handlers -----------------------------------------------------------------------------------


def test_custom_handlers_list_databases_schema_pages_and_child_pages(web: Web, fake: Notion, cid: str) -> None:
    base = f"/api/plugins/notion/{cid}"
    dbs = web.client.get(f"{base}/databases").json()["databases"]
    assert {d["title"] for d in dbs} == {"Roadmap", "Runbooks"}
    schema = web.client.get(f"{base}/databaseSchema", params={"databaseId": fake.roadmap}).json()["database"]
    assert schema["id"] == fake.roadmap and "Priority" in schema["properties"]
    missing = web.client.get(f"{base}/databaseSchema")
    assert missing.status_code == 400 and "databaseId" in missing.text
    pages = web.client.get(f"{base}/pages", params={"query": "hand"}).json()
    assert [p["title"] for p in pages["pages"]] == ["Handbook"] and pages["hasMore"] is False
    children = web.client.get(f"{base}/childPages", params={"pageId": fake.handbook}).json()["pages"]
    assert children == [{"id": fake.onboarding, "title": "Onboarding"}]
    instances = web.client.get(f"{base}/instances/issues").json()
    assert {i["id"] for i in instances["instances"]} == {fake.roadmap, fake.runbooks}
    assert web.anon.get(f"{base}/databases").status_code == 401


# -- CLI -----------------------------------------------------------------------------------------------


def test_connect_sync_and_reconnect_needed_through_the_cli(store: Any, serve_fake: Any, database_url: str,
                                                          tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real time here: the CLI is another process; keep the dataset small.
    fake = nf.serve(monkeypatch, serve_fake, rows=4, clock=FakeClock(T0.timestamp()).time)
    token = fake.issue_internal_token()
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_NOTION_API_URL": fake.url + "/v1",
           "HISSUNO_NOTION_AUTH_URL": fake.url + "/v1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    oauth = cli("connect", "notion", "--json")  # no token: the OAuth path, to finish in a browser
    assert oauth.returncode != 0 and "NOTION_CLIENT_ID" in oauth.stderr and "Traceback" not in oauth.stderr
    env.update(NOTION_CLIENT_ID=nf.CLIENT_ID, NOTION_CLIENT_SECRET=nf.CLIENT_SECRET,
               HISSUNO_PUBLIC_URL="https://hissuno.example/hissuno")
    url = json.loads(cli("connect", "notion", "--json").stdout)["authorize_url"]
    assert url.startswith(fake.url + "/v1/oauth/authorize?") and "owner=user" in url
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["https://hissuno.example/hissuno/api/plugins/notion/connect/callback"]
    bad = cli("connect", "notion", "--set", "access_token=ntn_unknown", "--json")
    assert bad.returncode != 0 and "401" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    made = cli("connect", "notion", "--set", f"access_token={token}", "--json")
    assert made.returncode == 0, made.stderr
    cid = json.loads(made.stdout)["connection_id"]
    sid = f"issues:{fake.roadmap}"
    # (Enabled in-process: each CLI process costs seconds on a loaded machine; ``enable`` has its own tests.)
    enable_stream(store, cid, sid, settings={"fieldMapping": FIELD_MAPPING})
    synced = cli("sync", cid, sid, "--json")
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["counts"]["synced"] == 4
    assert len(_rows(store, "SELECT id FROM issues")) == 4
    fake.revoke_token(token)
    refused = cli("sync", cid, sid, "--json")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "reconnect needed" in json.loads(refused.stdout)["error"]
    for proc in (bad, made, synced, refused):
        assert token not in proc.stdout + proc.stderr
