"""The ``fathom`` plugin against the stateful fake of ``tests/fakes/fathom.py`` on 127.0.0.1.

Connect through the real connect flow (and the real CLI), runs through ``run_stream_sync`` into the real
store, webhooks through the real intake and inbox. Retries wait on a fake clock, so Retry-After waits are
asserted, not taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit import InputError, ProviderAuthError, WebhookSignatureError
from hissuno_airflow.plugins.fathom.client import account_id
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.runtime.webhooks import IntakeRequest, receive_webhook
from hissuno_airflow.runtime.webhooks.inbox import process_inbox
from hissuno_airflow.store import connections as repo
from tests.fakes import fathom as fakes
from tests.fakes.fathom import Fathom
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer
from tests.fixtures.cli import standalone_env
from tests.fixtures.fakes import retries_on
from tests.fixtures.store import row_versions

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
RETRY_AFTER = 9


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake's clock; every HTTP client's retries wait on it instead of sleeping."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def account(store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[Fathom, str, str]:
    """Ten meetings (two with speakerless transcripts, one without a summary) and a connection."""
    fake, key = fakes.serve(monkeypatch, serve_fake, 7, clock=clock.time)
    fake.add_meetings(2, speakerless=True)
    fake.add_meetings(1, no_summary=True)
    cid = fakes.connect(store, key)
    enable_stream(store, cid, "meetings")
    return fake, cid, key


def _one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return next(iter(row.values()))


def _session(store: Any, external_id: str) -> dict[str, Any]:
    with store.connection() as c:
        return c.execute(
            "SELECT s.* FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id"
            " WHERE r.external_id = %s AND r.hissuno_kind = 'sessions'", (external_id,)).fetchone()


def _messages(store: Any, external_id: str) -> list[dict[str, Any]]:
    sid = _session(store, external_id)["id"]
    with store.connection() as c:
        return c.execute("SELECT * FROM session_messages WHERE session_id = %s ORDER BY created_at, id",
                         (sid,)).fetchall()


# -- connect -----------------------------------------------------------------------------------------


def test_connect_names_the_account_by_a_key_hash_and_two_keys_never_collide(
    store: Any, account: tuple[Fathom, str, str]
) -> None:
    fake, cid, key = account
    conn = repo.get_connection(store, cid)
    assert conn.external_account_id == account_id(key) and key not in conn.external_account_id
    assert conn.account_label == "Fathom (riley@acme.io)"
    # A second key of the same team (same recorded_by): its own connection, not an overwrite.
    other = fake.add_key("fathom_live_key_second_user_9")
    second = fakes.connect(store, other)
    assert second != cid and repo.get_connection(store, cid).external_account_id == account_id(key)
    assert fake.requests_to("/meetings")[0].header("x-api-key") == key


def test_connect_refuses_a_wrong_or_blank_key_with_a_clear_message(store: Any, account: tuple[Fathom, str, str]) -> None:
    plugin = registry.get_plugin("fathom")
    before = _one(store, "SELECT count(*) FROM integration_connections")
    with pytest.raises(Exception) as refused:
        connect_api_key(plugin, store, project_id=settings.default_project_id(), user_id="t",
                        credentials={"api_key": "fathom_wrong_key_123456"})
    assert refused.value.http_status == 400 and "401" in str(refused.value)  # type: ignore[attr-defined]
    assert "fathom_wrong_key_123456" not in str(refused.value)
    with pytest.raises(InputError, match="api_key"):
        connect_api_key(plugin, store, project_id=settings.default_project_id(), user_id="t",
                        credentials={"api_key": "  "})
    assert _one(store, "SELECT count(*) FROM integration_connections") == before


# -- sync --------------------------------------------------------------------------------------------


def test_first_sync_pages_falls_back_for_transcripts_and_summaries_and_waits_on_429(
    store: Any, account: tuple[Fathom, str, str], clock: FakeClock
) -> None:
    fake, cid, _key = account
    limited = fake.inject_429("/meetings", retry_after=RETRY_AFTER, when=lambda r: bool(r.query.get("cursor")))

    result = run_stream_sync(cid, "meetings", store=store)

    assert result.status == "success", result.error
    assert result.counts["synced"] == 10 and result.counts["failed"] == 0
    assert _one(store, "SELECT count(*) FROM sessions WHERE source = 'fathom' AND session_type = 'meeting'") == 10
    assert limited.hits == 1 and clock.sleeps == [RETRY_AFTER]
    pages = [r for r in fake.requests_to("/meetings") if "include_transcript" in r.query]
    assert len(pages) == 4 and all(r.query["include_summary"] == "true" for r in pages)
    # Only the two speakerless transcripts and the one missing summary were fetched separately.
    assert sorted(r.path for r in fake.requests_to("/recordings/{rid}/transcript")) == [
        "/recordings/1008/transcript", "/recordings/1009/transcript"]
    assert [r.path for r in fake.requests_to("/recordings/{rid}/summary")] == ["/recordings/1010/summary"]
    assert result.cursor_after == max(datetime.fromisoformat(m["created_at"].replace("Z", "+00:00"))
                                      for m in fake.meetings)

    msgs = _messages(store, "1008")
    assert msgs[0]["sender_type"] == "system" and msgs[0]["content"].startswith("[Meeting Summary]\n## Summary")
    assert msgs[1]["content"] == "[Riley Host]: Thanks for joining, shall we look at the rollout?"
    assert msgs[1]["sender_type"] == "human_agent" and msgs[2]["sender_type"] == "user"
    assert msgs[-1]["content"] == "[Action Items]\n- Send export fix ETA to customer 1008 (Riley Host)"
    assert msgs[2]["created_at"] - msgs[1]["created_at"] == timedelta(seconds=67)
    assert "[Meeting Summary]" in _messages(store, "1010")[0]["content"]
    s = _session(store, "1003")
    assert s["name"] == "Rollout check-in 1003"
    meta = s["user_metadata"]
    assert meta["fathom_recorded_by"] == "riley@acme.io" and meta["fathom_participants_count"] == 2
    assert meta["email"] == "casey1003@customer1.com" and meta["fathom_duration_seconds"] == 1690
    assert _one(store, "SELECT count(*) FROM contacts WHERE email = 'casey1003@customer1.com'") == 1


def test_second_sync_writes_nothing_then_new_meetings_are_added_exactly(
    store: Any, account: tuple[Fathom, str, str]
) -> None:
    fake, cid, _key = account
    first = run_stream_sync(cid, "meetings", store=store)
    versions = row_versions(store)
    assert run_stream_sync(cid, "meetings", store=store).counts["synced"] == 0
    assert row_versions(store) == versions, "a second sync writes no row"
    stamp = _one(store, "SELECT max(updated_at) FROM sessions")

    fake.add_meetings(3)
    again = run_stream_sync(cid, "meetings", store=store)

    assert again.status == "success" and again.counts["synced"] == 3
    assert _one(store, "SELECT count(*) FROM sessions") == 13
    assert _one(store, "SELECT count(*) FROM sessions WHERE updated_at > %s", stamp) == 3
    asked = fake.requests_to("/meetings")[-1].query["created_after"]
    # The cursor less the 7-day re-scan window (and the one-second boundary overlap).
    assert asked == (first.cursor_after - timedelta(days=7, seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # A full resync reads every meeting again and changes just the edited one.
    fake.meetings.update(1002, title="Rollout check-in (renamed)")
    full = run_stream_sync(cid, "meetings", SyncPlan.full(), store=store)
    assert full.status == "success" and full.counts["synced"] == 1
    assert _session(store, "1002")["name"] == "Rollout check-in (renamed)"
    assert _one(store, "SELECT count(*) FROM sessions") == 13


def test_a_backfill_window_reads_only_its_meetings_and_keeps_the_cursor(
    store: Any, account: tuple[Fathom, str, str]
) -> None:
    fake, cid, _key = account
    created = sorted(datetime.fromisoformat(m["created_at"].replace("Z", "+00:00")) for m in fake.meetings)
    result = run_stream_sync(cid, "meetings", SyncPlan.backfill(created[2], created[5]), store=store)
    assert result.status == "success" and result.counts["synced"] == 3
    asked = fake.requests_to("/meetings")[-1].query
    assert asked["created_before"] == created[5].strftime("%Y-%m-%dT%H:%M:%SZ")
    # No re-scan window: a backfill lists exactly its interval (less the one-second boundary overlap).
    assert asked["created_after"] == (created[2] - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert repo.get_stream(store, cid, "meetings").last_sync_at is None


def test_a_malformed_meeting_goes_to_ingest_errors_and_the_run_continues(
    store: Any, account: tuple[Fathom, str, str]
) -> None:
    fake, cid, _key = account
    fake.garbled["1004"] = {"created_at": "last tuesday"}
    result = run_stream_sync(cid, "meetings", store=store)
    assert result.status == "success" and result.counts["synced"] == 9 and result.counts["failed"] == 1
    assert _one(store, "SELECT count(*) FROM ingest_errors WHERE external_id = '1004'") == 1


def test_a_listing_failure_fails_the_run_and_keeps_the_cursor(
    store: Any, account: tuple[Fathom, str, str]
) -> None:
    fake, cid, _key = account
    first = run_stream_sync(cid, "meetings", store=store)
    fake.add_meetings(6)
    fake.inject_5xx("/meetings", status=500, times=None, when=lambda r: bool(r.query.get("cursor")))
    failed = run_stream_sync(cid, "meetings", store=store)
    assert failed.status == "error" and failed.retriable
    assert repo.get_stream(store, cid, "meetings").last_sync_at == first.cursor_after


def test_a_revoked_key_asks_for_a_reconnect_and_is_not_retried(
    store: Any, account: tuple[Fathom, str, str], clock: FakeClock
) -> None:
    fake, cid, key = account
    fake.keys.discard(key)
    failed = run_stream_sync(cid, "meetings", store=store)
    assert failed.status == "error" and failed.error_code == ProviderAuthError.code and not failed.retriable
    assert len(fake.requests_to("/meetings")) == 2, "the connect call and one refused listing"
    assert clock.sleeps == [] and key not in (failed.error or "")


# -- webhooks ----------------------------------------------------------------------------------------


class _Woken:
    def __init__(self) -> None:
        self.targets: list[tuple[str, str]] = []

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        self.targets.extend(targets)


def test_signed_webhooks_valid_once_forged_stale_replayed(store: Any, account: tuple[Fathom, str, str]) -> None:
    fake, cid, _key = account
    signer = Signer(registry.get_plugin("fathom").webhook_signature)
    assert signer.secret.startswith("whsec_")
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    woken = _Woken()
    new = fake.add_meetings(1, speakerless=True)[0]
    body = fake.webhook_body(new["recording_id"])

    def deliver(sign: Signer = signer, **kw: Any) -> Any:
        d = sign(body, url="https://hissuno.invalid/hook", **kw)
        return receive_webhook("fathom", IntakeRequest("POST", d.url, d.headers, d.body), connection_id=cid,
                               store=store, dispatcher=woken)

    deliver(event_id="msg_2x2zwLOcWaRTzsLK8KtbQt1FTk9")
    deliver(event_id="msg_2x2zwLOcWaRTzsLK8KtbQt1FTk9")  # a redelivery: same webhook-id
    with pytest.raises(WebhookSignatureError):
        deliver(sign=signer.forged(), event_id="msg_forged")
    with pytest.raises(WebhookSignatureError):
        deliver(event_id="msg_stale", timestamp=datetime.now(UTC).timestamp() - 301)
    assert _one(store, "SELECT count(*) FROM webhook_events WHERE connection_id = %s", cid) == 1

    drained = process_inbox(cid, "meetings", store=store)
    assert (drained.done, drained.failed) == (1, 0), drained.errors
    rid = str(new["recording_id"])
    assert _messages(store, rid)[1]["content"].startswith("[Riley Host]:"), "speakerless: transcript fetched"
    # The sync then finds the same meeting and writes nothing new for it.
    result = run_stream_sync(cid, "meetings", store=store)
    assert result.counts["synced"] == 10 and _one(store, "SELECT count(*) FROM sessions") == 11


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_connects_syncs_and_reports_counts(store: Any, database_url: str, tmp_path: Any,
                                               serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, key = fakes.serve(monkeypatch, serve_fake, 6)
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_FATHOM_API_URL": fake.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    bad = cli("connect", "fathom", "--set", "api_key=fathom_nope_000000")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "fathom_nope_000000" not in bad.stderr
    out = cli("connect", "fathom", "--set", f"api_key={key}", "--json")
    assert out.returncode == 0, out.stderr
    cid = json.loads(out.stdout)["connection_id"]
    assert cli("enable", cid, "meetings").returncode == 0
    first = json.loads(cli("sync", cid, "meetings", "--json").stdout)
    assert first["status"] == "success" and first["counts"]["synced"] == 6
    second = json.loads(cli("sync", cid, "meetings", "--json").stdout)
    assert second["counts"]["synced"] == 0 and key not in json.dumps(second)


def test_the_plugin_scheme_accepts_fathoms_documented_vector_and_several_signatures() -> None:
    from hissuno_airflow.kit.signatures import SignedRequest, verify

    scheme = registry.get_plugin("fathom").webhook_signature
    secret = "whsec_ZmF0aG9tLXRlc3Qta2V5LTAxMjM0NTY3ODlhYmNkZWY="
    good = "v1,m+THShcksOgtr4Mo1GCVoWIPFY3g/a4e7uuMj9f6+UM="
    headers = {"webhook-id": "msg_test123", "webhook-timestamp": "1700000000"}
    body = b'{"hello":"world"}'
    # providers.md Appendix B; a rotated secret sends two space-separated signatures, one of them valid.
    for sent in (good, f"v1,c29tZXRoaW5nIGVsc2U= {good}"):
        verified = verify(scheme, secret, SignedRequest(body, {**headers, "webhook-signature": sent}),
                          now=1_700_000_100)
        assert verified.event_id == "msg_test123"
    with pytest.raises(WebhookSignatureError):
        verify(scheme, secret, SignedRequest(body, {**headers, "webhook-signature": good}), now=1_700_000_301)


def test_a_meeting_created_mid_sync_is_not_lost(store: Any, account: tuple[Fathom, str, str]) -> None:
    fake, cid, _key = account
    fake.before_request("/meetings", lambda req: fake.add_meetings(1), when=lambda r: bool(r.query.get("cursor")))
    first = run_stream_sync(cid, "meetings", store=store)
    second = run_stream_sync(cid, "meetings", store=store)
    assert first.status == second.status == "success"
    assert first.counts["synced"] + second.counts["synced"] == 11
    assert _one(store, "SELECT count(*) FROM sessions") == 11


def test_incremental_runs_rescan_a_week_before_the_cursor_so_recent_edits_arrive(
    store: Any, account: tuple[Fathom, str, str], clock: FakeClock,
) -> None:
    """Fathom has no update time or filter (providers.md 10.2): an edit to a meeting created within
    ``rescan_days`` (default 7) of the cursor reaches its session on the next incremental run; an older
    one waits for a full resync. Unchanged meetings re-listed write nothing."""
    fake, cid, _key = account
    clock.advance(10 * 86400)
    recent = fake.add_meetings(2)
    first = run_stream_sync(cid, "meetings", store=store)
    assert first.status == "success" and first.counts["synced"] == 12
    assert first.cursor_after == datetime.fromisoformat(recent[-1]["created_at"].replace("Z", "+00:00"))

    fake.meetings.update(recent[0]["recording_id"], title="Rollout check-in (renamed)")
    fake.meetings.update(1002, title="Old meeting (renamed)")  # created ten days before the cursor
    again = run_stream_sync(cid, "meetings", store=store)

    assert again.status == "success" and again.counts["synced"] == 1, again
    assert _session(store, str(recent[0]["recording_id"]))["name"] == "Rollout check-in (renamed)"
    assert _session(store, "1002")["name"] != "Old meeting (renamed)"
    assert again.counts["found"] == 2, "only the window's meetings were listed again"
    assert again.cursor_after == first.cursor_after
    asked = fake.requests_to("/meetings")[-1].query["created_after"]
    assert asked == (first.cursor_after - timedelta(days=7, seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    versions = row_versions(store)
    assert run_stream_sync(cid, "meetings", store=store).counts["synced"] == 0
    assert row_versions(store) == versions, "a rescan of unchanged meetings writes no row"

    full = run_stream_sync(cid, "meetings", SyncPlan.full(), store=store)
    assert full.counts["synced"] == 1 and _session(store, "1002")["name"] == "Old meeting (renamed)"
