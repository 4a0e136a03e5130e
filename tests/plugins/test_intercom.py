"""The ``intercom`` plugin end to end: connect, sync and webhooks against the stateful fake of
``tests/fakes/intercom.py`` on 127.0.0.1, into the real store (and through the real CLI).

Every HTTP client's retries wait on the fake's clock, so rate-limit waits are asserted, not taken.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit import InputError, ProviderAuthError, WebhookSignatureError
from hissuno_airflow.kit.signatures import SignedRequest, verify
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.runtime.webhooks import IntakeRequest, receive_webhook
from hissuno_airflow.runtime.webhooks.inbox import process_inbox
from hissuno_airflow.store import connections as repo
from tests.fakes import intercom as fakes
from tests.fakes.intercom import Intercom
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer
from tests.fixtures.cli import standalone_env
from tests.fixtures.fakes import retries_on
from tests.fixtures.store import row_versions

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
TOKEN = "dG9rOmFiY2RlZjEyMzQ1Njc4OTA6MTowtest"
COUNT = 23
PER_PAGE = 5


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake's clock; every client's retries and rate-limit waits run on it instead of sleeping."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def fake(serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Intercom:
    """23 conversations served five a page, the plugin pointed at the fake, a valid token."""
    fake = serve_fake(Intercom(COUNT, clock=clock.time, max_per_page=PER_PAGE))
    fake.issue_token(TOKEN)
    monkeypatch.setenv("HISSUNO_INTERCOM_API_URL", fake.url)
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    return fake


@pytest.fixture
def cid(store: Any, fake: Intercom) -> str:
    """A connection made through the plugin's auth test, with ``conversations`` enabled."""
    connection_id = fakes.connect(store, TOKEN)
    enable_stream(store, connection_id, "conversations")
    return connection_id


def _one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return None if row is None else next(iter(row.values()))


def _session(store: Any, external_id: str) -> dict[str, Any]:
    with store.connection() as c:
        row = c.execute("SELECT s.* FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id"
                        " WHERE r.external_id = %s AND r.hissuno_kind = 'sessions'", (external_id,)).fetchone()
        assert row is not None, external_id
        msgs = c.execute("SELECT sender_type, sender_name, content, created_at FROM session_messages"
                         " WHERE session_id = %s ORDER BY position", (row["id"],)).fetchall()
    return {**row, "messages": msgs}


def _stamp(fake: Intercom, conversation_id: str) -> datetime:
    return datetime.fromtimestamp(fake.conversations.stamps[conversation_id], UTC)


# -- connect ---------------------------------------------------------------------------------------


def test_connect_checks_the_token_on_me_and_names_bad_fields(store: Any, fake: Intercom) -> None:
    from hissuno_airflow.kit.errors import ConnectFailed

    cid = fakes.connect(store, TOKEN)
    conn = repo.get_connection(store, cid)
    assert (conn.external_account_id, conn.account_label) == ("abc12xyz", "Acme Support")
    me = fake.requests_to("/me")[-1]
    assert me.bearer_token == TOKEN and me.header("intercom-version") == "2.13"
    assert me.header("accept") == "application/json"

    revoked = fake.issue_token()
    fake.revoke_token(revoked)
    with pytest.raises(ConnectFailed) as refused:
        fakes.connect(store, revoked)
    assert "intercom GET /me: 401 Unauthorized" in str(refused.value) and revoked not in str(refused.value)

    before = len(fake.requests)
    with pytest.raises(InputError) as region:
        fakes.connect(store, TOKEN, region="mars")
    assert "region: expected one of US, EU, AU; got 'mars'" in str(region.value)
    assert len(fake.requests) == before, "a bad region is refused before any request"
    with pytest.raises(InputError, match=r"credentials.access_token: Access token is required"):
        fakes.connect(store, "  ")


