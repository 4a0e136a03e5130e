"""Webhook intake for every built-in signature scheme, over real HTTP; the inbox; a property test."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hissuno_airflow.kit.testing import has_freshness_window
from hissuno_airflow.runtime.credentials import credential_store
from hissuno_airflow.runtime.webhooks import InProcessDispatcher, process_inbox
from hissuno_airflow.store import connections as repo
from tests.fixtures.web import Web, count, sign, signer, verification_secret
from tests.web.plugins import SCHEMES

SCHEME_NAMES = sorted(SCHEMES)


def make_connection(store: Any, plugin_id: str, secret: str | None, *, account: str = "acct-1",
                    enable: bool = True) -> str:
    row, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001", plugin_id=plugin_id,
                                    external_account_id=account, account_label=account,
                                    settings={"webhook_secret": secret} if secret else {})
    credential_store(store, "db").save(row, {"api_key": "k-" + account})
    if enable:
        repo.upsert_stream(store, connection_id=row.id, plugin_id=plugin_id, stream_id="events",
                           stream_kind="issues", frequency="webhook")
    return row.id


def events(store: Any) -> int:
    return count(store, "webhook_events")


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_scheme_valid_once_then_every_refusal(web: Web, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_id = f"wh-{name.replace('_', '-')}"
    provider = signer(name)
    cid = make_connection(web.store, plugin_id, provider.secret)
    path = f"/api/plugins/webhook/{plugin_id}/{cid}"
    url = web.url + path

    def post(d: Any) -> Any:
        return web.anon.post(path, content=d.body, headers=dict(d.headers))

    valid = provider({"id": "issue-1", "title": "Printer on fire"}, url=url, event_id="evt-1")
    ok = post(valid)
    assert ok.status_code == 200, ok.text
    assert ok.json()["queued"] == 1
    assert events(web.store) == 1
    assert web.dispatcher.targets == [(cid, "events")]
    # Replay of the same event: accepted (providers retry) but not stored twice, no new dispatch.
    again = post(valid)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert events(web.store) == 1 and len(web.dispatcher.targets) == 1

    # Forged: signed with another (well-formed) secret.
    forged = post(provider.forged()({"id": "issue-2", "title": "forged"}, url=url, event_id="evt-2"))
    assert forged.status_code == 401 and forged.json()["error"] == "bad_signature", forged.text
    # Tampered body under a valid signature (a shared secret does not cover the body, by design).
    if name != "shared":
        signed = provider({"id": "issue-2", "title": "forged"}, url=url, event_id="evt-3")
        tampered = web.anon.post(path, content=signed.body + b" ", headers=dict(signed.headers))
        assert tampered.status_code == 401
    # Stale.
    if has_freshness_window(SCHEMES[name]):
        stale = post(provider({"id": "issue-3"}, url=url, timestamp=time.time() - 3600, event_id="evt-4"))
        assert stale.status_code == 401, stale.text
    # Missing signature header(s).
    missing = web.anon.post(path, content=valid.body, headers={"Content-Type": "application/json"})
    assert missing.status_code == 401 and "missing" in missing.json()["message"]
    # Malformed JSON under a valid signature (Linear's timestamp lives in the body: unverifiable, 401).
    bad = b'{"id": "x", '
    bad_headers = ({"Linear-Signature": "0" * 64} if name == "linear"
                   else dict(provider(bad, url=url, event_id="evt-5").headers))
    malformed = web.anon.post(path, content=bad, headers=bad_headers)
    assert malformed.status_code == (401 if name == "linear" else 400), malformed.text
    if name != "linear":
        assert malformed.json()["field"] == "body"
    # Oversized body: refused before anything else.
    monkeypatch.setenv("HISSUNO_WEBHOOK_MAX_BYTES", "256")
    huge = post(provider({"id": "big", "title": "x" * 400}, url=url, event_id="evt-6"))
    assert huge.status_code == 413 and huge.json()["error"] == "payload_too_large"

    assert events(web.store) == 1
    assert count(web.store, "issues") == 0


def test_unknown_plugin_connection_and_sender_are_404(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBKEY_WEBHOOK_SECRET", "static-secret-123")
    cid = make_connection(web.store, "webkey", None, account="team-7")
    body = b'{"team_id": "team-unknown", "id": "e1"}'
    assert web.anon.post("/api/plugins/webhook/nope", content=body).status_code == 404
    url = web.url + "/api/plugins/webhook/webkey/nope_12345678"
    r = web.anon.post("/api/plugins/webhook/webkey/nope_12345678", content=body, headers=sign("github", body, url))
    assert r.status_code == 404
    # A connection of another plugin is not found either.
    other = make_connection(web.store, "wh-github", "s3cret-value", account="x")
    r = web.anon.post(f"/api/plugins/webhook/webkey/{other}", content=body, headers=sign("github", body, url))
    assert r.status_code == 404
    # Static route: valid signature but no connection for this team.
    surl = web.url + "/api/plugins/webhook/webkey"
    hdr = sign("github", body, surl, secret="static-secret-123")
    assert web.anon.post("/api/plugins/webhook/webkey", content=body, headers=hdr).status_code == 404
    # Static route: bad signature is 401 before any lookup.
    assert web.anon.post("/api/plugins/webhook/webkey", content=body,
                         headers=sign("github", body, surl, secret="wrong-secret")).status_code == 401
    assert events(web.store) == 0
    # Static route resolving the team: accepted; setup handshake answered inline without a row.
    good = b'{"team_id": "team-7", "id": "e2", "title": "hi"}'
    r = web.anon.post("/api/plugins/webhook/webkey", content=good,
                      headers=sign("github", good, surl, secret="static-secret-123", event_id="d-1"))
    assert r.status_code == 200 and r.json()["queued"] == 1
    setup = b'{"setup": true}'
    r = web.anon.post("/api/plugins/webhook/webkey", content=setup,
                      headers=sign("github", setup, surl, secret="static-secret-123", event_id="d-2"))
    assert r.status_code == 200 and r.json() == {"ok": "setup"}
    assert events(web.store) == 1
    assert web.dispatcher.targets == [(cid, "events")]


def test_one_event_fans_out_to_every_enabled_stream_of_every_resolved_connection(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBKEY_WEBHOOK_SECRET", "static-secret-123")
    # The same provider account connected in three projects; the third has no stream enabled yet.
    with web.store.connection() as c:
        c.execute("INSERT INTO projects (id, name) VALUES ('00000000-0000-0000-0000-000000000002', 'two'), "
                  "('00000000-0000-0000-0000-000000000003', 'three') ON CONFLICT DO NOTHING")
    first = make_connection(web.store, "webkey", None, account="team-9")
    second, _ = repo.upsert_connection(web.store, project_id="00000000-0000-0000-0000-000000000002",
                                       plugin_id="webkey", external_account_id="team-9", account_label="team-9", settings={})
    repo.upsert_stream(web.store, connection_id=second.id, plugin_id="webkey", stream_id="events",
                       stream_kind="issues", frequency="webhook")
    third, _ = repo.upsert_connection(web.store, project_id="00000000-0000-0000-0000-000000000003",
                                      plugin_id="webkey", external_account_id="team-9", account_label="team-9", settings={})
    url = web.url + "/api/plugins/webhook/webkey"
    body = b'{"team_id": "team-9", "id": "f-1", "title": "fan out"}'
    hdr = sign("github", body, url, secret="static-secret-123", event_id="fan-1")
    r = web.anon.post("/api/plugins/webhook/webkey", content=body, headers=hdr)
    assert r.status_code == 200 and r.json()["queued"] == 2 and r.json()["duplicate"] is False
    assert sorted(web.dispatcher.targets) == sorted([(first, "events"), (second.id, "events")])
    # A replay stores nothing; once the third connection enables its stream, only it gets the event.
    assert web.anon.post("/api/plugins/webhook/webkey", content=body, headers=hdr).json()["duplicate"] is True
    repo.upsert_stream(web.store, connection_id=third.id, plugin_id="webkey", stream_id="events",
                       stream_kind="issues", frequency="webhook")
    again = web.anon.post("/api/plugins/webhook/webkey", content=body, headers=hdr).json()
    assert again["queued"] == 1 and again["duplicate"] is False
    with web.store.connection() as c:
        rows = c.execute("SELECT connection_id, stream_id FROM webhook_events WHERE event_id = 'fan-1'").fetchall()
    assert sorted(r["connection_id"] for r in rows) == sorted([first, second.id, third.id])


def test_slack_url_verification_answered_inline(web: Web) -> None:
    cid = make_connection(web.store, "wh-slack", verification_secret("slack"))
    path = f"/api/plugins/webhook/wh-slack/{cid}"
    body = b'{"type": "url_verification", "challenge": "ch-123"}'
    r = web.anon.post(path, content=body, headers=sign("slack", body, web.url + path))
    assert r.status_code == 200 and r.json() == {"challenge": "ch-123"}
    assert events(web.store) == 0


def test_disabled_stream_stores_nothing(web: Web) -> None:
    cid = make_connection(web.store, "wh-github", verification_secret("github"), enable=False)
    path = f"/api/plugins/webhook/wh-github/{cid}"
    body = b'{"id": "1"}'
    r = web.anon.post(path, content=body, headers=sign("github", body, web.url + path))
    assert r.status_code == 200 and r.json()["queued"] == 0
    assert events(web.store) == 0


def test_inbox_processes_in_order_failed_events_stay_visible(web: Web) -> None:
    cid = make_connection(web.store, "wh-github", verification_secret("github"))
    path = f"/api/plugins/webhook/wh-github/{cid}"
    for n, payload in enumerate([{"id": "i1", "title": "one"}, {"id": "i2", "title": "two", "fail": True},
                                 {"id": "i3", "title": "three"}]):
        body = json.dumps(payload).encode()
        assert web.anon.post(path, content=body, headers=sign("github", body, web.url + path,
                                                              event_id=f"d{n}")).status_code == 200
    res = process_inbox(cid, "events", store=web.store)
    assert (res.done, res.failed) == (2, 1)
    assert "handler refused event i2" in res.errors[0]
    with web.store.connection() as conn:
        names = [r["name"] for r in conn.execute("SELECT name FROM issues ORDER BY created_at").fetchall()]
    # The failing event's issue was rolled back with it: nothing half-written.
    assert sorted(names) == ["one", "three"]
    listed = web.client.get(f"/api/plugins/wh-github/{cid}/events", params={"status": "failed"}).json()["events"]
    assert len(listed) == 1 and listed[0]["event_id"] == "d1" and listed[0]["attempts"] == 1
    assert "raw_body" not in listed[0]
    # A retry drain picks the failed event up again (and it fails again, attempts grow).
    again = web.client.post(f"/api/plugins/wh-github/{cid}/events/process", json={"stream_id": "events"}).json()
    assert again == {"done": 0, "failed": 1, "errors": again["errors"]}
    assert count(web.store, "webhook_events", "WHERE status = 'done'") == 2


def test_in_process_dispatcher_drains(store: Any) -> None:
    from hissuno_airflow.runtime.webhooks import IntakeRequest, receive_webhook
    from tests.fixtures.web import register_test_plugins

    register_test_plugins()
    cid = make_connection(store, "wh-notion", verification_secret("notion"))
    dispatcher = InProcessDispatcher(store)
    for i in range(5):
        body = json.dumps({"id": f"n{i}", "title": f"page {i}"}).encode()
        receive_webhook("wh-notion", IntakeRequest("POST", "http://127.0.0.1/x", sign("notion", body, "x"), body),
                        connection_id=cid, store=store, dispatcher=dispatcher)
    dispatcher.wait_idle()
    deadline = time.time() + 10
    while count(store, "webhook_events", "WHERE status = 'done'") < 5 and time.time() < deadline:
        time.sleep(0.05)
        dispatcher.wait_idle()
    assert count(store, "webhook_events", "WHERE status = 'done'") == 5
    assert count(store, "issues") == 5


_header_names = st.sampled_from([
    "X-Hub-Signature-256", "X-Hub-Signature", "X-Slack-Signature", "X-Slack-Request-Timestamp", "webhook-id",
    "webhook-timestamp", "webhook-signature", "X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp",
    "Linear-Signature", "Authorization", "X-Webhook-Secret", "Content-Type", "X-Zendesk-Webhook-Signature",
])
_header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(str.strip)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(st.binary(max_size=600), st.text(max_size=300).map(str.encode)),
       headers=st.dictionaries(_header_names, _header_values, max_size=6),
       target=st.sampled_from(["wh-github", "wh-slack", "wh-standard", "wh-jwt", "wh-shared", "webkey", "nope"]),
       scoped=st.booleans())
def test_property_random_requests_never_5xx_never_a_row(prop_web: Any, body: bytes, headers: dict[str, str],
                                                        target: str, scoped: bool) -> None:
    web, conns = prop_web
    path = f"/api/plugins/webhook/{target}" + (f"/{conns.get(target, 'nope_00000000')}" if scoped else "")
    r = web.anon.post(path, content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert "Traceback" not in r.text
    assert events(web.store) == 0


@pytest.fixture
def prop_web(web: Web, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("WEBKEY_WEBHOOK_SECRET", "static-secret-123")
    conns = {p: make_connection(web.store, p, verification_secret(p[3:]) if p.startswith("wh-") else None,
                                account=f"a-{p}")
             for p in ["wh-github", "wh-slack", "wh-standard", "wh-jwt", "wh-shared", "webkey"]}
    return web, conns


def test_handshake_secret_captured_once_then_deliveries_verify_with_it(web: Web) -> None:
    """Notion posts ``{"verification_token"}`` unsigned first: the connection keeps it as its secret."""
    cid = make_connection(web.store, "wh-notion", None)
    path = f"/api/plugins/webhook/wh-notion/{cid}"
    token = "secret_handshake_0123456789"
    first = web.anon.post(path, json={"verification_token": token})
    assert first.status_code == 200, first.text
    assert token not in first.text and events(web.store) == 0
    assert repo.get_connection(web.store, cid).settings["webhook_secret"] == token
    assert web.anon.post(path, json={"verification_token": token}).status_code == 200  # Notion resends it
    # Someone else's token, once one is kept: refused, and the kept one stays.
    assert web.anon.post(path, json={"verification_token": "secret_attacker_0123456"}).status_code == 401
    assert repo.get_connection(web.store, cid).settings["webhook_secret"] == token
    # Deliveries are signed with the token: accepted with it, refused with another.
    body = json.dumps({"id": "evt-1", "title": "Page"}).encode()
    good = web.anon.post(path, content=body, headers=sign("notion", body, "x", secret=token))
    assert good.status_code == 200 and good.json()["queued"] == 1, good.text
    forged = json.dumps({"id": "evt-2", "title": "Page"}).encode()
    assert web.anon.post(path, content=forged, headers=sign("notion", forged, "x")).status_code == 401
    assert events(web.store) == 1
