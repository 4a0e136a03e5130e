"""Linear webhooks through the real intake (the web route and ``receive_webhook``) and the inbox.

``Linear-Signature`` is the hex HMAC-SHA256 of the raw body with the connection's ``webhook_secret``;
``webhookTimestamp`` (ms, in the body) must be within 60 s; ``Linear-Delivery`` dedupes redeliveries.
Every enabled team stream receives each event and handles only its team's issues, re-reading the issue
with the sync's own query, so a webhook and the next sync agree.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit import WebhookSignatureError
from hissuno_airflow.kit.signatures import LinearSignature, SignedRequest, verify
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.runtime.webhooks import IntakeRequest, receive_webhook
from hissuno_airflow.runtime.webhooks.inbox import process_inbox
from hissuno_airflow.store import connections as repo
from tests.fakes import linear as fakes
from tests.fakes.linear import ORG, TEAMS, FakeLinear
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer
from tests.fixtures.fakes import retries_on
from tests.fixtures.web import Web, count

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ENG, DES = TEAMS[0]["id"], TEAMS[1]["id"]
SECRET = "lin_wh_connection_secret_01"


@pytest.fixture
def hooked(store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeLinear, str, Signer]:
    """Four issues per team, both teams enabled and synced, a webhook secret on the connection."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    fake = fakes.serve(monkeypatch, serve_fake, 4, clock=clock.time)
    clock.advance(3000)
    cid = fakes.connect(store, fake)
    for team in (ENG, DES):
        enable_stream(store, cid, f"issues:{team}")
        assert run_stream_sync(cid, f"issues:{team}", store=store).status == "success"
    repo.update_connection(store, cid, settings={**repo.get_connection(store, cid).settings,
                                                 "webhook_secret": SECRET})
    signer = Signer(registry.get_plugin("linear").webhook_signature).with_secret(SECRET)
    clock.advance(60)
    return fake, cid, signer


def _deliver(cid: str, signer: Signer, payload: dict[str, Any], *, event_id: str, at: float | None = None,
             now: float | None = None) -> Any:
    d = signer(payload, timestamp=at if at is not None else time.time(), event_id=event_id)
    return receive_webhook("linear", IntakeRequest("POST", d.url or "https://h.invalid/x", d.headers, d.body),
                           connection_id=cid, now=now, dispatcher=_Null())


class _Null:
    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        self.targets = targets


def _issue_row(store: Any, stream: str, external_id: str) -> dict[str, Any] | None:
    with store.connection() as c:
        row = c.execute("SELECT i.*, i.xmin::text AS version FROM integration_synced_records r"
                        " JOIN issues i ON i.id = r.hissuno_id WHERE r.stream_id = %s AND r.external_id = %s",
                        (stream, external_id)).fetchone()
    return dict(row) if row else None


def test_the_documented_test_vector_verifies() -> None:
    body = b'{"action":"create","type":"Issue","data":{"id":"abc"},"webhookTimestamp":1700000000000}'
    sig = "6c8c14fbc341f9e51be07fff881693ec4ca736a7a116f166a3ff38df5486e4e0"
    verified = verify(LinearSignature(), b"lin_wh_test", SignedRequest(body, {"Linear-Signature": sig}),
                      now=1_700_000_030)
    assert verified.timestamp == 1_700_000_000


