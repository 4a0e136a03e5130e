"""The ``zendesk`` plugin end to end against the stateful fake of ``tests/fakes/zendesk.py`` on 127.0.0.1.

Connect through the plugin's own auth test (in process and through the ``hissuno`` CLI), runs through
``run_stream_sync`` into the real store, webhooks through the real intake and inbox. Every HTTP client's
retries, and the plugin's export pacing, wait on the fake's clock, so nothing sleeps for real.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit import HissunoError, ProviderAuthError, WebhookSignatureError
from hissuno_airflow.kit.http import RateBudget
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.runtime.webhooks import IntakeRequest, receive_webhook
from hissuno_airflow.runtime.webhooks.inbox import process_inbox
from hissuno_airflow.store import connections as repo
from hissuno_airflow.store.ingest import StreamIngest
from tests.fakes import zendesk as fakes
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer
from tests.fakes.zendesk import FakeZendesk
from tests.fixtures.cli import standalone_env
from tests.fixtures.fakes import retries_on
from tests.fixtures.store import row_versions

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
TICKETS = 14
"""Nine of them solved or closed (tickets 1, 2, 4, 6, 7, 9, 10, 12, 14), from four requesters with an email
in two organizations with a domain."""
SESSIONS, CONTACTS, COMPANIES = 9, 4, 2
EXPORT = "/api/v2/incremental/tickets/cursor.json"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake's clock at ``T0``; retries and the export pacing wait on it instead of sleeping."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    _pace_on(monkeypatch, FakeClock(T0.timestamp()))
    return clock


def _pace_on(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Pace the export on ``clock`` (its own, unless a test wants the provider to see the pacing)."""
    budget = RateBudget(10, burst=1, clock=clock.time, sleep=clock.sleep)
    monkeypatch.setattr("hissuno_airflow.plugins.zendesk.plugin.export_budget", lambda: budget)


@pytest.fixture
def desk(store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
         ) -> tuple[FakeZendesk, str, str]:
    """The fake with 14 tickets, five per export page, settled; a connection with ``tickets`` enabled."""
    fake, token = fakes.serve(monkeypatch, serve_fake, TICKETS, clock.time)
    fake.max_export_page = 5
    clock.advance(3600)
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    cid = fakes.connect(store, token)
    enable_stream(store, cid, "tickets")
    return fake, cid, token


def _one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return next(iter(row.values()))


def _counts(store: Any) -> tuple[int, int, int]:
    return (_one(store, "SELECT count(*) FROM sessions WHERE deleted_at IS NULL"),
            _one(store, "SELECT count(*) FROM contacts"), _one(store, "SELECT count(*) FROM companies"))


def _session_ids(store: Any, where: str = "TRUE", *args: Any) -> set[str]:
    with store.connection() as c:
        rows = c.execute("SELECT r.external_id FROM sessions s JOIN integration_synced_records r"
                         f" ON r.hissuno_id = s.id WHERE r.hissuno_kind = 'sessions' AND {where}", args).fetchall()
    return {r["external_id"] for r in rows}


