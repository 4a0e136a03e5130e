"""The ``gong`` plugin end to end against the stateful fake of ``tests/fakes/gong.py`` on 127.0.0.1.

Connect goes through the real connect flow (and the real CLI as a subprocess), runs through
``run_stream_sync`` into the real store, webhooks through the real intake and inbox. Every HTTP client's
retries and the connection's rate budget wait on the fake's clock, so no test sleeps for real and the
fake, which enforces Gong's 3 requests per second on that clock, sees exactly the pacing production does.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit import ProviderAuthError, RateLimited, WebhookSignatureError
from hissuno_airflow.kit.errors import ConnectFailed
from hissuno_airflow.kit.http import RateBudget
from hissuno_airflow.plugins.gong.mapping import normalize_base_url
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.runtime.webhooks import IntakeRequest, receive_webhook
from hissuno_airflow.runtime.webhooks.inbox import process_inbox
from hissuno_airflow.store import connections as repo
from tests.fakes.gong import ACCESS_KEY, ACCESS_SECRET, BASE_URL, Gong, credentials
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer
from tests.fixtures.cli import standalone_env
from tests.fixtures.fakes import retries_on
from tests.fixtures.store import row_versions

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
COUNT = 230
FIRST = (T0 - timedelta(hours=COUNT)).timestamp()
"""The first call started COUNT hours before T0, one an hour, the last at T0 - 1h."""
LAST = T0 - timedelta(hours=1)
HOOK_URL = "https://hissuno.example.com/hissuno/api/plugins/webhook/gong/"


class Pacing:
    """The connection's rate budget on the fake clock; its waits are kept apart from retry waits."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []
        plugin = registry.get_plugin("gong")
        assert plugin.rate_limit_per_minute is not None
        self.budget = RateBudget(plugin.rate_limit_per_minute, burst=plugin.rate_limit_burst, clock=clock.time,
                                 sleep=self.wait)

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        # Whole microseconds: at epoch scale a smaller step would not move the float clock at all.
        self.clock.advance(math.ceil(seconds * 1e6) / 1e6)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return FakeClock(T0.timestamp())


