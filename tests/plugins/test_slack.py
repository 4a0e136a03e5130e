"""Slack: connect (web routes and CLI), token rotation, the events webhook (valid once, forged, stale,
replayed, Slack's retries, url_verification, acknowledged before processing), ``verify_signing``, backfill.

Everything runs against the stateful Slack fake on 127.0.0.1 and the real store; the web routes are served
for real (``tests/fixtures/web.py``); the CLI runs ``hissuno connect`` with its loopback listener.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow import cli
from hissuno_airflow.runtime.credentials import credential_store, load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes.server import FakeClock
from tests.fakes.slack import (
    BOT_USER,
    CLIENT_ID,
    SIGNING_SECRET,
    TEAM_ID,
    FakeSlack,
    Workspace,
    seed_workspace,
    serve,
)
from tests.fixtures.fakes import retries_on
from tests.fixtures.web import ADMIN_TOKEN, Web, count

CH = "C0SUPPORT"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> FakeSlack:
    return serve(monkeypatch, serve_fake)


def _events(store: Any) -> int:
    return count(store, "webhook_events")


# -- connect ------------------------------------------------------------------------------------------


def _web_connect(web: Web) -> tuple[str, dict[str, list[str]]]:
    r = web.client.post("/api/plugins/slack/connect", json={})
    assert r.status_code == 200, r.text
    url = r.json()["authorize_url"]
    consent = httpx.get(url, follow_redirects=False)
    assert consent.status_code == 302, consent.text
    location = consent.headers["Location"]
    back = httpx.get(location, cookies={"hissuno_token": ADMIN_TOKEN}, follow_redirects=False)
    assert back.status_code == 302, back.text
    return location, parse_qs(urlsplit(back.headers["Location"]).query)


def test_connect_through_the_web_routes_stores_bot_token_bot_user_and_team(web: Web, fake: FakeSlack) -> None:
    r = web.client.post("/api/plugins/slack/connect", json={})
    q = parse_qs(urlsplit(r.json()["authorize_url"]).query)
    assert urlsplit(r.json()["authorize_url"]).path == "/oauth/v2/authorize"
    assert q["client_id"] == [CLIENT_ID]
    assert q["scope"][0].split(",")[:2] == ["app_mentions:read", "channels:history"]  # comma-joined bot scopes
    assert "users:read.email" in q["scope"][0] and "reactions:write" in q["scope"][0]
    assert q["redirect_uri"][0].endswith("/hissuno/api/plugins/oauth/slack/callback")
    assert len(q["state"][0]) > 40  # an encrypted state, not the project id the reference sent
    location, back = _web_connect(web)
    assert back.get("connected") == ["1"], back
    row = repo.get_connection(web.store, back["connection"][0])
    assert (row.external_account_id, row.account_label) == (TEAM_ID, "Acme")
    assert row.settings["workspace_id"] == TEAM_ID
    creds = load_credentials(web.store, row)
    assert creds["access_token"].startswith("xoxb-") and creds["bot_user_id"] == BOT_USER
    assert (creds["team_id"], creds["primary_domain"]) == (TEAM_ID, "acme.test")
    # The client authenticated with HTTP Basic, as Slack recommends.
    [exchange] = fake.requests_to("/api/oauth.v2.access")
    assert exchange.basic_auth == (CLIENT_ID, fake.client_secret)
    # The return leg is single use: replaying it writes nothing.
    again = httpx.get(location, cookies={"hissuno_token": ADMIN_TOKEN}, follow_redirects=False)
    assert parse_qs(urlsplit(again.headers["Location"]).query).get("error") == ["replayed_state"]
    assert count(web.store, "integration_connections") == 1


def test_a_refused_code_exchange_saves_nothing(web: Web, fake: FakeSlack) -> None:
    r = web.client.post("/api/plugins/slack/connect", json={})
    consent = httpx.get(r.json()["authorize_url"], follow_redirects=False)
    parts = urlsplit(consent.headers["Location"])
    q = parse_qs(parts.query)
    forged = f"{parts.scheme}://{parts.netloc}{parts.path}?code=not-a-code&state={q['state'][0]}"
    back = httpx.get(forged, cookies={"hissuno_token": ADMIN_TOKEN}, follow_redirects=False)
    assert parse_qs(urlsplit(back.headers["Location"]).query).get("error") == ["connect_failed"]
    assert fake.refusals[-1]["error"] == "invalid_grant"  # answered as Slack does: 200 ok:false invalid_code
    assert count(web.store, "integration_connections") == 0


def test_connect_from_the_cli(store: Any, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", cli.main(["connect", "slack", "--json"])),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    url = ""
    while not url and time.monotonic() < deadline:
        url = next((line for line in err.getvalue().splitlines() if line.startswith("http")), "")
        time.sleep(0.05)
    assert url, err.getvalue()
    location = httpx.get(url, follow_redirects=False).headers["Location"]
    assert httpx.get(location, timeout=30).status_code == 200
    thread.join(60)
    assert result["rc"] == 0, err.getvalue()
    row = repo.get_connection(store, json.loads(out.getvalue())["connection_id"])
    token = load_credentials(store, row)["access_token"]
    assert row.account_label == "Acme" and token not in err.getvalue() + out.getvalue()


def test_token_rotation_refreshes_before_expiry_and_saves_the_rotated_refresh_token(
    store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any
) -> None:
    fake = serve(monkeypatch, serve_fake, rotation=True)
    seed_workspace(fake, threads=1)
    ws = Workspace(store, fake)
    row = repo.get_connection(store, ws.connection_id)
    creds = load_credentials(store, row)
    assert creds["refresh_token"].startswith("xoxe-1-") and creds["expires_at"]
    # An hour before the 12-hour expiry: inside the 2-hour leeway Slack's SDK uses.
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    credential_store(store, row.credentials_backend).save(row, {**creds, "expires_at": soon})
    parent = fake.thread(CH, fake.messages[CH][0]["ts"])[0]
    ws.mention(CH, "UCUST001", "still broken", thread_ts=parent["ts"])
    fresh = load_credentials(store, repo.get_connection(store, ws.connection_id))
    assert fake.refreshes == 1
    assert fresh["access_token"] != creds["access_token"] and fresh["refresh_token"] != creds["refresh_token"]
    assert creds["refresh_token"] in fake.used_refresh_tokens  # rotated: the old one is dead
    assert fresh["bot_user_id"] == BOT_USER and fresh["team_id"] == TEAM_ID  # kept through the refresh
    # The bot's calls after the refresh used the new token.
    assert fake.requests_to("/api/chat.postMessage")[-1].bearer_token == fresh["access_token"]


# -- the events webhook ---------------------------------------------------------------------------------


def test_webhook_valid_once_forged_stale_and_replayed(store: Any, fake: FakeSlack) -> None:
    fake.add_channel(CH, "support")
    ws = Workspace(store, fake)
    payload = fake.event({"type": "message", "channel": CH, "user": "U1", "text": "hi", "ts": "1.000001"})
    first = ws.post(payload)
    assert first.status == 200 and first.body["queued"] == 1 and first.body["event_id"] == payload["event_id"]
    # Slack's retry of the same event (X-Slack-Retry-Num) is a duplicate: stored once, never processed twice.
    retry = ws.post(payload, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert retry.body["duplicate"] is True and retry.body["queued"] == 0
    # Same event id, bytes serialized differently (a redelivery is not promised to be byte-identical).
    reordered = dict(reversed(list(payload.items())))
    assert ws.post(reordered, headers={"X-Slack-Retry-Num": "2"}).body["duplicate"] is True
    assert _events(store) == 1
    assert ws.drain().done == 1 and ws.drain().done == 0
    # Forged: another secret.
    forged = fake.event({"type": "message", "channel": CH, "user": "U1", "text": "x", "ts": "1.000002"})
    with pytest.raises(Exception) as refused:
        ws.post(forged, signer=ws.signer.forged())
    assert getattr(refused.value, "http_status", None) == 401
    # Stale: signed more than 5 minutes ago (and one from the future).
    for skew in (-301, 301):
        with pytest.raises(Exception) as old:
            ws.post(forged, timestamp=time.time() + skew)
        assert getattr(old.value, "http_status", None) == 401
    assert _events(store) == 1
    # Just inside the window is fine.
    assert ws.post(forged, timestamp=time.time() - 290).body["queued"] == 1


def test_web_route_answers_url_verification_inline_and_refuses_bad_signatures(web: Web, fake: FakeSlack) -> None:
    ws = Workspace(web.store, fake)
    challenge = {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                 "type": "url_verification"}
    d = ws.delivery(challenge)
    r = web.anon.post("/api/plugins/webhook/slack", content=d.body, headers=dict(d.headers))
    assert r.status_code == 200 and r.json() == {"challenge": challenge["challenge"]}
    bad = ws.delivery(challenge, signer=ws.signer.forged())
    r = web.anon.post("/api/plugins/webhook/slack", content=bad.body, headers=dict(bad.headers))
    assert r.status_code == 401 and "challenge" not in r.text
    # An event of a workspace nobody connected: 404, nothing stored.
    other = ws.delivery(fake.event({"type": "message", "channel": CH, "ts": "1.1"}, team_id="T0NOBODY"))
    r = web.anon.post("/api/plugins/webhook/slack", content=other.body, headers=dict(other.headers))
    assert r.status_code == 404 and _events(web.store) == 0


def test_events_are_acknowledged_within_3_seconds_and_processed_after(
    store: Any, fake: FakeSlack
) -> None:
    from hissuno_airflow.runtime.webhooks import InProcessDispatcher
    from hissuno_airflow.web.serve import Server, build_app

    seed_workspace(fake, threads=1)
    ws = Workspace(store, fake)
    dispatcher = InProcessDispatcher(store)
    server = Server(build_app(token=ADMIN_TOKEN, store=store, dispatcher=dispatcher)).start()
    release, reached = threading.Event(), threading.Event()

    def hold(req: Any) -> None:  # the bot's first reaction waits until the test has its answer
        reached.set()
        release.wait(20)

    fake.before_request("/api/reactions.add", hold)
    try:
        msg = fake.say(CH, "UCUST001", f"<@{BOT_USER}> urgent: exports are down")
        d = ws.delivery(fake.event(fake.mention_event(msg, CH)))
        started = time.monotonic()
        r = httpx.post(server.url + "/api/plugins/webhook/slack", content=d.body, headers=dict(d.headers), timeout=10)
        elapsed = time.monotonic() - started
        assert r.status_code == 200 and r.json()["queued"] == 1
        assert elapsed < 3.0
        assert reached.wait(20), "the event was not processed after the answer"
        assert fake.posted == []  # still processing when Slack already had its 200
        release.set()
        dispatcher.wait_idle(20)
        assert len(ws.replies_in(msg["ts"])) == 1
    finally:
        release.set()
        server.stop()


def test_verify_signing_says_whether_the_signing_secret_is_set(web: Web, fake: FakeSlack,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    r = web.client.get("/api/plugins/slack/verify_signing")
    assert r.status_code == 200 and r.json() == {"signing_configured": True}
    assert SIGNING_SECRET not in r.text
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    assert web.client.get("/api/plugins/slack/verify_signing").json() == {"signing_configured": False}


# -- backfill ----------------------------------------------------------------------------------------


def test_backfill_captures_the_workspaces_threads_and_a_second_run_writes_nothing(
    store: Any, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = retries_on(monkeypatch, FakeClock())
    seed_workspace(fake, threads=5)
    fake.add_channel("C0STAFF", "staff")
    staff = fake.say("C0STAFF", "USTAFF01", "internal only")
    fake.say("C0STAFF", "USTAFF01", "yes", thread_ts=staff["ts"])
    fake.add_channel("C0NOTIN", "not-joined", member=False)  # its history answers not_in_channel
    outside = fake.say("C0NOTIN", "UCUST001", "anyone?")
    fake.say("C0NOTIN", "UCUST001", "hello?", thread_ts=outside["ts"])
    ws = Workspace(store, fake)
    fake.inject_429("/api/conversations.replies", retry_after=7)
    first = run_stream_sync(ws.connection_id, "events", SyncPlan(), store=store)
    assert first.status == "success", first.error
    assert first.counts["synced"] == 5 and ws.sessions() == 5  # the staff-only thread is not external
    assert 7 in [round(w) for w in clock.sleeps]  # Slack's Retry-After was waited out
    again = run_stream_sync(ws.connection_id, "events", SyncPlan(sync_mode="full"), store=store)
    assert again.status == "success" and again.counts["synced"] == 0
    # Incremental: only the thread started since the last run is read and written.
    new = fake.say(CH, "UCUST001", "Question 9: billing page is blank")
    fake.say(CH, "USTAFF01", "checking billing", thread_ts=new["ts"])
    replies_before = fake.count("/api/conversations.replies")
    step = run_stream_sync(ws.connection_id, "events", SyncPlan(), store=store)
    assert step.status == "success" and step.counts["synced"] == 1 and ws.sessions() == 6
    assert fake.count("/api/conversations.replies") == replies_before + 1
    assert ws.session(CH, new["ts"]) is not None
    enable_stream(store, ws.connection_id, "events",
                  settings={"channels": [{"id": "C0STAFF", "mode": "passive", "capture_scope": "all"}]})
    third = run_stream_sync(ws.connection_id, "events", SyncPlan(sync_mode="full"), store=store)
    assert third.counts["synced"] == 1 and ws.sessions() == 7
