"""The ``jira`` plugin's streams end to end against ``tests/fakes/jira.py`` on 127.0.0.1: instances across
sites, ``/search/jql`` paging, incremental runs by ``updated`` with JQL literals in the user's zone, ADF
descriptions, mapping, deletions, token refresh mid-sync, 429s, failures, and issue webhooks.

Connections come from the plugin's own ``on_token_exchanged`` (``fakes.connect``); the browser and CLI
legs of OAuth are in ``test_jira_oauth.py``. Retries wait on the fake's clock, so nothing sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hissuno_airflow.kit import InputError
from hissuno_airflow.plugins.jira import client as jira_client
from hissuno_airflow.plugins.jira.adf import adf_to_text
from hissuno_airflow.plugins.jira.jql import time_literal
from hissuno_airflow.runtime.credentials import credential_store, load_credentials
from hissuno_airflow.runtime.streams import enable_stream, list_instances
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.runtime.webhooks import IntakeRequest, receive_webhook
from hissuno_airflow.runtime.webhooks.inbox import process_inbox
from hissuno_airflow.store import connections as repo
from tests.fakes import jira as fakes
from tests.fakes.jira import ENG_A, ENG_B, SITE_A, SITE_B, FakeJira
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer
from tests.fixtures.fakes import retries_on
from tests.fixtures.tokens import stored_at_each_request, stored_when_first_used
from tests.fixtures.web import RecordingDispatcher

T0 = datetime(2025, 11, 3, 17, 0, tzinfo=UTC)
ENG = 12
"""ENG issues on site A (three search pages of five)."""
LA = ZoneInfo("America/Los_Angeles")
SEARCH_A = f"/ex/jira/{SITE_A['id']}/rest/api/3/search/jql"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def jira(store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeJira, str]:
    """12 ENG issues on site A (plus OPS and site B's ENG), five per search page; ENG A and B enabled."""
    fake = fakes.serve(monkeypatch, serve_fake, ENG, clock.time)
    monkeypatch.setattr(jira_client, "PAGE_SIZE", 5)
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, ENG_A)
    enable_stream(store, cid, ENG_B)
    clock.advance(600)
    return fake, cid


def _one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return next(iter(row.values()))


def _issues(store: Any, cid: str, stream_id: str) -> dict[str, dict[str, Any]]:
    """external id -> the issue row (with its ``xmin``: a new row version changes it) of one stream."""
    with store.connection() as c:
        rows = c.execute(
            "SELECT r.external_id, i.*, i.xmin::text AS version FROM integration_synced_records r"
            " JOIN issues i ON i.id = r.hissuno_id WHERE r.connection_id = %s AND r.stream_id = %s"
            " AND r.hissuno_kind = 'issues'", (cid, stream_id)).fetchall()
    return {r["external_id"]: dict(r) for r in rows}


def _sync(store: Any, cid: str, stream_id: str = ENG_A, **plan: Any) -> Any:
    result = run_stream_sync(cid, stream_id, SyncPlan(**plan), store=store)
    return result


# -- instances, first sync, mapping ----------------------------------------------------------------