@pytest.fixture
def pacing(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Pacing:
    pacing = Pacing(clock)
    retries_on(monkeypatch, clock, pacing.budget)
    return pacing


@pytest.fixture
def fake(serve_fake: Any, clock: FakeClock, pacing: Pacing, monkeypatch: pytest.MonkeyPatch) -> Gong:
    fake = serve_fake(Gong(clock=clock.time))
    fake.add_key()
    fake.add_calls(COUNT, at=FIRST)
    monkeypatch.setenv("HISSUNO_GONG_API_URL", fake.url)
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    return fake


def _connect(store: Any, **creds: str) -> dict[str, Any]:
    return connect_api_key(registry.get_plugin("gong"), store, project_id=settings.default_project_id(),
                           user_id="tester", credentials={**credentials(), **creds})


@pytest.fixture
def cid(store: Any, fake: Gong, clock: FakeClock) -> str:
    out = _connect(store)
    enable_stream(store, out["connection_id"], "calls")
    # The connect request counted in Gong's per-second window; the first sync comes a moment later.
    clock.advance(1)
    return str(out["connection_id"])


def _one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return next(iter(row.values()))


BY_CALL = "FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id WHERE r.external_id = %s"


def _messages(store: Any, call_id: str) -> list[tuple[str, str]]:
    with store.connection() as c:
        rows = c.execute(f"SELECT m.sender_type, m.content FROM session_messages m WHERE m.session_id = "
                         f"(SELECT s.id {BY_CALL}) ORDER BY m.created_at", (call_id,)).fetchall()
    return [(r["sender_type"], r["content"]) for r in rows]


# -- connect -----------------------------------------------------------------------------------------


def test_base_url_must_be_https_and_is_stored_without_v2() -> None:
    assert normalize_base_url(" https://US-55616.api.gong.io/v2/ ") == "https://us-55616.api.gong.io"
    for raw, says in (("api.gong.io", "without a scheme: write 'https://api.gong.io'"),
                      ("http://api.gong.io", "scheme 'http': Gong serves its API over https only"),
                      ("", "got nothing"), ("https://api.gong.io/?k=1", "no user name, query or fragment")):
        with pytest.raises(Exception) as ei:
            normalize_base_url(raw)
        assert str(ei.value).startswith("base_url: expected the https URL Gong gives your company") and says in str(
            ei.value), str(ei.value)
        assert getattr(ei.value, "field", None) == "base_url"


def test_connect_checks_the_url_then_the_keys_and_names_the_company(store: Any, fake: Gong) -> None:
    with pytest.raises(ConnectFailed) as ei:
        _connect(store, base_url="us-55616.api.gong.io")
    assert "without a scheme" in str(ei.value) and ei.value.field == "credentials.base_url"
    assert fake.count("/v2/workspaces") == 0, "a malformed URL is refused before any request"

    with pytest.raises(ConnectFailed) as ei:
        _connect(store, access_key_secret="wrong-secret")
    assert "401" in str(ei.value) and "wrong-secret" not in str(ei.value)
    assert _one(store, "SELECT count(*) FROM integration_connections") == 0

    out = _connect(store, base_url=BASE_URL + "/v2/")
    row = repo.get_connection(store, out["connection_id"])
    assert row.external_account_id == "workspace:5550001234"
    assert row.account_label == "Gong: Acme Sales (+1 workspaces)"
    request = fake.requests_to("/v2/workspaces")[-1]
    assert request.basic_auth == (ACCESS_KEY, ACCESS_SECRET)
    from hissuno_airflow.runtime.credentials import load_credentials

    assert load_credentials(store, row)["base_url"] == BASE_URL


# -- sync ------------------------------------------------------------------------------------------


def test_first_sync_pages_by_records_cursor_batches_parties_and_transcripts(
    store: Any, fake: Gong, cid: str, pacing: Pacing, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run_stream_sync(cid, "calls", store=store)

    assert result.status == "success", result.error
    assert result.counts["synced"] == COUNT and result.counts["failed"] == 0
    assert _one(store, "SELECT count(*) FROM sessions WHERE source = 'gong' AND session_type = 'meeting'") == COUNT
    buyers = {p["emailAddress"] for ps in fake.parties.values() for p in ps if p["affiliation"] == "External"}
    assert _one(store, "SELECT count(*) FROM contacts") == len(buyers) == COUNT
    monologues = sum(len(t) for t in fake.transcripts.values())
    assert _one(store, "SELECT count(*) FROM session_messages") == monologues
    assert result.cursor_after == LAST

    # Three listing pages: the 2nd and 3rd carry the cursor Gong put in records.cursor.
    listing = fake.requests_to("/v2/calls")
    assert len(listing) == 3 and "cursor" not in listing[0].query
    assert all(r.query.get("cursor") for r in listing[1:])
    for path in ("/v2/calls/extensive", "/v2/calls/transcript"):
        batches = [r.json()["filter"]["callIds"] for r in fake.requests_to(path)]
        assert [len(b) for b in batches] == [100, 100, 30] and [i for b in batches for i in b] == fake.call_ids()
    assert all(r.json()["contentSelector"]["exposedFields"]["parties"] is True
               for r in fake.requests_to("/v2/calls/extensive"))

    # Gong's 3 requests a second: the budget spaced the 10 requests, so the fake never answered 429.
    assert len(fake.requests) == 1 + 9 and all(r.at >= 0 for r in fake.requests)
    assert len(pacing.waits) == 8 and sum(pacing.waits) == pytest.approx(8 / 3)
    assert ACCESS_SECRET not in caplog.text


def test_speakers_are_mapped_as_the_reference_does(store: Any, fake: Gong, cid: str) -> None:
    assert run_stream_sync(cid, "calls", store=store).status == "success"
    call_id = fake.call_ids()[4]  # serial 5: an unmatched speaker joins at the end
    call = fake.calls.get(call_id)
    assert call is not None
    assert _messages(store, call_id) == [
        ("human_agent", "[Rep 0]: Thanks for joining, this is call 5. Shall we start?"),
        ("user", "[Buyer 5]: Our invoices keep failing to export. It blocks month end."),
        ("human_agent", "[Rep 0]: Understood, I will file that with the team."),
        ("human_agent", "[509]: Sorry, joining late from the car."),
    ]
    with store.connection() as c:
        row = c.execute(f"SELECT s.name, s.user_metadata, s.first_message_at, s.last_activity_at, "
                        f"(SELECT min(m.created_at) FROM session_messages m WHERE m.session_id = s.id) AS first "
                        f"{BY_CALL}", (call_id,)).fetchone()
    started = datetime.fromisoformat(call["started"])
    assert row["name"] == "Discovery call 5"
    meta = row["user_metadata"]
    assert meta["gong_call_id"] == call_id and meta["gong_duration_seconds"] == call["duration"]
    assert meta["email"] == meta["userId"] == "buyer5@client5.example" and meta["gong_participants_count"] == 2
    assert row["first_message_at"] == started and row["first"] == started + timedelta(milliseconds=1200)
    assert row["last_activity_at"] == started + timedelta(seconds=call["duration"])
    untranscribed = fake.call_ids()[9]  # serial 10: no transcript yet
    assert _messages(store, untranscribed) == []


def test_second_sync_writes_nothing_then_exactly_the_edited_and_the_new(store: Any, fake: Gong, cid: str) -> None:
    first = run_stream_sync(cid, "calls", store=store)
    versions = row_versions(store)
    again = run_stream_sync(cid, "calls", store=store)
    assert again.status == "success" and again.counts["synced"] == 0 and again.counts["failed"] == 0
    assert row_versions(store) == versions, "a second sync writes no row"
    # Incremental from the newest start minus the 24 h look-back, inclusive.
    assert fake.requests_to("/v2/calls")[-1].query["fromDateTime"] == (LAST - timedelta(hours=24)).isoformat()

    ids = fake.call_ids()
    fake.edit_call(ids[-2], title="Renewal call (re-processed)")
    fake.edit_call(ids[-5], transcript=[{"speakerId": "x", "topic": None,
                                         "sentences": [{"start": 0, "end": 900, "text": "Corrected."}]}])
    late = fake.add_calls(1, at=(LAST - timedelta(hours=3, minutes=30)).timestamp())  # processed late
    fresh = fake.add_calls(2, at=(T0 + timedelta(minutes=10)).timestamp())
    third = run_stream_sync(cid, "calls", store=store)

    assert third.status == "success" and third.counts["synced"] == 5 and third.counts["failed"] == 0
    assert _one(store, "SELECT count(*) FROM sessions") == COUNT + 3
    assert _one(store, f"SELECT s.name {BY_CALL}", ids[-2]) == "Renewal call (re-processed)"
    assert _messages(store, ids[-5]) == [("human_agent", "[x]: Corrected.")]
    assert all(_one(store, f"SELECT count(*) {BY_CALL}", c["id"]) == 1 for c in late + fresh)
    assert third.cursor_after == datetime.fromisoformat(fresh[-1]["started"]) > first.cursor_after

    versions = row_versions(store)
    full = run_stream_sync(cid, "calls", store=store, plan=SyncPlan.full())
    assert full.status == "success" and full.counts["synced"] == 0 and full.counts["deleted"] == 0
    assert row_versions(store) == versions, "a full resync writes no row"
    assert "fromDateTime" not in fake.requests_to("/v2/calls")[-1].query
    assert _one(store, "SELECT count(*) FROM sessions") == COUNT + 3


def test_a_full_listing_deletes_calls_gong_no_longer_has(store: Any, fake: Gong, cid: str) -> None:
    assert run_stream_sync(cid, "calls", store=store).counts["synced"] == COUNT
    gone = fake.call_ids()[7]
    fake.remove_call(gone)
    incremental = run_stream_sync(cid, "calls", store=store)
    assert incremental.counts["deleted"] == 0, "a windowed listing proves nothing about older calls"
    full = run_stream_sync(cid, "calls", store=store, plan=SyncPlan.full())
    assert full.status == "success" and full.counts["deleted"] == 1 and full.counts["synced"] == 0
    assert _one(store, f"SELECT s.deleted_at IS NOT NULL {BY_CALL}", gone) is True
    assert _one(store, "SELECT count(*) FROM sessions WHERE deleted_at IS NULL") == COUNT - 1


def test_a_backfill_window_is_honoured_and_leaves_the_cursor(store: Any, fake: Gong, cid: str) -> None:
    since, until = T0 - timedelta(hours=50), T0 - timedelta(hours=20)
    result = run_stream_sync(cid, "calls", store=store, plan=SyncPlan.backfill(since, until))
    assert result.status == "success" and result.counts["synced"] == 30
    q = fake.requests_to("/v2/calls")[-1].query
    assert (q["fromDateTime"], q["toDateTime"]) == (since.isoformat(), until.isoformat())
    assert repo.get_stream(store, cid, "calls").last_sync_at is None
    # The user's filters narrow an ordinary run the same way.
    enable_stream(store, cid, "calls", filters={"from_date": (T0 - timedelta(hours=10)).isoformat(),
                                                "to_date": (T0 - timedelta(hours=5)).isoformat()})
    narrowed = run_stream_sync(cid, "calls", store=store)
    assert narrowed.counts["synced"] == 5 and _one(store, "SELECT count(*) FROM sessions") == 35


def test_429_bursts_wait_as_retry_after_says_and_lose_nothing(
    store: Any, fake: Gong, cid: str, clock: FakeClock
) -> None:
    burst = fake.rate_limit(every=2, retry_after=7)
    result = run_stream_sync(cid, "calls", store=store)
    assert result.status == "success", result.error
    assert result.counts["synced"] == COUNT and _one(store, "SELECT count(*) FROM sessions") == COUNT
    # Every request after the first met one 429 (every second request is refused, the retry passes).
    assert burst.hits == 8 and clock.sleeps == [7.0] * 8
    sent = [r for r in fake.requests if r.path.startswith("/v2/calls")]
    assert len(sent) == 9 + 8
    # Each refused request came again exactly 7 s later (the budget had refilled meanwhile).
    assert all(b.at - a.at == pytest.approx(7) for a, b in zip(sent[1::2], sent[2::2], strict=True))


def test_the_daily_limit_fails_the_run_retriably_and_keeps_the_cursor(store: Any, fake: Gong, cid: str) -> None:
    first = run_stream_sync(cid, "calls", store=store)
    fake.per_day = len(fake.requests) + 1
    fake.add_calls(1, at=T0.timestamp())
    limited = run_stream_sync(cid, "calls", store=store)
    assert limited.status == "error" and limited.error_code == RateLimited.code and limited.retriable
    assert "429" in (limited.error or "")
    assert repo.get_stream(store, cid, "calls").last_sync_at == first.cursor_after


def test_one_bad_call_goes_to_ingest_errors_and_the_run_continues(store: Any, fake: Gong, cid: str) -> None:
    bad = fake.call_ids()[3]
    fake.edit_call(bad, started="yesterday-ish", scheduled=None)
    result = run_stream_sync(cid, "calls", store=store)
    assert result.status == "success" and result.counts["failed"] == 1 and result.counts["synced"] == COUNT - 1
    with store.connection() as c:
        err = c.execute("SELECT external_id, reason FROM ingest_errors WHERE connection_id = %s", (cid,)).fetchone()
    assert err["external_id"] == bad and "updated_at" in err["reason"]


def test_a_listing_failure_fails_the_run_and_keeps_the_cursor(store: Any, fake: Gong, cid: str) -> None:
    first = run_stream_sync(cid, "calls", store=store)
    fake.add_calls(150, at=(T0 + timedelta(minutes=1)).timestamp(), step=60)
    down = fake.inject_5xx("/v2/calls", times=None, when=lambda r: "cursor" in r.query)
    failed = run_stream_sync(cid, "calls", store=store)
    assert failed.status == "error" and failed.retriable and down.hits == 5
    stream = repo.get_stream(store, cid, "calls")
    assert stream.last_sync_at == first.cursor_after and stream.last_sync_status == "error"
    fake.faults.remove(down)
    recovered = run_stream_sync(cid, "calls", store=store)
    assert recovered.status == "success" and recovered.counts["synced"] == 150


def test_a_revoked_key_asks_for_a_reconnect_and_is_not_retried(store: Any, fake: Gong, cid: str) -> None:
    run_stream_sync(cid, "calls", store=store)
    fake.revoke_key(ACCESS_KEY)
    before = len(fake.requests)
    failed = run_stream_sync(cid, "calls", store=store)
    assert failed.status == "error" and failed.error_code == ProviderAuthError.code and not failed.retriable
    assert len(fake.requests) == before + 1, "a 401 is not retried"
    assert ACCESS_SECRET not in (failed.error or "")


# -- webhooks --------------------------------------------------------------------------------------


class _Woken:
    def __init__(self) -> None:
        self.targets: list[tuple[str, str]] = []

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        self.targets.extend(targets)


def test_rule_webhooks_verified_once_forged_stale_replayed(store: Any, fake: Gong, cid: str, clock: FakeClock) -> None:
    signer = Signer(registry.get_plugin("gong").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    woken = _Woken()
    url = HOOK_URL + cid

    def deliver(body: dict[str, Any], sign: Signer = signer, **kw: Any) -> Any:
        d = sign(body, url=kw.pop("signed_url", url), timestamp=kw.pop("at", clock.time()), **kw)
        return receive_webhook("gong", IntakeRequest("POST", url, d.headers, d.body), connection_id=cid,
                               store=store, dispatcher=woken, now=clock.time())

    call_id = fake.call_ids()[-2]  # the newest call has no transcript yet; this one has
    fake.edit_call(call_id, title="Pricing call, processed")
    body = fake.webhook_body(call_id)
    first = deliver(body)
    assert first.status == 200 and first.body["queued"] == 1 and first.body["event_id"] == call_id
    assert deliver(body).body["duplicate"] is True, "a replay is stored once"
    for bad, reason in ((dict(sign=signer.forged()), "bad_signature"), (dict(at=clock.time() - 3600), "stale"),
                        (dict(signed_url=HOOK_URL + "other-connection"), "bad_signature")):
        other = fake.webhook_body(fake.call_ids()[-4])
        with pytest.raises(WebhookSignatureError) as ei:
            deliver(other, **bad)
        assert ei.value.reason == reason  # type: ignore[attr-defined]
    test_event = fake.webhook_body(fake.call_ids()[-3], is_test=True)
    assert deliver(test_event).body["queued"] == 1
    assert woken.targets == [(cid, "calls"), (cid, "calls")]

    drained = process_inbox(cid, "calls", store=store)
    assert (drained.done, drained.failed) == (2, 0), drained.errors
    assert _one(store, "SELECT count(*) FROM sessions") == 1, "the test event ingests nothing"
    assert _one(store, f"SELECT s.name {BY_CALL}", call_id) == "Pricing call, processed"
    assert len(_messages(store, call_id)) == len(fake.transcripts[call_id])
    # The webhook wrote what the sync writes: the sync then leaves that call alone.
    synced = run_stream_sync(cid, "calls", store=store)
    assert synced.counts["synced"] == COUNT - 1 and synced.counts["skipped"] >= 1


def test_a_rule_jwt_without_exp_is_accepted_fresh_and_refused_stale_or_replayed(
    store: Any, fake: Gong, cid: str, clock: FakeClock,
) -> None:
    """providers.md 9.4 leaves Gong's ``exp``/``iat`` unconfirmed: a token without ``exp`` is not refused
    for that; its ``iat`` then bounds its age (5 minutes), and a replay is stored once."""
    signer = Signer(registry.get_plugin("gong").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    url = HOOK_URL + cid

    def deliver(call_id: str, at: float, **kw: Any) -> Any:
        d = signer(fake.webhook_body(call_id), url=url, timestamp=at, lifetime=None, **kw)
        return receive_webhook("gong", IntakeRequest("POST", url, d.headers, d.body), connection_id=cid,
                               store=store, dispatcher=_Woken(), now=clock.time())

    ids = fake.call_ids()
    assert deliver(ids[-2], clock.time() - 60).body["queued"] == 1
    assert deliver(ids[-2], clock.time() - 60).body["duplicate"] is True
    assert deliver(ids[-3], clock.time(), issued=False).body["queued"] == 1, "neither exp nor iat"
    assert deliver(ids[-3], clock.time(), issued=False).body["duplicate"] is True
    with pytest.raises(WebhookSignatureError) as ei:
        deliver(ids[-4], clock.time() - 3600)
    assert ei.value.reason == "stale"  # type: ignore[attr-defined]
    with pytest.raises(WebhookSignatureError):  # issued an hour from now
        deliver(ids[-4], clock.time() + 3600)
    assert _one(store, "SELECT count(*) FROM webhook_events WHERE connection_id = %s", cid) == 2


# -- the real CLI ------------------------------------------------------------------------------------


def test_cli_connect_refuses_a_url_without_scheme_and_a_bad_key_then_connects_and_syncs(
    store: Any, database_url: str, tmp_path: Any, serve_fake: Any
) -> None:
    # Real time here: the CLI is another process, so the fake keeps real time and limits generously.
    fake = serve_fake(Gong(per_second=None))
    fake.add_key()
    fake.add_calls(12, at=FIRST)
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_GONG_API_URL": fake.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    keys = ["--set", f"access_key={ACCESS_KEY}", "--set", f"access_key_secret={ACCESS_SECRET}"]
    proc = cli("connect", "gong", *keys, "--set", "base_url=api.gong.io")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "base_url: expected the https URL Gong gives your company" in proc.stderr and "without a scheme" in proc.stderr
    proc = cli("connect", "gong", "--set", f"access_key={ACCESS_KEY}", "--set", "access_key_secret=nope",
               "--set", f"base_url={BASE_URL}")
    assert proc.returncode != 0 and "401" in proc.stderr and "Traceback" not in proc.stderr
    assert _one(store, "SELECT count(*) FROM integration_connections") == 0

    proc = cli("connect", "gong", *keys, "--set", f"base_url={BASE_URL}", "--json")
    assert proc.returncode == 0, proc.stderr
    conn = json.loads(proc.stdout)["connection_id"]
    assert ACCESS_SECRET not in proc.stdout + proc.stderr
    assert cli("enable", conn, "calls").returncode == 0
    proc = cli("sync", conn, "calls", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "success" and out["counts"]["synced"] == 12
    assert ACCESS_SECRET not in proc.stdout + proc.stderr
