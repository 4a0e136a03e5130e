"""HubSpot webhooks through the real web route (``POST /api/plugins/webhook/hubspot``, served for real),
verified with the v3 signature (``X-HubSpot-Signature-v3`` over method, URL, body and the millisecond
timestamp, keyed by the app's client secret), stored once and handled from the streams' inboxes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit.signatures import HubSpotV3, SignedRequest, verify
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.runtime.webhooks.inbox import process_inbox
from tests.fakes import hubspot as fakes
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer, WebhookDelivery
from tests.fixtures.fakes import retries_on
from tests.fixtures.web import Web, count

ROUTE = "/api/plugins/webhook/hubspot"


@pytest.fixture
def hooked(store: Any, web: Web, serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeHubSpot, str, Signer]:
    """The fake (4 companies, 6 contacts) synced once; the app's client secret is the signer's."""
    clock = FakeClock()
    retries_on(monkeypatch, clock)
    fake = fakes.serve(monkeypatch, serve_fake, 4, 6, clock.time)
    signer = Signer(registry.get_plugin("hubspot").webhook_signature)
    monkeypatch.setenv("HUBSPOT_CLIENT_SECRET", signer.secret)
    cid = fakes.connect(store, fake)
    for stream in ("companies", "contacts"):
        enable_stream(store, cid, stream)
        assert run_stream_sync(cid, stream, store=store).status == "success"
    return fake, cid, signer


def _post(web: Web, d: WebhookDelivery) -> httpx.Response:
    return httpx.post(d.url, content=d.body, headers=dict(d.headers), timeout=30)


def _rows(store: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    with store.connection() as c:
        return list(c.execute(sql, args).fetchall())


def test_the_scheme_matches_providers_appendix_b() -> None:
    body = b'{"hello":"world"}'
    req = SignedRequest(body, {"X-HubSpot-Request-Timestamp": "1700000000000",
                               "X-HubSpot-Signature-v3": "vUf+F6FHKrfZyiKZ1OFjUYCvYSepNQmj3lL5ZVpuV4U="},
                        "POST", "https://example.com/hubspot/webhook")
    scheme = registry.get_plugin("hubspot").webhook_signature
    assert isinstance(scheme, type(HubSpotV3())) and scheme.secret_env == "HUBSPOT_CLIENT_SECRET"
    verify(scheme, "hs-secret", req, now=1700000000 + 299)


def test_a_signed_batch_updates_creates_and_deletes_once_and_the_next_sync_agrees(
    store: Any, web: Web, hooked: tuple[FakeHubSpot, str, Signer],
) -> None:
    fake, cid, signer = hooked
    fake.update("contacts", "1001", jobtitle="Chief Analyst", firstname="Augusta")
    (new,) = fake.add_contacts(1, email="grace@mail.example")
    fake.archive("contacts", "1003")
    fake.update("companies", "1002", name="Company Two Renamed")
    fake.archive("companies", "1004")
    t = time.time()
    batch = [
        fake.event("contact.propertyChange", "1001", event_id=11, propertyName="jobtitle", propertyValue="Chief Analyst"),
        fake.event("contact.creation", new["id"], event_id=12),
        fake.event("contact.deletion", "1003", event_id=13),
        fake.event("company.propertyChange", "1002", event_id=14, propertyName="name"),
        # A change event for a company archived since: reading it answers 404, so it is deleted.
        fake.event("company.propertyChange", "1004", event_id=15, propertyName="domain"),
    ]
    d = signer(batch, url=web.url + ROUTE, timestamp=t, event_id="-")
    r = _post(web, d)
    assert r.status_code == 200 and r.json()["queued"] == 2, r.text  # once per enabled stream
    assert sorted(web.dispatcher.targets) == [(cid, "companies"), (cid, "contacts")]

    # Replayed as is, and resent by HubSpot (attemptNumber 1, signed again): stored no more.
    assert _post(web, d).json()["duplicate"] is True
    resent = [{**e, "attemptNumber": 1} for e in batch]
    assert _post(web, signer(resent, url=web.url + ROUTE, timestamp=t + 1, event_id="-")).json()["duplicate"] is True
    assert count(store, "webhook_events") == 2

    contacts = process_inbox(cid, "contacts", store=store)
    companies = process_inbox(cid, "companies", store=store)
    assert (contacts.done, contacts.failed, companies.done, companies.failed) == (1, 0, 1, 0), (contacts, companies)
    ada = _rows(store, "SELECT name, title FROM contacts WHERE email = 'ada1@mail.example'")[0]
    assert ada["title"] == "Engineer"  # fill_nulls: the title hissuno had stays; the event was read, not trusted
    assert _rows(store, "SELECT count(*) AS n FROM contacts WHERE email = %s", new["properties"]["email"])[0]["n"] == 1
    assert [r["email"] for r in _rows(store, "SELECT email FROM contacts WHERE deleted_at IS NOT NULL")] == [
        "ada3@mail.example"]
    assert [r["domain"] for r in _rows(store, "SELECT domain FROM companies WHERE deleted_at IS NOT NULL")] == [
        "company4.example"]
    # Each object was read once, with the plugin's properties; deletion events read nothing.
    assert fake.count("/crm/v3/objects/contacts/1001") == 1 and fake.count("/crm/v3/objects/contacts/1003") == 0

    # The next sync finds the webhook's writes already there.
    for stream in ("contacts", "companies"):
        nxt = run_stream_sync(cid, stream, store=store)
        assert nxt.status == "success" and nxt.counts["synced"] == 0 and nxt.counts["deleted"] == 0, nxt.counts


def test_forged_stale_tampered_and_foreign_deliveries_are_refused_and_write_nothing(
    store: Any, web: Web, hooked: tuple[FakeHubSpot, str, Signer],
) -> None:
    fake, _cid, signer = hooked
    url = web.url + ROUTE
    batch = [fake.event("contact.propertyChange", "1001", event_id=21, propertyName="email")]
    now = time.time()
    forged = _post(web, signer.forged()(batch, url=url, timestamp=now, event_id="-"))
    stale = _post(web, signer(batch, url=url, timestamp=now - 301, event_id="-"))  # the window is 5 minutes
    good = signer(batch, url=url, timestamp=now, event_id="-")
    tampered = httpx.post(url, content=good.body.replace(b"1001", b"1002"), headers=dict(good.headers), timeout=30)
    signed_for_another_url = signer(batch, url="https://attacker.example" + ROUTE, timestamp=now, event_id="-")
    elsewhere = httpx.post(url, content=signed_for_another_url.body, headers=dict(signed_for_another_url.headers),
                           timeout=30)
    unsigned = httpx.post(url, content=good.body, headers={"Content-Type": "application/json"}, timeout=30)
    for r in (forged, stale, tampered, elsewhere, unsigned):
        assert r.status_code == 401, r.text
        assert "Traceback" not in r.text and signer.secret not in r.text
    other_portal = [fake.event("contact.propertyChange", "1001", event_id=22, portal_id=777)]
    assert _post(web, signer(other_portal, url=url, timestamp=now, event_id="-")).status_code == 404
    assert count(store, "webhook_events") == 0 and web.dispatcher.targets == []
    # A fresh, correctly signed one still gets in.
    assert _post(web, signer(batch, url=url, timestamp=time.time(), event_id="-")).json()["queued"] == 2


def test_a_restore_after_a_deletion_in_one_batch_follows_occurred_at(
    store: Any, web: Web, hooked: tuple[FakeHubSpot, str, Signer],
) -> None:
    fake, cid, signer = hooked
    t = time.time()
    # Delivered out of order: the restore (creation) happened after the deletion.
    batch = [fake.event("company.creation", "1003", event_id=31, occurred_at=t - 10),
             fake.event("company.deletion", "1003", event_id=32, occurred_at=t - 20)]
    assert _post(web, signer(batch, url=web.url + ROUTE, timestamp=t, event_id="-")).status_code == 200
    assert process_inbox(cid, "companies", store=store).done == 1
    assert _rows(store, "SELECT count(*) AS n FROM companies WHERE deleted_at IS NOT NULL")[0]["n"] == 0
    assert fake.count("/crm/v3/objects/companies/1003") == 1


def test_webhooks_apply_the_streams_overwrite_policy(store: Any, web: Web,
                                                     hooked: tuple[FakeHubSpot, str, Signer]) -> None:
    fake, cid, signer = hooked
    enable_stream(store, cid, "contacts", filters={"overwrite_policy": "hubspot_wins"})
    fake.update("contacts", "1002", jobtitle="Head of Data")
    batch = [fake.event("contact.propertyChange", "1002", event_id=41, propertyName="jobtitle")]
    assert _post(web, signer(batch, url=web.url + ROUTE, timestamp=time.time(), event_id="-")).status_code == 200
    assert process_inbox(cid, "contacts", store=store).done == 1
    assert _rows(store, "SELECT title FROM contacts WHERE email = 'ada2@mail.example'")[0]["title"] == "Head of Data"