def _stamp(ticket: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(ticket["updated_at"].replace("Z", "+00:00"))


# -- connect ---------------------------------------------------------------------------------------


def _connect(store: Any, creds: dict[str, Any]) -> dict[str, Any]:
    return connect_api_key(registry.get_plugin("zendesk"), store, project_id=settings.default_project_id(),
                           user_id="tester", credentials=creds)


def test_connect_checks_the_subdomain_and_the_token(store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch,
                                                   ) -> None:
    fake, token = fakes.serve(monkeypatch, serve_fake, 1)
    for bad in ("acme.zendesk.com", "https://acme", "-acme", "ac me"):
        with pytest.raises(HissunoError) as ei:
            _connect(store, fakes.credentials(token, subdomain=bad))
        assert ei.value.http_status == 400 and getattr(ei.value, "field", None) == "credentials.subdomain"
        assert "subdomain: expected the part of your Zendesk address before .zendesk.com" in str(ei.value)
    assert fake.requests == [], "a malformed subdomain is refused before any request"

    revoked = fake.add_token()
    fake.revoke(revoked)
    with pytest.raises(HissunoError, match="did not accept the email and API token") as ei:
        _connect(store, fakes.credentials(revoked))
    assert ei.value.http_status == 400 and revoked not in str(ei.value)
    fake.anonymous_on_bad_auth = True  # the other answer Zendesk may give a wrong token
    with pytest.raises(HissunoError, match="did not accept the email and API token"):
        _connect(store, fakes.credentials(revoked))
    end_user = fake.add_token(email="gina@globex.com")
    with pytest.raises(HissunoError, match=r"gina@globex\.com is an end user in Zendesk"):
        _connect(store, fakes.credentials(end_user, email="gina@globex.com"))
    assert _one(store, "SELECT count(*) FROM integration_connections") == 0

    out = _connect(store, fakes.credentials(token, subdomain=" Acme "))
    assert out["account_label"] == "acme.zendesk.com"
    conn = repo.get_connection(store, out["connection_id"])
    assert conn.external_account_id == "acme" and conn.settings["account_email"] == fakes.ADMIN["email"]
    assert fake.requests_to("/api/v2/users/me.json")[-1].basic_auth == (f"{fakes.ADMIN['email']}/token", token)


def test_cli_connects_syncs_and_refuses_a_bad_token(store: Any, database_url: str, serve_fake: Any, tmp_path: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(T0.timestamp())
    fake, token = fakes.serve(monkeypatch, serve_fake, TICKETS, clock.time)
    clock.advance(3600)
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_ZENDESK_API_URL": fake.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    refused = cli("connect", "zendesk", "--set", "subdomain=acme", "--set", f"email={fakes.ADMIN['email']}",
                  "--set", "api_token=zd-not-a-token")
    assert refused.returncode != 0 and "did not accept the email and API token" in refused.stderr
    assert "Traceback" not in refused.stderr and "zd-not-a-token" not in refused.stderr
    bad_sub = cli("connect", "zendesk", "--set", "subdomain=acme.zendesk.com", "--set",
                  f"email={fakes.ADMIN['email']}", "--set", f"api_token={token}")
    assert bad_sub.returncode != 0 and "subdomain: expected" in bad_sub.stderr

    made = cli("connect", "zendesk", "--set", "subdomain=acme", "--set", f"email={fakes.ADMIN['email']}",
               "--set", f"api_token={token}", "--json")
    assert made.returncode == 0, made.stderr
    cid = json.loads(made.stdout)["connection_id"]
    assert cli("enable", cid, "tickets").returncode == 0
    first = cli("sync", cid, "tickets", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "success"
    assert _counts(store) == (SESSIONS, CONTACTS, COMPANIES)
    second = json.loads(cli("sync", cid, "tickets", "--json").stdout)
    assert second["counts"]["synced"] == 0 and token not in first.stdout + first.stderr


# -- sync ------------------------------------------------------------------------------------------


def test_first_sync_matches_the_dataset_and_fetches_each_user_and_org_once(
    store: Any, desk: tuple[FakeZendesk, str, str], caplog: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, cid, token = desk
    caplog.set_level(logging.DEBUG)
    ingested: list[str] = []  # each requester and organization is also ingested once a run, not once a ticket
    for kind in ("contact", "company"):
        def counted(self: StreamIngest, *a: Any, _kind: str = kind, _of: Any = getattr(StreamIngest, kind),
                    **kw: Any) -> Any:
            ingested.append(_kind)
            return _of(self, *a, **kw)
        monkeypatch.setattr(StreamIngest, kind, counted)
    result = run_stream_sync(cid, "tickets", store=store)

    assert result.status == "success", result.error
    assert _counts(store) == (SESSIONS, CONTACTS, COMPANIES)
    assert (ingested.count("contact"), ingested.count("company")) == (CONTACTS, COMPANIES)
    assert {r["email"] for r in _rows(store, "SELECT email FROM contacts")} == fake.expected_contacts()
    assert {r["domain"] for r in _rows(store, "SELECT domain FROM companies")} == fake.expected_companies()
    assert _session_ids(store) == {str(t["id"]) for t in fake.ingested_tickets()}
    # Public comments only (the internal note is left out), the requester's as the user's.
    assert _one(store, "SELECT count(*) FROM session_messages") == 2 * SESSIONS
    assert {r["sender_type"] for r in _rows(store, "SELECT sender_type FROM session_messages")} == {
        "user", "human_agent"}
    assert _one(store, "SELECT count(*) FROM session_messages WHERE content LIKE 'Internal%%'") == 0
    meta = _one(store, "SELECT s.user_metadata FROM sessions s JOIN integration_synced_records r ON"
                       " r.hissuno_id = s.id WHERE r.external_id = '1' AND r.hissuno_kind = 'sessions'")
    assert meta["zendesk_ticket_id"] == "1" and meta["company"] == "Globex" and meta["userId"] == "gina@globex.com"
    assert meta["zendesk_tags"] == "csv,t0" and meta["zendesk_user_tags"] == "vip"

    # The export: start_time first, then the cursor alone, until end_of_stream (14 tickets, 5 a page).
    pages = fake.export_requests()
    assert len(pages) == 3 and pages[0].query["start_time"] == "0"
    assert all("start_time" not in p.query and p.query["cursor"] for p in pages[1:])
    requesters = {t["requester_id"] for t in fake.ingested_tickets()}
    assert len(fake.requests_to("/api/v2/users/{id}.json")) == len(requesters) + 1  # + the connect's me
    assert len(fake.requests_to("/api/v2/organizations/{id}.json")) == 3
    assert len(fake.requests_to("/api/v2/tickets/{id}/comments.json")) == SESSIONS
    # The newest ticket (14, closed) is the high-water mark.
    assert result.cursor_after == _stamp(fake.tickets[-1]) == T0 + timedelta(minutes=13)
    assert token not in caplog.text


def _rows(store: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    with store.connection() as c:
        return list(c.execute(sql, args).fetchall())


def test_second_sync_writes_nothing_and_an_incremental_run_changes_exactly_k(
    store: Any, desk: tuple[FakeZendesk, str, str], clock: FakeClock,
) -> None:
    fake, cid, _ = desk
    first = run_stream_sync(cid, "tickets", store=store)
    assert first.counts["synced"] > 0
    versions = row_versions(store)
    second = run_stream_sync(cid, "tickets", store=store)
    assert second.status == "success" and second.counts["synced"] == 0
    assert row_versions(store) == versions, "a second sync writes no row"
    assert _starts(fake) == ["0", str(int(first.cursor_after.timestamp()))]
    stamp = _one(store, "SELECT max(updated_at) FROM sessions")

    # K = 4: a comment on ticket 1, a new subject on 2, ticket 3 solved (open before), one new solved ticket;
    # plus a new ticket on hold, which must not appear.
    fake.add_comment(1, 501, "Still broken on Safari.")
    fake.update_ticket(2, subject="CSV export: wrong encoding")
    fake.solve(3)
    fake.add_tickets(2)  # ticket 15 solved, 16 on hold
    clock.advance(3600)
    third = run_stream_sync(cid, "tickets", store=store)

    assert third.status == "success", third.error
    assert _starts(fake)[-1] == str(int(second.cursor_after.timestamp()))
    assert _session_ids(store, "s.updated_at > %s", stamp) == {"1", "2", "3", "15"}
    assert third.counts["synced"] == 4
    assert _counts(store) == (SESSIONS + 2, CONTACTS, COMPANIES)
    assert _one(store, "SELECT name FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id"
                       " WHERE r.external_id = '2' AND r.hissuno_kind = 'sessions'") == "CSV export: wrong encoding"

    versions = row_versions(store)
    full = run_stream_sync(cid, "tickets", SyncPlan.full(), store=store)
    assert full.status == "success" and full.counts["synced"] == 0
    assert row_versions(store) == versions, "a full resync writes no row"
    assert _counts(store) == (SESSIONS + 2, CONTACTS, COMPANIES)
    assert _starts(fake)[-1] == "0", "a full run reads the export from the start"


def test_a_ticket_with_more_comments_than_a_page_keeps_every_public_one(
    store: Any, desk: tuple[FakeZendesk, str, str], clock: FakeClock,
) -> None:
    """Comments come 100 a page (``page[size]``, then ``page[after]`` while ``meta.has_more``)."""
    fake, cid, _ = desk
    requester = fake.tickets.get("1")["requester_id"]
    for n in range(230):
        fake.add_comment(1, requester if n % 2 else 501, f"Follow-up {n}", public=n % 10 != 9)
    clock.advance(fake.tickets.stamps["1"] - clock.time() + 3600)  # each change stamps the ticket a minute on
    result = run_stream_sync(cid, "tickets", store=store)

    assert result.status == "success", result.error
    pages = fake.requests_to("/api/v2/tickets/1/comments.json")
    assert len(pages) == 3 and "page[after]" not in pages[0].query
    assert all(p.query["page[after]"] and p.query["page[size]"] == "100" for p in pages[1:])
    sid = _one(store, "SELECT hissuno_id FROM integration_synced_records WHERE external_id = '1'"
                      " AND hissuno_kind = 'sessions'")
    contents = [r["content"] for r in _rows(store, "SELECT content FROM session_messages WHERE session_id = %s"
                                                   " ORDER BY position", sid)]
    assert len(contents) == 2 + 207 and contents[-1] == "Follow-up 228"  # 23 of the 230 are internal
    assert _one(store, "SELECT count(*) FROM session_messages") == 2 * SESSIONS + 207


def test_a_backfill_window_is_honoured(store: Any, desk: tuple[FakeZendesk, str, str]) -> None:
    fake, cid, _ = desk
    result = run_stream_sync(cid, "tickets", SyncPlan.backfill(T0 + timedelta(minutes=3), T0 + timedelta(minutes=7)),
                             store=store)
    assert result.status == "success", result.error
    # Tickets 4..7 were updated in [3, 7) minutes; 5 is pending.
    assert _session_ids(store) == {"4", "6", "7"}
    assert fake.export_requests()[0].query["start_time"] == str(int((T0 + timedelta(minutes=3)).timestamp()))
    assert repo.get_stream(store, cid, "tickets").last_sync_at is None, "a backfill leaves the live cursor"


def test_a_sync_under_429_bursts_loses_nothing_and_waits_as_told(
    store: Any, desk: tuple[FakeZendesk, str, str], clock: FakeClock,
) -> None:
    fake, cid, _ = desk
    listing = fake.inject_429(EXPORT, retry_after=11, when=lambda r: "cursor" in r.query)
    burst = fake.rate_limit(every=3, retry_after=7)
    result = run_stream_sync(cid, "tickets", store=store)

    assert result.status == "success", result.error
    assert _counts(store) == (SESSIONS, CONTACTS, COMPANIES)
    assert listing.hits == 1 and burst.hits >= 5
    assert sorted(clock.sleeps) == [7.0] * burst.hits + [11.0]
    # Each refused request was asked again exactly Retry-After later.
    seen = fake.requests
    again = [b.at - a.at for a, b in itertools.pairwise(seen)
             if (a.path, a.query_list) == (b.path, b.query_list)]
    assert sorted(again) == [7.0] * burst.hits + [11.0]


def test_one_bad_ticket_goes_to_ingest_errors_and_the_run_goes_on(
    store: Any, desk: tuple[FakeZendesk, str, str],
) -> None:
    fake, cid, _ = desk
    fake.tickets.records["1"]["created_at"] = "last tuesday"
    result = run_stream_sync(cid, "tickets", store=store)
    assert result.status == "success" and result.counts["failed"] == 1
    assert _session_ids(store) == {str(t["id"]) for t in fake.ingested_tickets()} - {"1"}
    errors = _rows(store, "SELECT kind, external_id, reason FROM ingest_errors")
    assert [(e["kind"], e["external_id"]) for e in errors] == [("sessions", "1")] and "created_at" in errors[0]["reason"]


def test_a_listing_failure_fails_the_run_and_keeps_the_cursor(
    store: Any, desk: tuple[FakeZendesk, str, str], clock: FakeClock,
) -> None:
    fake, cid, _ = desk
    assert run_stream_sync(cid, "tickets", store=store).status == "success"
    cursor = repo.get_stream(store, cid, "tickets").last_sync_at
    fake.add_tickets(6, status="solved")
    clock.advance(3600)
    down = fake.inject_5xx(EXPORT, times=None, when=lambda r: "cursor" in r.query)
    failed = run_stream_sync(cid, "tickets", store=store)
    assert failed.status == "error" and failed.retriable and down.hits >= 2
    assert repo.get_stream(store, cid, "tickets").last_sync_at == cursor
    fake.faults.remove(down)
    again = run_stream_sync(cid, "tickets", store=store)
    assert again.status == "success" and _counts(store)[0] == SESSIONS + 6


def test_a_revoked_token_fails_as_provider_auth_without_retrying(
    store: Any, desk: tuple[FakeZendesk, str, str], clock: FakeClock,
) -> None:
    fake, cid, token = desk
    assert run_stream_sync(cid, "tickets", store=store).status == "success"
    cursor = repo.get_stream(store, cid, "tickets").last_sync_at
    fake.revoke(token)
    before = len(fake.export_requests())
    failed = run_stream_sync(cid, "tickets", store=store)
    assert failed.status == "error" and failed.error_code == ProviderAuthError.code and not failed.retriable
    assert len(fake.export_requests()) == before + 1 and clock.sleeps == []
    stream = repo.get_stream(store, cid, "tickets")
    assert stream.last_sync_at == cursor and token not in (stream.last_sync_error or "")


def test_deleted_tickets_in_the_export_delete_their_sessions(
    store: Any, desk: tuple[FakeZendesk, str, str], clock: FakeClock,
) -> None:
    fake, cid, _ = desk
    run_stream_sync(cid, "tickets", store=store)
    fake.delete_ticket(2)
    fake.delete_ticket(3)  # never ingested (open): nothing to delete
    clock.advance(3600)
    result = run_stream_sync(cid, "tickets", store=store)
    assert result.status == "success" and result.counts["deleted"] == 1
    assert _session_ids(store, "s.deleted_at IS NOT NULL") == {"2"}
    assert result.cursor_after == _stamp(fake.tickets.get("3"))


def test_the_export_is_paced_to_ten_requests_a_minute(store: Any, desk: tuple[FakeZendesk, str, str],
                                                      clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, cid, _ = desk
    _pace_on(monkeypatch, clock)  # the provider sees the pacing, and counts requests per minute
    fake.max_export_page, fake.export_limit = 1, 10
    result = run_stream_sync(cid, "tickets", store=store)
    assert result.status == "success" and _counts(store)[0] == SESSIONS
    pages = fake.export_requests()
    assert len(pages) == TICKETS  # one ticket a page
    # One every six seconds; the fake's 10-a-minute limit never answered 429 (which would add a retry wait).
    assert [b.at - a.at for a, b in itertools.pairwise(pages)] == [pytest.approx(6.0)] * (TICKETS - 1)
    assert clock.sleeps == [pytest.approx(6.0)] * (TICKETS - 1)


class _CountingBudget:
    """The account's shared budget as the runtime hands it to every client: counts what it lets out."""

    def __init__(self) -> None:
        self.acquired = 0

    def acquire(self) -> float:
        self.acquired += 1
        return 0.0


def test_export_requests_also_spend_the_accounts_shared_budget(
    store: Any, desk: tuple[FakeZendesk, str, str], clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Zendesk's account limit counts the export too: its pacing adds to the shared budget, never
    replaces it (else a run's export pages would go out on top of a full account budget)."""
    fake, cid, _ = desk
    shared = _CountingBudget()
    retries_on(monkeypatch, clock, rate_limiter=shared)
    before = len(fake.requests)
    result = run_stream_sync(cid, "tickets", store=store)
    assert result.status == "success" and _counts(store)[0] == SESSIONS
    sent = fake.requests[before:]
    assert len([r for r in sent if r.path == EXPORT]) == 3  # 14 tickets, five a page
    assert shared.acquired == len(sent), "every request, export pages included, went through the shared budget"


def _starts(fake: FakeZendesk) -> list[str]:
    """The ``start_time`` of every run's first export request, in order."""
    return [r.query["start_time"] for r in fake.export_requests() if "start_time" in r.query]


# -- webhooks --------------------------------------------------------------------------------------


class _Woken:
    def __init__(self) -> None:
        self.targets: list[tuple[str, str]] = []

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        self.targets.extend(targets)


def test_signed_ticket_events_ingest_and_delete_and_the_next_sync_agrees(
    store: Any, desk: tuple[FakeZendesk, str, str], clock: FakeClock,
) -> None:
    fake, cid, _ = desk
    run_stream_sync(cid, "tickets", store=store)
    signer = Signer(registry.get_plugin("zendesk").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    woken = _Woken()
    url = f"https://hissuno.invalid/hissuno/api/plugins/webhook/zendesk/{cid}"

    def deliver(event: dict[str, Any], sign: Signer = signer, at: float | None = None) -> Any:
        d = sign(event, url=url, timestamp=at or clock.time(), event_id=event["id"])
        return receive_webhook("zendesk", IntakeRequest("POST", d.url, d.headers, d.body), connection_id=cid,
                               store=store, dispatcher=woken, now=clock.time())

    fake.solve(3)
    solved = fake.event("status_changed", 3)
    assert deliver(solved).status == 200
    assert deliver(solved).body.get("duplicate") is True, "a replay is not stored twice"
    deliver(fake.event("deleted", 2))
    with pytest.raises(WebhookSignatureError):
        deliver(fake.event("deleted", 4), sign=signer.forged())
    with pytest.raises(WebhookSignatureError):
        deliver(fake.event("deleted", 6), at=clock.time() - 3600)

    drained = process_inbox(cid, "tickets", store=store)
    assert (drained.done, drained.failed) == (2, 0), drained.errors
    assert "3" in _session_ids(store, "s.deleted_at IS NULL")
    assert _session_ids(store, "s.deleted_at IS NOT NULL") == {"2"}, "forged and stale deletes change nothing"

    clock.advance(3600)
    after = run_stream_sync(cid, "tickets", store=store)
    assert after.status == "success" and after.counts["synced"] == 0, "the webhook wrote what the sync would"