def test_an_update_through_the_web_route_updates_the_issue_once(web: Web, store: Any,
                                                               hooked: tuple[FakeLinear, str, Signer]) -> None:
    fake, cid, signer = hooked
    issue = fake.team_issues(ENG)[1]
    fake.update_issue(issue["id"], title="Export fails on files over 2 GB", state=dict(fakes.STATES["started"]))
    d = signer(fake.event("update", issue["id"], updated_from={"title": issue["title"]}), timestamp=time.time(),
               event_id="delivery-1")
    r = httpx.post(f"{web.url}/api/plugins/webhook/linear/{cid}", content=d.body, headers=d.headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["queued"] == 2  # one per enabled team stream
    assert set(web.dispatcher.targets) == {(cid, f"issues:{ENG}"), (cid, f"issues:{DES}")}
    before = len(fake.graphql_bodies("Issues"))
    assert process_inbox(cid, f"issues:{DES}", store=store).done == 1
    assert len(fake.graphql_bodies("Issues")) == before  # another team's issue: no request at all
    assert process_inbox(cid, f"issues:{ENG}", store=store).done == 1
    row = _issue_row(store, f"issues:{ENG}", issue["id"])
    assert row is not None and row["name"] == "Export fails on files over 2 GB" and row["status"] == "in_progress"
    assert _issue_row(store, f"issues:{DES}", issue["id"]) is None
    # The next sync agrees with the webhook: nothing written.
    version = row["version"]
    assert run_stream_sync(cid, f"issues:{ENG}", store=store).counts["synced"] == 0
    assert _issue_row(store, f"issues:{ENG}", issue["id"])["version"] == version  # type: ignore[index]
    # Replayed delivery: accepted as a duplicate, not stored again.
    again = httpx.post(f"{web.url}/api/plugins/webhook/linear/{cid}", content=d.body, headers=d.headers, timeout=30)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert count(store, "webhook_events") == 2


def test_forged_tampered_stale_and_unsigned_deliveries_are_refused(store: Any,
                                                                  hooked: tuple[FakeLinear, str, Signer]) -> None:
    fake, cid, signer = hooked
    payload = fake.event("update", fake.team_issues(ENG)[0]["id"])
    now = time.time()
    with pytest.raises(WebhookSignatureError) as forged:
        _deliver(cid, signer.forged(), payload, event_id="f-1", now=now)
    assert forged.value.reason == "bad_signature"  # type: ignore[attr-defined]
    good = signer(payload, timestamp=now, event_id="t-1")
    with pytest.raises(WebhookSignatureError):
        receive_webhook("linear", IntakeRequest("POST", "https://h.invalid/x", good.headers, good.body + b" "),
                        connection_id=cid, now=now)
    with pytest.raises(WebhookSignatureError) as stale:
        _deliver(cid, signer, payload, event_id="s-1", at=now - 61, now=now)
    assert stale.value.reason == "stale"  # type: ignore[attr-defined]
    with pytest.raises(WebhookSignatureError) as future:
        _deliver(cid, signer, payload, event_id="s-2", at=now + 61, now=now)
    assert future.value.reason == "stale"  # type: ignore[attr-defined]
    unsigned = {k: v for k, v in good.headers.items() if k != "Linear-Signature"}
    with pytest.raises(WebhookSignatureError):
        receive_webhook("linear", IntakeRequest("POST", "https://h.invalid/x", unsigned, good.body),
                        connection_id=cid, now=now)
    assert count(store, "webhook_events") == 0
    # 59 s old is inside the window.
    assert _deliver(cid, signer, payload, event_id="ok-1", at=now - 59, now=now).status == 200
    assert count(store, "webhook_events") == 2


def test_a_remove_event_and_an_archive_delete_the_issue(store: Any, hooked: tuple[FakeLinear, str, Signer]) -> None:
    fake, cid, signer = hooked
    removed, archived = fake.team_issues(ENG)[0], fake.team_issues(ENG)[2]
    fake.delete_issue(removed["id"])
    _deliver(cid, signer, fake.event("remove", removed["id"], data={"teamId": ENG}), event_id="rm-1")
    before = len(fake.requests_to("/graphql"))
    assert process_inbox(cid, f"issues:{ENG}", store=store).done == 1
    assert len(fake.requests_to("/graphql")) == before  # a remove needs no request
    fake.archive_issue(archived["id"])
    _deliver(cid, signer, fake.event("update", archived["id"], updated_from={"archivedAt": None}), event_id="ar-1")
    assert process_inbox(cid, f"issues:{ENG}", store=store).done == 1
    for gone in (removed["id"], archived["id"]):
        row = _issue_row(store, f"issues:{ENG}", gone)
        assert row is not None and row["deleted_at"] is not None


def test_an_issue_moved_to_another_team_leaves_the_old_stream(store: Any,
                                                             hooked: tuple[FakeLinear, str, Signer]) -> None:
    fake, cid, signer = hooked
    issue = fake.team_issues(ENG)[3]
    fake.update_issue(issue["id"], team=dict(TEAMS[1]))
    _deliver(cid, signer, fake.event("update", issue["id"], updated_from={"teamId": ENG}), event_id="mv-1")
    assert process_inbox(cid, f"issues:{ENG}", store=store).done == 1
    assert process_inbox(cid, f"issues:{DES}", store=store).done == 1
    old = _issue_row(store, f"issues:{ENG}", issue["id"])
    new = _issue_row(store, f"issues:{DES}", issue["id"])
    assert old is not None and old["deleted_at"] is not None
    assert new is not None and new["deleted_at"] is None and new["custom_fields"]["linear_team_id"] == DES


def test_a_late_delivery_never_rolls_an_issue_back(store: Any, hooked: tuple[FakeLinear, str, Signer]) -> None:
    fake, cid, signer = hooked
    issue = fake.team_issues(ENG)[1]
    stale_payload = fake.event("update", issue["id"], data={"title": "An old title"})
    fake.update_issue(issue["id"], title="The current title")
    _deliver(cid, signer, stale_payload, event_id="late-1")
    process_inbox(cid, f"issues:{ENG}", store=store)
    row = _issue_row(store, f"issues:{ENG}", issue["id"])
    assert row is not None and row["name"] == "The current title"


def test_other_event_types_are_ignored(store: Any, hooked: tuple[FakeLinear, str, Signer]) -> None:
    fake, cid, signer = hooked
    comment = {"action": "create", "type": "Comment", "data": {"id": "c-1", "body": "hi", "issueId": "x"},
               "organizationId": ORG["id"]}
    _deliver(cid, signer, comment, event_id="c-1")
    before = len(fake.requests_to("/graphql"))
    assert process_inbox(cid, f"issues:{ENG}", store=store).done == 1
    assert len(fake.requests_to("/graphql")) == before


def test_the_app_wide_url_routes_by_organization(web: Web, store: Any, hooked: tuple[FakeLinear, str, Signer],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake, cid, _signer = hooked
    app_signer = Signer(registry.get_plugin("linear").webhook_signature).with_secret("lin_app_secret_77")
    monkeypatch.setenv("LINEAR_WEBHOOK_SIGNING_SECRET", "lin_app_secret_77")
    issue = fake.team_issues(ENG)[0]
    d = app_signer(fake.event("update", issue["id"]), timestamp=time.time(), event_id="app-1")
    r = httpx.post(f"{web.url}/api/plugins/webhook/linear", content=d.body, headers=d.headers, timeout=30)
    assert r.status_code == 200 and r.json()["queued"] == 2, r.text
    assert set(web.dispatcher.targets) == {(cid, f"issues:{ENG}"), (cid, f"issues:{DES}")}
    other = app_signer({**fake.event("update", issue["id"]), "organizationId": "org-unknown"}, timestamp=time.time(),
                       event_id="app-2")
    r = httpx.post(f"{web.url}/api/plugins/webhook/linear", content=other.body, headers=other.headers, timeout=30)
    assert r.status_code == 404
    forged = app_signer.forged()(fake.event("update", issue["id"]), timestamp=time.time(), event_id="app-3")
    r = httpx.post(f"{web.url}/api/plugins/webhook/linear", content=forged.body, headers=forged.headers, timeout=30)
    assert r.status_code == 401 and "lin_app_secret_77" not in r.text
    assert json.loads(d.body)["organizationId"] == ORG["id"]