def test_an_eu_workspace_is_read_from_the_eu_host(store: Any, serve_fake: Any, clock: FakeClock,
                                                  monkeypatch: pytest.MonkeyPatch, fake: Intercom) -> None:
    eu = serve_fake(Intercom(3, clock=clock.time, app={**fakes.APP, "id_code": "eu99", "region": "EU"}))
    eu_token = eu.issue_token()
    monkeypatch.setenv("HISSUNO_INTERCOM_API_EU_URL", eu.url)

    cid = fakes.connect(store, eu_token, region="eu")
    enable_stream(store, cid, "conversations")
    result = run_stream_sync(cid, "conversations", store=store)

    assert result.status == "success" and result.counts["synced"] == 3, result.error
    assert repo.get_connection(store, cid).external_account_id == "eu99"
    assert eu.count("/conversations/search") == 1 and fake.count("/conversations/search") == 0
    assert fake.count("/me") == 0


# -- sync ------------------------------------------------------------------------------------------


def test_first_sync_reads_every_conversation_and_maps_it_as_the_reference(
    store: Any, fake: Intercom, cid: str, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run_stream_sync(cid, "conversations", store=store)

    assert result.status == "success", result.error
    assert result.counts["found"] == COUNT and result.counts["synced"] == COUNT and result.counts["failed"] == 0
    assert _one(store, "SELECT count(*) FROM sessions") == COUNT
    assert result.cursor_after == _stamp(fake, "1023")

    # One search per page of five; a valid query even without any bound; the keyset cursor sent back.
    searches = fake.searches()
    assert len(searches) == 5
    assert searches[0]["query"] == {"field": "updated_at", "operator": ">", "value": 0}
    assert searches[0]["sort"] == {"field": "updated_at", "order": "ascending"}
    assert searches[0]["pagination"] == {"per_page": 150}
    assert all(s["pagination"].get("starting_after") for s in searches[1:])
    # Every call signed and versioned; every conversation read once as plain text; each contact once.
    assert all(r.bearer_token == TOKEN and r.header("intercom-version") == "2.13" for r in fake.requests)
    reads = fake.requests_to("/conversations/{id}", "GET")
    assert len(reads) == COUNT and all(r.query == {"display_as": "plaintext"} for r in reads)
    assert sorted(r.path for r in fake.requests_to("/contacts/{id}")) == [f"/contacts/c-{i}" for i in range(5)]

    titled, untitled = _session(store, "1003"), _session(store, "1001")
    assert titled["name"] == "Billing question 3"
    assert untitled["name"] == "Hi, my invoice 1 shows the wrong amount & date."
    assert (untitled["source"], untitled["session_type"], untitled["status"]) == ("intercom", "chat", "closed")
    # The opening message, the agent's reply and the customer's answer; not the assignment's note.
    assert [(m["sender_type"], m["content"]) for m in untitled["messages"]] == [
        ("user", "Hi, my invoice 1 shows the wrong amount & date."),
        ("human_agent", "Sorry about invoice 1, checking now."),
        ("user", "Thanks!"),
    ]
    conv = fake.conversations.get("1001")
    assert untitled["messages"][0]["created_at"] == datetime.fromtimestamp(conv["created_at"], UTC)
    assert untitled["last_activity_at"] == _stamp(fake, "1001")
    meta = untitled["user_metadata"]
    assert meta == {
        "intercom_conversation_id": "1001", "name": "Customer 1", "email": "customer1@example1.test",
        "phone": "+3531234501", "role": "user", "city": "Dublin", "region": "Leinster", "country": "Ireland",
        "browser": "chrome", "os": "macOS", "company": "Company 1", "tags": "vip, beta",
        "last_seen_at": "2023-11-14T22:13:21+00:00", "signed_up_at": "2023-07-22T04:26:41+00:00",
        "social_twitter": "https://twitter.com/customer1", "custom_plan": "pro", "custom_seats": 2,
        "userId": "user-1",
    }
    # A lead is a customer: its messages are the user's, and with no external id its Intercom id is the userId.
    lead = _session(store, "1004")
    assert lead["messages"][0]["sender_type"] == "user" and lead["user_metadata"]["userId"] == "c-4"
    assert _one(store, "SELECT count(*) FROM contacts") == 5
    assert TOKEN not in caplog.text

    versions = row_versions(store)
    again = run_stream_sync(cid, "conversations", store=store)
    assert again.status == "success" and again.counts["synced"] == 0, again.counts
    assert row_versions(store) == versions, "a second sync writes no row"
    cursor = int(result.cursor_after.timestamp())
    assert fake.searches()[-1]["query"] == {"field": "updated_at", "operator": ">", "value": cursor - 1}


def test_incremental_run_picks_up_replies_reopens_and_new_conversations_exactly(
    store: Any, fake: Intercom, cid: str
) -> None:
    assert run_stream_sync(cid, "conversations", store=store).counts["synced"] == COUNT
    fake.reply("1002", "Refund issued.")
    fake.reply("1007", "Actually it is still wrong", author_type="user", state="open")  # reopened
    fake.reply("1015", "Internal: escalated", author_type="bot")
    fake.add_conversations(2)

    again = run_stream_sync(cid, "conversations", store=store)

    assert again.status == "success" and again.counts["synced"] == 5, again.counts
    assert _one(store, "SELECT count(*) FROM sessions") == COUNT + 2
    assert [m["content"] for m in _session(store, "1002")["messages"]][-1] == "Refund issued."
    assert [(m["sender_type"], m["content"]) for m in _session(store, "1007")["messages"]][-1] == (
        "user", "Actually it is still wrong")
    assert _session(store, "1015")["messages"][-1]["sender_type"] == "ai"
    assert again.cursor_after == _stamp(fake, "1025")

    versions = row_versions(store)
    full = run_stream_sync(cid, "conversations", SyncPlan.full(), store=store)
    assert full.status == "success" and full.counts["synced"] == 0 and full.counts["found"] == COUNT + 2
    assert row_versions(store) == versions, "a full resync writes no row"
    assert fake.searches()[-1]["query"] == {"field": "updated_at", "operator": ">", "value": 0}
    assert _one(store, "SELECT count(*) FROM sessions") == COUNT + 2


def test_a_conversation_updated_mid_sync_is_read_again_and_nothing_is_skipped(
    store: Any, fake: Intercom, cid: str
) -> None:
    # While page 2 is asked for, conversation 1002 (page 1, already read) gets a reply: the ascending
    # keyset search lists it again at the end, and the run reads its new state.
    fake.before_request("/conversations/search", lambda req: fake.reply("1002", "Mid-sync reply"),
                        when=lambda req: bool((req.json() or {}).get("pagination", {}).get("starting_after")))
    result = run_stream_sync(cid, "conversations", store=store)

    assert result.status == "success", result.error
    assert _one(store, "SELECT count(*) FROM sessions") == COUNT
    assert _session(store, "1002")["messages"][-1]["content"] == "Mid-sync reply"
    assert result.cursor_after == _stamp(fake, "1002")
    assert run_stream_sync(cid, "conversations", store=store).counts["synced"] == 0


def test_a_backfill_window_reads_only_its_updates(store: Any, fake: Intercom, cid: str) -> None:
    since, until = _stamp(fake, "1005"), _stamp(fake, "1009")
    result = run_stream_sync(cid, "conversations", SyncPlan.backfill(since, until), store=store)

    assert result.status == "success" and result.counts["synced"] == 4, result.counts
    query = fake.searches()[-1]["query"]
    assert query == {"operator": "AND", "value": [
        {"field": "updated_at", "operator": ">", "value": int(since.timestamp()) - 1},
        {"field": "updated_at", "operator": "<", "value": int(until.timestamp()) - 1},
    ]}
    # A context left unexited would hand its connection back to the pool when garbage-collected, mid-query.
    with store.connection() as c:
        ids = {r["external_id"] for r in c.execute(
            "SELECT external_id FROM integration_synced_records WHERE connection_id = %s", (cid,)).fetchall()}
    assert ids == {"1005", "1006", "1007", "1008"}
    assert repo.get_stream(store, cid, "conversations").last_sync_at is None, "a backfill leaves the cursor"


def test_creation_date_filters_go_into_the_query(store: Any, fake: Intercom, cid: str) -> None:
    created = fake.conversations.get("1010")["created_at"]
    enable_stream(store, cid, "conversations", filters={"from_date": datetime.fromtimestamp(created, UTC).isoformat()})
    result = run_stream_sync(cid, "conversations", store=store)

    assert result.status == "success" and result.counts["synced"] == COUNT - 9
    assert fake.searches()[0]["query"] == {"field": "created_at", "operator": ">", "value": created}


def test_rate_limit_windows_are_waited_out_as_x_ratelimit_reset_says(
    store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four calls per 10-second window: the sync runs into 429s and zero-remaining answers all along.
    fake = serve_fake(Intercom(COUNT, clock=clock.time, max_per_page=PER_PAGE, window_limit=4))
    monkeypatch.setenv("HISSUNO_INTERCOM_API_URL", fake.url)
    cid = fakes.connect(store, fake.issue_token())
    enable_stream(store, cid, "conversations")
    limited = fake.inject_429("/conversations/search", retry_after=None, times=1,
                              headers={"X-RateLimit-Limit": "4", "X-RateLimit-Remaining": "0",
                                       "X-RateLimit-Reset": str(int(T0.timestamp()) + 37)})

    result = run_stream_sync(cid, "conversations", store=store)

    assert result.status == "success" and result.counts["synced"] == COUNT, result.error
    assert _one(store, "SELECT count(*) FROM sessions") == COUNT
    assert limited.hits == 1 and clock.sleeps[0] == 37, "the injected 429 waits until its reset time"
    # Then the client paces itself by X-RateLimit-Remaining: 0, waiting each time until the window's
    # X-RateLimit-Reset, so the budget is never overrun and every wait ends on a window boundary.
    assert fake.window_refusals == 0 and len(clock.sleeps) >= 8
    ends, at = [], T0.timestamp()
    for wait in clock.sleeps:
        at += wait
        ends.append(at)
    assert all(end % 10 == 0 for end in ends[1:])


def test_a_bad_record_goes_to_ingest_errors_and_the_run_goes_on(store: Any, fake: Intercom, cid: str) -> None:
    conv = fake.conversations.get("1004")
    conv["conversation_parts"]["conversation_parts"][0]["created_at"] = "yesterday"

    result = run_stream_sync(cid, "conversations", store=store)

    assert result.status == "success" and result.counts["synced"] == COUNT - 1 and result.counts["failed"] == 1
    with store.connection() as c:
        errors = c.execute("SELECT external_id, reason FROM ingest_errors WHERE connection_id = %s", (cid,)).fetchall()
    assert [e["external_id"] for e in errors] == ["1004"] and "messages.1.created_at" in errors[0]["reason"]
    assert _one(store, "SELECT count(*) FROM sessions") == COUNT - 1


def test_a_listing_failure_fails_the_run_and_keeps_the_cursor(store: Any, fake: Intercom, cid: str,
                                                             clock: FakeClock) -> None:
    first = run_stream_sync(cid, "conversations", store=store)
    cursor = repo.get_stream(store, cid, "conversations").last_sync_at
    assert first.status == "success" and cursor == first.cursor_after
    fake.add_conversations(8)
    fake.inject_5xx("/conversations/search", times=None,
                    when=lambda r: bool((r.json() or {}).get("pagination", {}).get("starting_after")))

    failed = run_stream_sync(cid, "conversations", store=store)

    assert failed.status == "error" and failed.retriable and "503" in (failed.error or "")
    assert repo.get_stream(store, cid, "conversations").last_sync_at == cursor
    fake.faults.clear()
    recovered = run_stream_sync(cid, "conversations", store=store)
    assert recovered.status == "success" and _one(store, "SELECT count(*) FROM sessions") == COUNT + 8


def test_a_revoked_token_fails_the_run_as_reconnect_needed_without_retrying(
    store: Any, fake: Intercom, cid: str, clock: FakeClock
) -> None:
    assert run_stream_sync(cid, "conversations", store=store).status == "success"
    cursor = repo.get_stream(store, cid, "conversations").last_sync_at
    fake.reply("1003", "More")
    fake.revoke_token(TOKEN)
    before = fake.count("/conversations/search")

    failed = run_stream_sync(cid, "conversations", store=store)

    assert failed.status == "error" and failed.error_code == ProviderAuthError.code and not failed.retriable
    assert failed.error == ("intercom POST /conversations/search: 401 Unauthorized (unauthorized); reconnect needed: "
                            f"run `hissuno connect intercom --update {failed_connection(store)}` or reconnect it "
                            "on the Integrations page")
    assert fake.count("/conversations/search") == before + 1 and clock.sleeps == []
    stream = repo.get_stream(store, cid, "conversations")
    assert stream.last_sync_at == cursor and stream.last_sync_error == failed.error


def test_a_conversation_gone_between_listing_and_reading_is_deleted(store: Any, fake: Intercom, cid: str) -> None:
    assert run_stream_sync(cid, "conversations", store=store).status == "success"
    fake.reply("1006", "Spam, deleting")
    fake.before_request("/conversations/1006", lambda req: fake.conversations.delete("1006"))

    result = run_stream_sync(cid, "conversations", store=store)

    assert result.status == "success" and result.counts["deleted"] == 1, result.counts
    assert _session(store, "1006")["deleted_at"] is not None


# -- webhooks --------------------------------------------------------------------------------------


class _Woken:
    def __init__(self) -> None:
        self.targets: list[tuple[str, str]] = []

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        self.targets.extend(targets)


def test_the_signature_matches_providers_appendix_b() -> None:
    scheme = registry.get_plugin("intercom").webhook_signature
    body = b'{"hello":"world"}'
    signed = SignedRequest(body, {"X-Hub-Signature": "sha1=f0370dccbe42fb3b813b5f0230d21cdb3a953eb7"})
    verify(scheme, "intercom-secret", signed)
    assert scheme.sign("intercom-secret", SignedRequest(body, {})) == "sha1=f0370dccbe42fb3b813b5f0230d21cdb3a953eb7"
    with pytest.raises(WebhookSignatureError):
        verify(scheme, "another-secret", signed)


def test_signed_notifications_update_and_delete_sessions(store: Any, fake: Intercom, cid: str) -> None:
    assert run_stream_sync(cid, "conversations", store=store).counts["synced"] == COUNT
    signer = Signer(registry.get_plugin("intercom").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    woken = _Woken()

    def deliver(event: dict[str, Any], sign: Signer = signer) -> Any:
        d = sign(event, url="https://hissuno.invalid/hook", timestamp=0, event_id=event["id"])
        return receive_webhook("intercom", IntakeRequest("POST", d.url, d.headers, d.body), connection_id=cid,
                               store=store, dispatcher=woken)

    stale = fake.notification("conversation.user.replied", "1002", notification_id="notif_old",
                              created_at=int(T0.timestamp()) - 86_400)
    fake.reply("1002", "Any news?", author_type="user")
    replied = fake.notification("conversation.user.replied", "1002", notification_id="notif_1")
    assert deliver(replied).body["queued"] == 1
    assert deliver(replied).body["duplicate"] is True, "a replay is stored once"
    # A day-old notification (its item without the new reply) is only a trigger: the current state is read.
    assert deliver(stale).body["queued"] == 1
    fake.conversations.delete("1009")
    deliver(fake.notification("conversation.admin.closed", "1009", notification_id="notif_2"))
    deliver(fake.notification("contact.user.updated", "1010", notification_id="notif_3"))
    with pytest.raises(WebhookSignatureError):
        deliver(fake.notification("conversation.admin.closed", "1011", notification_id="notif_4"), sign=signer.forged())
    tampered = signer(fake.notification("conversation.admin.closed", "1012", notification_id="notif_5"),
                      url="https://hissuno.invalid/hook", timestamp=0, event_id="notif_5")
    with pytest.raises(WebhookSignatureError):
        receive_webhook("intercom", IntakeRequest("POST", tampered.url, tampered.headers, tampered.body + b" "),
                        connection_id=cid, store=store, dispatcher=woken)
    assert len(woken.targets) == 4

    drained = process_inbox(cid, "conversations", store=store)

    assert (drained.done, drained.failed) == (4, 0), drained.errors
    replied_session = _session(store, "1002")
    assert replied_session["messages"][-1]["content"] == "Any news?" and replied_session["deleted_at"] is None
    assert _session(store, "1009")["deleted_at"] is not None
    assert _session(store, "1011")["deleted_at"] is None, "a forged notification changes nothing"
    assert run_stream_sync(cid, "conversations", store=store).counts["synced"] == 0, "the sync agrees"


def test_the_app_wide_url_routes_by_workspace_and_answers_pings(store: Any, fake: Intercom, cid: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    scheme = registry.get_plugin("intercom").webhook_signature
    signer = Signer(scheme)
    monkeypatch.setenv("INTERCOM_CLIENT_SECRET", signer.secret)
    woken = _Woken()

    def deliver(event: dict[str, Any]) -> Any:
        d = signer(event, url="https://hissuno.invalid/hook", timestamp=0, event_id=event["id"])
        return receive_webhook("intercom", IntakeRequest("POST", d.url, d.headers, d.body), store=store,
                               dispatcher=woken)

    ping = {**fake.notification("ping", "1001", notification_id="notif_ping")}
    assert deliver(ping).body == {"success": True, "ping": True} and woken.targets == []
    assert deliver(fake.notification("conversation.user.created", "1001", notification_id="notif_a")).body["queued"] == 1
    assert woken.targets == [(cid, "conversations")]
    other = fake.notification("conversation.user.created", "1001", notification_id="notif_b")
    other["app_id"] = "someone-else"
    from hissuno_airflow.kit import NotFoundError

    with pytest.raises(NotFoundError):
        deliver(other)


# -- the command line ------------------------------------------------------------------------------


def test_connect_and_sync_through_the_cli(store: Any, fake: Intercom, database_url: str, tmp_path: Any) -> None:
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_INTERCOM_API_URL": fake.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    bad = cli("connect", "intercom", "--set", "access_token=not-a-token", "--json")
    assert bad.returncode != 0 and "401" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    made = cli("connect", "intercom", "--set", f"access_token={TOKEN}", "--json")
    assert made.returncode == 0, made.stderr
    cid = json.loads(made.stdout)["connection_id"]
    assert cli("enable", cid, "conversations").returncode == 0
    synced = cli("sync", cid, "conversations", "--json")
    assert synced.returncode == 0, synced.stderr
    out = json.loads(synced.stdout)
    assert out["status"] == "success" and out["counts"]["synced"] == COUNT
    for text in (bad.stdout, bad.stderr, made.stdout, made.stderr, synced.stdout, synced.stderr):
        assert TOKEN not in text


def test_revoked_key_is_reported_by_the_cli_as_reconnect_needed(store: Any, fake: Intercom, cid: str,
                                                                 database_url: str, tmp_path: Any) -> None:
    fake.revoke_token(TOKEN)
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_INTERCOM_API_URL": fake.url}
    proc = subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", "sync", cid, "conversations", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "error" and out["error"].startswith(
        "intercom POST /conversations/search: 401 Unauthorized (unauthorized); reconnect needed: run `hissuno connect "
        "intercom --update ")
    assert fake.count("/conversations/search") == 1, "a refused token is not retried"


def test_an_exclusive_until_becomes_an_inclusive_bound_a_second_below() -> None:
    from hissuno_airflow.plugins.intercom.client import search_query

    until = T0 + timedelta(seconds=0.5)
    assert search_query(updated_before=until) == {"field": "updated_at", "operator": "<",
                                                  "value": int(T0.timestamp())}


def failed_connection(store: Any) -> str:
    """The id of the one intercom connection (the run's error names it in its reconnect advice)."""
    (row,) = repo.list_connections(store, plugin_id="intercom")
    return row.id