def test_instances_are_the_projects_of_every_accessible_jira_site(store: Any, jira: tuple[FakeJira, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake, cid = jira
    monkeypatch.setattr(jira_client, "PROJECT_PAGE_SIZE", 1)  # every page is read, not only the first
    instances = {i.id: i for i in list_instances(store, cid, "issues")}
    pages = fake.requests_to(f"/ex/jira/{SITE_A['id']}/rest/api/3/project/search")
    assert [r.query["startAt"] for r in pages[-2:]] == ["0", "1"]
    assert set(instances) == {f"{SITE_A['id']}/ENG", f"{SITE_A['id']}/OPS", f"{SITE_B['id']}/ENG"}
    assert instances[f"{SITE_B['id']}/ENG"].label == "Beta Engineering (ENG) · beta-labs"
    assert instances[f"{SITE_A['id']}/OPS"].metadata["url"] == SITE_A["url"]
    # The Confluence-only resource of the grant is not a Jira site: no project request goes there.
    assert all("c3c3c3c3" not in r.path for r in fake.requests)
    row = repo.get_connection(store, cid)
    assert row.external_account_id == fakes.USER["accountId"]
    assert row.account_label == "Ada Atlas (acme, beta-labs)"
    assert [s["cloud_id"] for s in row.settings["sites"]] == [SITE_A["id"], SITE_B["id"]]


def test_first_sync_pages_by_next_page_token_and_maps_every_issue(store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    first = _sync(store, cid)
    assert first.status == "success", first.error
    expected = fake.project_issues(SITE_A["id"], "ENG")
    assert first.counts["synced"] == len(expected) == ENG and first.counts["failed"] == 0
    other = _sync(store, cid, ENG_B)
    assert other.status == "success" and other.counts["synced"] == len(fake.project_issues(SITE_B["id"], "ENG")) == 3

    searches = fake.requests_to(SEARCH_A)
    assert len(searches) == 3  # 5 + 5 + 2, each page asked for by the last page's token
    assert "nextPageToken" not in searches[0].query
    assert all("nextPageToken" in r.query for r in searches[1:])
    assert searches[0].query["fields"].split(",")[:3] == ["summary", "description", "status"]
    assert searches[0].query["jql"] == 'project = "ENG" ORDER BY updated ASC, id ASC'
    assert fake.count("/rest/api/3/search") == 0 and all(not r.path.endswith("/rest/api/3/search") for r in fake.requests)

    rows = _issues(store, cid, ENG_A)
    assert set(rows) == {r["id"] for r in expected}
    # Same project key on two sites: two streams, two sets of issues, no collision.
    assert len(_issues(store, cid, ENG_B)) == 3
    by_key = {r["custom_fields"]["jira_key"]: r for r in rows.values()}
    bug, story, task = by_key["ENG-3"], by_key["ENG-1"], by_key["ENG-2"]
    # The fake cycles: ENG-1 Story/In Progress/Medium, ENG-2 Task/Done/Low, ENG-3 Bug/To Do/no priority,
    # ENG-4 Story/In Progress/Highest.
    assert (story["type"], story["status"], story["priority"]) == ("feature_request", "in_progress", "medium")
    assert (task["type"], task["status"], task["priority"]) == ("change_request", "resolved", "low")
    assert (bug["type"], bug["status"], bug["priority"]) == ("bug", "open", "low")  # no priority: the default
    assert by_key["ENG-4"]["priority"] == "high"
    assert story["description"] == "Issue 1 of ENG: the export times out.\n- steps"
    assert story["custom_fields"] == {"jira_key": "ENG-1", "jira_project_key": "ENG", "jira_cloud_id": SITE_A["id"],
                                      "jira_cloud_url": SITE_A["url"], "jira_issue_type": "Story"}
    newest = max(fake.issues[SITE_A["id"]].stamps[r["id"]] for r in expected)
    assert first.cursor_after == datetime.fromtimestamp(newest, UTC).replace(microsecond=0)


def test_second_sync_writes_nothing_k_mutations_change_exactly_k_and_full_adds_nothing(
        store: Any, jira: tuple[FakeJira, str], clock: FakeClock) -> None:
    fake, cid = jira
    assert _sync(store, cid).status == "success"
    before = _issues(store, cid, ENG_A)

    again = _sync(store, cid)
    assert again.status == "success" and again.counts["synced"] == 0 and again.counts["failed"] == 0
    assert {k: r["version"] for k, r in _issues(store, cid, ENG_A).items()} == {k: r["version"] for k, r in before.items()}

    clock.advance(3 * 3600)
    fake.update_issue("10002", summary="Export times out on large workspaces")
    fake.update_issue("10005", category="new")
    added = fake.add_issues(1)[0]
    inc = _sync(store, cid)
    assert inc.status == "success", inc.error
    assert inc.counts["synced"] == 3
    after = _issues(store, cid, ENG_A)
    changed = {k for k in after if k not in before or after[k]["version"] != before[k]["version"]}
    assert changed == {"10002", "10005", added["id"]}
    assert after["10002"]["name"] == "Export times out on large workspaces" and after["10005"]["status"] == "open"
    # The lower bound is the cursor read in the user's zone (Los Angeles), rounded down to the minute.
    jql = fake.requests_to(SEARCH_A)[-1].query["jql"]
    local = inc.cursor_before.astimezone(LA).strftime("%Y-%m-%d %H:%M")
    assert f'updated >= "{local}"' in jql and inc.cursor_before.strftime("%Y-%m-%d %H:%M") not in jql

    full = _sync(store, cid, sync_mode="full")
    assert full.status == "success" and full.counts["synced"] == 0
    assert _one(store, "SELECT count(*) FROM issues WHERE deleted_at IS NULL") == ENG + 1


def test_an_issue_updated_between_pages_is_read_again_not_lost(store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    fake.before_request(SEARCH_A, lambda req: fake.update_issue("10001", summary="moved to the end"),
                        when=lambda req: "nextPageToken" in req.query)
    result = _sync(store, cid)
    # Read on page 1 as it was, and again on the last page as it is now.
    assert result.status == "success" and result.counts["synced"] == ENG + 1
    assert _issues(store, cid, ENG_A)["10001"]["name"] == "moved to the end"


def test_filters_narrow_the_jql_and_a_backfill_window_is_exact(store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    enable_stream(store, cid, ENG_A, filters={"issue_type_names": ["Bug"], "status_categories": ["new"],
                                              "jql": "labels = customer"})
    result = _sync(store, cid)
    assert result.status == "success", result.error
    jql = fake.requests_to(SEARCH_A)[-1].query["jql"]
    assert jql == ('project = "ENG" AND (labels = customer) AND issuetype in ("Bug") AND statusCategory in ("new")'
                   ' ORDER BY updated ASC, id ASC')
    want = {r["id"] for r in fake.project_issues(SITE_A["id"], "ENG")
            if r["issuetype"] == "Bug" and r["category"] == "new" and r["labels"]}
    assert set(_issues(store, cid, ENG_A)) == want and want
    with pytest.raises(InputError, match=r"filters\.jql: .*without ORDER BY"):
        enable_stream(store, cid, ENG_A, filters={"jql": "project = X ORDER BY created"})

    enable_stream(store, cid, ENG_A, filters={})
    stamps = sorted(fake.issues[SITE_A["id"]].stamps[r["id"]] for r in fake.project_issues(SITE_A["id"], "ENG"))
    since, until = (datetime.fromtimestamp(stamps[i], UTC) for i in (3, 7))
    window = _sync(store, cid, **vars(SyncPlan.backfill(since, until)))
    assert window.status == "success", window.error
    ids = {r["id"] for r in fake.project_issues(SITE_A["id"], "ENG")
           if since.timestamp() <= fake.issues[SITE_A["id"]].stamps[r["id"]] < until.timestamp()}
    assert window.counts["synced"] == len(ids - want) and len(ids) == 4
    assert repo.get_stream(store, cid, ENG_A).last_sync_at == result.cursor_after  # a backfill keeps the cursor


def test_a_full_sync_deletes_what_the_project_no_longer_lists(store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    assert _sync(store, cid).status == "success"
    fake.delete_issue("10004")
    inc = _sync(store, cid)
    assert inc.counts.get("deleted", 0) == 0  # the search cannot say; a full listing can
    full = _sync(store, cid, sync_mode="full")
    assert full.status == "success" and full.counts["deleted"] == 1
    assert _issues(store, cid, ENG_A)["10004"]["deleted_at"] is not None


# -- auth during a sync ----------------------------------------------------------------------------


def test_a_token_expiring_mid_sync_is_refreshed_once_and_the_old_refresh_token_never_reused(
        store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    row = repo.get_connection(store, cid)
    old = load_credentials(store, row)
    seen = stored_at_each_request(fake, SEARCH_A, store, cid)
    fake.before_request(SEARCH_A, lambda req: fake.expire_access_token(old["access_token"]),
                        when=lambda req: "nextPageToken" in req.query)
    result = _sync(store, cid)
    assert result.status == "success", result.error
    assert result.counts["synced"] == ENG
    assert fake.refreshes == 1 and fake.refusals == []
    # Atlassian's JSON body, the client credentials inside it (fakes.token_grants checks no Basic, no query).
    assert fakes.token_grants(fake) == [{"grant_type": "refresh_token", "refresh_token": old["refresh_token"],
                                         "client_id": fake.client_id, "client_secret": fake.client_secret}]
    assert old["refresh_token"] in fake.used_refresh_tokens
    new = load_credentials(store, row)
    # The rotated refresh token was saved before the new access token's first request went out.
    assert stored_when_first_used(seen, new["access_token"]) == new["refresh_token"] != old["refresh_token"]
    assert new["refresh_token"] != old["refresh_token"] and new["refresh_token"] in fake.refresh_tokens
    assert new["access_token"] != old["access_token"]
    searches = fake.requests_to(SEARCH_A)
    assert [r.bearer_token == old["access_token"] for r in searches] == [True, True, False, False]


def test_a_token_about_to_expire_is_refreshed_before_the_first_request(store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    row = repo.get_connection(store, cid)
    creds = load_credentials(store, row)
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    credential_store(store, "db").save(row, {**creds, "expires_at": soon})
    start = len(fake.requests)
    assert _sync(store, cid).status == "success"
    assert fake.requests[start].path == "/oauth/token" and fake.refreshes == 1
    assert all(r.bearer_token != creds["access_token"] for r in fake.requests[start + 1:])


def test_a_revoked_grant_fails_once_and_marks_the_connection(store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    first = _sync(store, cid)
    creds = load_credentials(store, repo.get_connection(store, cid))
    fake.revoke_token(creds["refresh_token"])
    fake.revoke_token(creds["access_token"])
    failed = _sync(store, cid)
    assert failed.status == "error" and failed.error_code == "provider_auth" and not failed.retriable
    assert f"reconnect needed: run `hissuno connect jira --update {cid}`" in failed.error
    assert creds["refresh_token"] not in failed.error and creds["access_token"] not in failed.error
    # One refused grant: the dead refresh token is not presented again (no retry of the run's handler).
    assert len(fake.requests_to("/oauth/token")) == 1 and fake.refusals[0]["error"] == "invalid_grant"
    assert repo.get_connection(store, cid).needs_reconnect
    assert repo.get_stream(store, cid, ENG_A).last_sync_at == first.cursor_after


# -- rate limits and failures -----------------------------------------------------------------------


def test_a_429_waits_retry_after_on_the_shared_client(store: Any, jira: tuple[FakeJira, str], clock: FakeClock) -> None:
    fake, cid = jira
    limited = fake.inject_429(SEARCH_A, retry_after=11, headers={"RateLimit-Reason": "jira-burst-based"},
                              when=lambda req: "nextPageToken" in req.query)
    result = _sync(store, cid)
    assert result.status == "success" and result.counts["synced"] == ENG
    assert limited.hits == 1 and 11 in clock.sleeps
    page2 = [r for r in fake.requests_to(SEARCH_A) if "nextPageToken" in r.query]
    assert page2[1].at - page2[0].at == 11

    # Without Retry-After, Jira's X-RateLimit-Reset (an ISO minute, yyyy-MM-ddTHH:mmZ) says when to come back.
    reset = datetime.fromtimestamp(clock.time(), UTC).replace(second=0) + timedelta(minutes=2)
    fake.inject_429(SEARCH_A, retry_after=None, headers={"X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ")})
    before = clock.time()
    assert _sync(store, cid, sync_mode="full").status == "success"
    retried = fake.requests_to(SEARCH_A)[-4:]  # page 1 (429), page 1 again, pages 2 and 3
    assert [r.at for r in retried[:2]] == [before, reset.timestamp()] and "nextPageToken" not in retried[1].query


def test_a_listing_failure_fails_the_run_and_keeps_the_cursor(store: Any, jira: tuple[FakeJira, str],
                                                             clock: FakeClock) -> None:
    fake, cid = jira
    first = _sync(store, cid)
    clock.advance(3600)
    fake.update_issue("10001", summary="changed")
    fake.inject(SEARCH_A, 400, json={"errorMessages": ["The value 'ENG' does not exist for the field 'project'."]},
                times=None)
    failed = _sync(store, cid)
    assert failed.status == "error" and failed.error_code == "provider_response"
    assert repo.get_stream(store, cid, ENG_A).last_sync_at == first.cursor_after


def test_a_record_that_fails_goes_to_ingest_errors_and_the_run_goes_on(store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    fake.update_issue("10002", summary="   ")  # a blank summary falls back to the key
    fake.issues[SITE_A["id"]].records["10003"]["updated"] = "last tuesday"
    result = _sync(store, cid)
    assert result.status == "success" and result.counts["failed"] == 1 and result.counts["synced"] == ENG - 1
    with store.connection() as c:
        errors = c.execute("SELECT kind, external_id, reason FROM ingest_errors WHERE status = 'open'").fetchall()
    assert [(e["kind"], e["external_id"]) for e in errors] == [("issues", "10003")]
    assert "updated_at" in errors[0]["reason"]
    assert _issues(store, cid, ENG_A)["10002"]["name"] == "ENG-2"

    # Jira's data is fixed: a replay reads the issue again (the stream's fetch) and resolves the record.
    from hissuno_airflow.runtime.replay import replay_failed

    fake.update_issue("10003", summary="fixed upstream")
    replay_failed(cid, all_open=True, store=store)
    assert _one(store, "SELECT status FROM ingest_errors WHERE external_id = '10003'") == "resolved"
    assert _issues(store, cid, ENG_A)["10003"]["name"] == "fixed upstream"
    assert fake.count(f"/ex/jira/{SITE_A['id']}/rest/api/3/issue/10003") == 1


def test_site_no_longer_granted_is_a_clear_error(store: Any, jira: tuple[FakeJira, str]) -> None:
    fake, cid = jira
    fake.granted.remove(SITE_B["id"])
    failed = _sync(store, cid, ENG_B)
    assert failed.status == "error" and f"site {SITE_B['id']} is not accessible" in (failed.error or "")


# -- JQL time literals and ADF ----------------------------------------------------------------------


def test_time_literals_are_the_users_wall_clock_on_the_safe_side() -> None:
    instant = datetime(2025, 7, 1, 9, 30, 45, tzinfo=UTC)
    assert time_literal(instant, LA) == "2025-07-01 02:30"            # UTC-7 in summer, rounded down
    assert time_literal(instant, LA, upper=True) == "2025-07-01 02:31"  # rounded up
    assert time_literal(instant, ZoneInfo("Asia/Kolkata")) == "2025-07-01 15:00"
    assert time_literal(instant, None) == "2025-06-30 19:30"          # unknown zone: 14 h earlier
    # 2025-11-02 01:30 happens twice in Los Angeles; the literal must not name the later one for a lower bound.
    second = datetime(2025, 11, 2, 9, 30, tzinfo=UTC)                  # 01:30 PST (second reading)
    first = datetime(2025, 11, 2, 8, 30, tzinfo=UTC)                   # 01:30 PDT (first reading)
    assert time_literal(second, LA) == "2025-11-02 01:30"
    assert time_literal(first, LA) == "2025-11-02 00:30"
    assert time_literal(second, LA, upper=True) == "2025-11-02 02:30"
    assert time_literal(first, LA, upper=True) == "2025-11-02 01:30"


def test_adf_becomes_readable_text() -> None:
    doc = {"type": "doc", "version": 1, "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Steps"}]},
        {"type": "orderedList", "content": [
            {"type": "listItem", "content": [{"type": "paragraph", "content": [
                {"type": "text", "text": "Open "}, {"type": "inlineCard", "attrs": {"url": "https://x.test/a"}}]}]},
            {"type": "listItem", "content": [{"type": "paragraph", "content": [
                {"type": "text", "text": "Ask "}, {"type": "mention", "attrs": {"id": "1", "text": "@Ann"}},
                {"type": "hardBreak"}, {"type": "text", "text": "then wait"}]}]}]},
        {"type": "codeBlock", "content": [{"type": "text", "text": "export --all"}]},
        {"type": "unknownFutureNode", "content": [{"type": "text", "text": "kept"}]},
    ]}
    assert adf_to_text(doc) == "Steps\n1. Open https://x.test/a\n2. Ask @Ann\n  then wait\nexport --all\nkept"
    assert adf_to_text("plain v2 text ") == "plain v2 text" and adf_to_text(None) == ""


# -- webhooks --------------------------------------------------------------------------------------


def _hooked(store: Any, jira: tuple[FakeJira, str]) -> tuple[Signer, str]:
    _fake, cid = jira
    from hissuno_airflow import registry

    signer = Signer(registry.get_plugin("jira").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    return signer, f"https://hissuno.example/hissuno/api/plugins/webhook/jira/{cid}"


def _deliver(store: Any, cid: str, delivery: Any, now: float) -> Any:
    req = IntakeRequest("POST", delivery.url, dict(delivery.headers), delivery.body)
    return receive_webhook("jira", req, connection_id=cid, store=store, dispatcher=RecordingDispatcher(), now=now)


def test_issue_webhooks_update_and_delete_once_and_refuse_forged_stale_and_replayed(
        store: Any, jira: tuple[FakeJira, str], clock: FakeClock) -> None:
    from hissuno_airflow.kit import WebhookSignatureError

    fake, cid = jira
    signer, url = _hooked(store, jira)
    assert _sync(store, cid).status == "success"
    now = clock.time()
    fake.update_issue("10002", summary="Renamed in Jira")
    body = fake.event("jira:issue_updated", "10002")
    ok = _deliver(store, cid, signer(body, url=url, timestamp=now, event_id="wh-1"), now)
    assert ok.status == 200 and ok.body["queued"] == 2  # both enabled ENG streams get it; site B's ignores it
    replay = _deliver(store, cid, signer(body, url=url, timestamp=now, event_id="wh-1"), now + 5)
    assert replay.body["duplicate"] is True and replay.body["queued"] == 0
    for bad in (signer.forged()(body, url=url, timestamp=now, event_id="wh-2"),
                signer(body, url=url, timestamp=now - 3600, event_id="wh-3")):
        with pytest.raises(WebhookSignatureError):
            _deliver(store, cid, bad, now)
    assert _one(store, "SELECT count(*) FROM webhook_events") == 2

    assert process_inbox(cid, ENG_A, store=store).done == 1
    assert process_inbox(cid, ENG_B, store=store).done == 1
    rows = _issues(store, cid, ENG_A)
    # Re-read from Jira: the name is current and the description is the ADF text, not the body's wiki markup.
    assert rows["10002"]["name"] == "Renamed in Jira" and rows["10002"]["description"].startswith("Issue 2 of ENG")
    # Site B has an issue 10002 too: its stream (never synced here) took nothing from site A's event.
    assert _issues(store, cid, ENG_B) == {}

    fake.delete_issue("10005")
    gone = fake.event("jira:issue_deleted", "10005", project="ENG")
    assert _deliver(store, cid, signer(gone, url=url, timestamp=now, event_id="wh-4"), now).status == 200
    # A replayed or forged-in-time delete of a live issue changes nothing: Jira still has 10006.
    live = fake.event("jira:issue_deleted", "10006")
    assert _deliver(store, cid, signer(live, url=url, timestamp=now, event_id="wh-5"), now).status == 200
    assert process_inbox(cid, ENG_A, store=store).done == 2
    rows = _issues(store, cid, ENG_A)
    assert rows["10005"]["deleted_at"] is not None and rows["10006"]["deleted_at"] is None
    # The next sync agrees with what the webhooks wrote: nothing to write.
    assert _sync(store, cid).counts["synced"] == 0


def test_webhooks_of_other_projects_and_events_are_ignored(store: Any, jira: tuple[FakeJira, str],
                                                          clock: FakeClock) -> None:
    fake, cid = jira
    signer, url = _hooked(store, jira)
    now = clock.time()
    ops = fake.add_issues(1, project="OPS")[0]
    for i, body in enumerate((fake.event("jira:issue_created", ops["id"]),
                              {**fake.event("comment_created", "10001"), "comment": {"id": "1", "body": "hi"}})):
        _deliver(store, cid, signer(body, url=url, timestamp=now, event_id=f"x-{i}"), now)
    assert process_inbox(cid, ENG_A, store=store).done == 2
    assert _issues(store, cid, ENG_A) == {}
    assert fake.count("/ex/jira/{cloud}/rest/api/3/issue/{id}") == 0
