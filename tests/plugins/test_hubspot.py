"""The ``hubspot`` plugin's syncs end to end against the stateful fake of ``tests/fakes/hubspot.py``.

Connections are made by the plugin's own ``on_token_exchanged`` over tokens the fake issued (the OAuth
browser legs are in ``test_hubspot_oauth.py``, webhooks in ``test_hubspot_webhooks.py``); runs go through
``run_stream_sync`` into the real store. Retries wait on the fake's clock, so nothing sleeps for real.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes import hubspot as fakes
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.server import FakeClock
from tests.fixtures.fakes import retries_on
from tests.fixtures.tokens import stored_at_each_request, stored_when_first_used

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
COMPANIES, CONTACTS = 11, 15
"""Companies 5 and 10 have no domain, contacts 7 and 14 no email."""
WITH_DOMAIN, WITH_EMAIL = 9, 13


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def hub(store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeHubSpot, str]:
    """The fake with 11 companies and 15 contacts; a connection with both streams enabled."""
    fake = fakes.serve(monkeypatch, serve_fake, COMPANIES, CONTACTS, clock.time)
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, "companies")
    enable_stream(store, cid, "contacts")
    return fake, cid


def _rows(store: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    with store.connection() as c:
        return list(c.execute(sql, args).fetchall())


def _one(store: Any, sql: str, *args: Any) -> Any:
    return next(iter(_rows(store, sql, *args)[0].values()))


def _versions(store: Any) -> dict[str, str]:
    """Every contact and company row's version (xmin): a rewrite, even to equal values, changes it."""
    return {r["k"]: str(r["xmin"]) for r in _rows(
        store, "SELECT 'p:' || id::text AS k, xmin::text AS xmin FROM contacts"
               " UNION ALL SELECT 'c:' || id::text, xmin::text FROM companies")}


def _synced(store: Any, cid: str, stream: str) -> dict[str, str]:
    """External id -> hissuno id of what ``stream`` ingested."""
    return {r["external_id"]: str(r["hissuno_id"]) for r in _rows(
        store, "SELECT external_id, hissuno_id FROM integration_synced_records WHERE connection_id = %s"
               " AND stream_id = %s", cid, stream)}


def _search_filters(req: Any) -> dict[str, str]:
    body = req.json()
    return {f["operator"]: f["value"] for g in body.get("filterGroups", []) for f in g["filters"]}


def _ms(at: datetime) -> str:
    return str(int(at.timestamp() * 1000))


def test_first_sync_matches_the_dataset_with_real_company_associations(
    store: Any, hub: tuple[FakeHubSpot, str],
) -> None:
    fake, cid = hub
    companies = run_stream_sync(cid, "companies", store=store)
    assert companies.status == "success", companies.error
    assert companies.counts["found"] == COMPANIES and companies.counts["synced"] == WITH_DOMAIN
    assert companies.counts["skipped"] == COMPANIES - WITH_DOMAIN and companies.counts["failed"] == 0
    contacts = run_stream_sync(cid, "contacts", store=store)
    assert contacts.status == "success", contacts.error
    assert contacts.counts["synced"] == WITH_EMAIL and contacts.counts["skipped"] == CONTACTS - WITH_EMAIL
    assert _one(store, "SELECT count(*) FROM companies") == WITH_DOMAIN
    assert _one(store, "SELECT count(*) FROM contacts") == WITH_EMAIL
    assert len(_synced(store, cid, "companies")) == WITH_DOMAIN and len(_synced(store, cid, "contacts")) == WITH_EMAIL

    # Mapping as the reference: company 3's fields and custom fields.
    c3 = _rows(store, "SELECT * FROM companies WHERE domain = 'company3.example'")[0]
    assert (c3["name"], c3["industry"], c3["country"], c3["employee_count"], c3["notes"]) == (
        "Company 3", "COMPUTER_SOFTWARE", "France", 30, "Customer number 3")
    assert c3["custom_fields"]["hubspot_annual_revenue"] == 3000000.5
    assert c3["custom_fields"]["hubspot_website"] == "https://company3.example"
    assert c3["custom_fields"]["hubspot_hs_object_id"] == "1003"

    # Each contact's company is its primary associated company with a domain, never a name-made pseudo-domain.
    domains = {str(c["id"]): c["properties"]["domain"] for c in fake.live("companies")}
    expected = {}
    for contact in fake.live("contacts"):
        if contact["properties"]["email"]:
            links = sorted(fake.links[contact["id"]], key=lambda link: not link[1])
            expected[contact["properties"]["email"]] = next((domains[c] for c, _ in links if domains[c]), None)
    got = {r["email"]: r["domain"] for r in _rows(
        store, "SELECT p.email, c.domain FROM contacts p LEFT JOIN companies c ON c.id = p.company_id")}
    assert got == expected
    # The primary association decides, not the first one listed.
    listed_first = {c["properties"]["email"]: domains[fake.links[c["id"]][0][0]] for c in fake.live("contacts")}
    assert sum(1 for email, domain in expected.items() if domain and listed_first[email] != domain) >= 5
    assert _one(store, "SELECT count(*) FROM companies WHERE domain LIKE 'free-text%%'") == 0
    ada1 = _rows(store, "SELECT * FROM contacts WHERE email = 'ada1@mail.example'")[0]
    assert (ada1["name"], ada1["title"], ada1["phone"]) == ("Ada1 Lovelace", "Engineer", "+33 1 00 00 0001")
    assert ada1["custom_fields"]["hubspot_company"] == "Free text 1 Inc"
    assert ada1["custom_fields"]["hubspot_lifecycle_stage"] == "customer"

    # One search page per stream, sorted ascending on the object's own last-modified property, no lower bound.
    (co_search,) = fake.searches("companies")
    assert co_search.json()["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    assert co_search.json()["limit"] == 200 and "filterGroups" not in co_search.json()
    (ct_search,) = fake.searches("contacts")
    assert ct_search.json()["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    # Associations and company domains by batch: one call each for the page, not one per contact.
    assert fake.count("/crm/v4/associations/contacts/companies/batch/read") == 1
    assert fake.count("/crm/v3/objects/companies/batch/read") == 1
    newest = max(fake.objects["contacts"].stamps.values())
    assert contacts.cursor_after == datetime.fromtimestamp(newest, UTC)


def test_second_sync_writes_nothing_and_an_incremental_run_changes_exactly_k(
    store: Any, hub: tuple[FakeHubSpot, str],
) -> None:
    fake, cid = hub
    # HubSpot's values win, so that every edit below must reach its contact.
    enable_stream(store, cid, "contacts", filters={"overwrite_policy": "hubspot_wins"})
    first = run_stream_sync(cid, "contacts", store=store)
    assert first.status == "success"
    versions = _versions(store)
    second = run_stream_sync(cid, "contacts", store=store)
    assert second.status == "success" and second.counts["synced"] == 0
    assert _versions(store) == versions, "no row was rewritten"
    # Boundary-safe: the next search starts AT the cursor (GTE), so an edit in the same millisecond is not lost.
    assert _search_filters(fake.searches("contacts")[-1]) == {"GTE": _ms(first.cursor_after)}

    # K = 3: two edits and one new contact.
    fake.update("contacts", "1002", jobtitle="CTO")
    fake.update("contacts", "1009", lastname="Byron")
    fake.add_contacts(1)
    third = run_stream_sync(cid, "contacts", store=store)
    assert third.status == "success" and third.counts["synced"] == 3
    changed = {k for k, v in _versions(store).items() if versions.get(k) != v}
    synced = _synced(store, cid, "contacts")
    assert changed == {f"p:{synced[i]}" for i in ("1002", "1009", "1016")}
    assert _one(store, "SELECT title FROM contacts WHERE email = 'ada2@mail.example'") == "CTO"

    versions = _versions(store)
    full = run_stream_sync(cid, "contacts", SyncPlan.full(), store=store)
    assert full.status == "success" and full.counts["synced"] == 0 and full.counts["found"] == CONTACTS + 1
    assert _versions(store) == versions and "filterGroups" not in fake.searches("contacts")[-1].json()


def test_a_backfill_window_is_a_gte_lt_search_and_leaves_the_cursor(store: Any, hub: tuple[FakeHubSpot, str]) -> None:
    fake, cid = hub
    stamps = sorted(fake.objects["companies"].stamps.items(), key=lambda kv: kv[1])
    since, until = (datetime.fromtimestamp(stamps[i][1], UTC) for i in (2, 6))
    result = run_stream_sync(cid, "companies", SyncPlan.backfill(since, until), store=store)
    assert result.status == "success", result.error
    assert _search_filters(fake.searches("companies")[0]) == {"GTE": _ms(since), "LT": _ms(until)}
    assert set(_synced(store, cid, "companies")) == {k for k, _ in stamps[2:6]} - {"1005"}
    assert repo.get_stream(store, cid, "companies").last_sync_at is None


def test_the_10k_search_cap_is_read_past_by_rewindowing_on_last_modified(
    store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Scaled down: a cap of 8 results per query and pages of 4, with ties on the first window's edge.
    monkeypatch.setattr("hissuno_airflow.plugins.hubspot.client.SEARCH_CAP", 8)
    monkeypatch.setattr("hissuno_airflow.plugins.hubspot.client.SEARCH_PAGE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, 0, 0, clock.time, search_cap=8)
    base = T0.timestamp()
    for i in range(20):
        fake.add_companies(1, at=base + [0, 1, 2, 3, 4, 5, 6, 7, 7, 7, 8, 9, 10, 11, 12, 13, 14, 14, 15, 16][i])
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, "companies")
    result = run_stream_sync(cid, "companies", store=store)
    assert result.status == "success", result.error
    assert result.counts["found"] == 20 and result.counts["synced"] == 16  # 4 of 20 without a domain
    searches = fake.searches("companies")
    assert all(int(r.json().get("after") or 0) < 8 for r in searches), "never a page past the cap"
    windows = [_search_filters(r).get("GTE") for r in searches if not r.json().get("after")]
    # Each page is a new window at the last modification time the previous one reached (inclusive); the page
    # from 7 s (7, 7, 7, 8 after 6, 7, 7, 7) moves on past the tie.
    assert windows == [None, *(_ms(datetime.fromtimestamp(base + t, UTC)) for t in (3, 6, 7, 8, 11, 14, 16))]


def test_the_overwrite_policy_filter_decides_what_hubspot_may_change(
    store: Any, hub: tuple[FakeHubSpot, str],
) -> None:
    fake, cid = hub
    assert run_stream_sync(cid, "contacts", store=store).status == "success"
    # Someone edited the contact in hissuno; HubSpot changes it too.
    with store.connection() as c:
        c.execute("UPDATE contacts SET name = 'Ada (edited here)', title = NULL WHERE email = 'ada1@mail.example'")
    name_title = "SELECT name, title FROM contacts WHERE email = 'ada1@mail.example'"

    fake.update("contacts", "1001", firstname="Augusta", jobtitle="Countess")
    assert run_stream_sync(cid, "contacts", store=store).status == "success"  # fill_nulls (the default)
    assert _rows(store, name_title)[0] == {"name": "Ada (edited here)", "title": "Countess"}

    enable_stream(store, cid, "contacts", filters={"overwrite_policy": "never_overwrite"})
    fake.update("contacts", "1001", jobtitle="Mathematician")
    assert run_stream_sync(cid, "contacts", store=store).status == "success"
    assert _rows(store, name_title)[0] == {"name": "Ada (edited here)", "title": "Countess"}

    enable_stream(store, cid, "contacts", filters={"overwrite_policy": "hubspot_wins"})
    fake.update("contacts", "1001", jobtitle="Analyst")
    assert run_stream_sync(cid, "contacts", store=store).status == "success"
    assert _rows(store, name_title)[0] == {"name": "Augusta Lovelace", "title": "Analyst"}


def test_archived_records_are_deleted_and_restored_ones_come_back(store: Any, hub: tuple[FakeHubSpot, str]) -> None:
    fake, cid = hub
    assert run_stream_sync(cid, "companies", store=store).status == "success"
    fake.archive("companies", "1003")
    fake.archive("companies", "1005")  # never ingested (no domain): nothing to delete
    result = run_stream_sync(cid, "companies", store=store)
    assert result.status == "success" and result.counts["deleted"] == 1 and result.counts["synced"] == 0
    assert _rows(store, "SELECT domain FROM companies WHERE deleted_at IS NOT NULL") == [{"domain": "company3.example"}]
    assert fake.requests_to("/crm/v3/objects/companies")[-1].query["archived"] == "true"
    again = run_stream_sync(cid, "companies", store=store)
    assert again.counts["deleted"] == 0 and again.counts["synced"] == 0, "an archive is deleted once"
    fake.restore("companies", "1003")
    back = run_stream_sync(cid, "companies", store=store)
    assert back.status == "success" and back.counts["synced"] == 1
    assert _one(store, "SELECT count(*) FROM companies WHERE deleted_at IS NOT NULL") == 0


def test_a_full_sync_deletes_what_hubspot_purged_without_an_archive(store: Any, hub: tuple[FakeHubSpot, str]) -> None:
    fake, cid = hub
    assert run_stream_sync(cid, "contacts", store=store).status == "success"
    fake.purge("contacts", "1004")  # a GDPR deletion: gone, not archived
    fake.purge("contacts", "1007")  # never ingested (no email)
    incremental = run_stream_sync(cid, "contacts", store=store)
    assert incremental.counts["deleted"] == 0, "an incremental run cannot tell a purge from no change"
    full = run_stream_sync(cid, "contacts", SyncPlan.full(), store=store)
    assert full.status == "success" and full.counts["deleted"] == 1 and full.counts["synced"] == 0
    assert [r["email"] for r in _rows(store, "SELECT email FROM contacts WHERE deleted_at IS NOT NULL")] == [
        "ada4@mail.example"]


def test_429s_are_waited_out_as_hubspot_says(store: Any, hub: tuple[FakeHubSpot, str], clock: FakeClock) -> None:
    fake, cid = hub
    told = fake.inject_429("/crm/v3/objects/contacts/search", retry_after=7)
    # HubSpot's secondly / ten-secondly 429 often has no Retry-After: wait for the next 10 s window.
    silent = fake.inject_429("/crm/v4/associations/contacts/companies/batch/read", retry_after=None,
                             json={"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                                   "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"})
    result = run_stream_sync(cid, "contacts", store=store)
    assert result.status == "success", result.error
    assert told.hits == 1 and silent.hits == 1 and result.counts["synced"] == WITH_EMAIL
    assert clock.sleeps == [7.0, 10.0]
    again = [b.at - a.at for a, b in itertools.pairwise(fake.requests) if (a.path, a.body) == (b.path, b.body)]
    assert sorted(again) == [7.0, 10.0]


def test_the_search_rate_of_five_a_second_is_respected_after_429s(
    store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("hissuno_airflow.plugins.hubspot.client.SEARCH_PAGE", 2)
    fake = fakes.serve(monkeypatch, serve_fake, 20, 0, clock.time, search_per_second=5)
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, "companies")
    result = run_stream_sync(cid, "companies", store=store)
    assert result.status == "success", result.error
    # 20 searches (each page of two a window from the last one seen, which comes back at its top): every
    # sixth in a second is refused, and waited out for the next 10-second window.
    assert result.counts["found"] == 20 and clock.sleeps == [10.0] * 3
    assert len(fake.searches("companies")) == 20 + 3


def test_a_spent_ten_second_budget_waits_for_the_next_window_instead_of_a_429(
    store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two non-search requests per 10 s: associations, then company domains, then the archive list.
    fake = fakes.serve(monkeypatch, serve_fake, 4, 6, clock.time, ten_second_limit=2)
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, "contacts")
    result = run_stream_sync(cid, "contacts", store=store)
    assert result.status == "success", result.error
    assert fake.limited == 0 and clock.sleeps == [10.0]
    archive_list = fake.requests_to("/crm/v3/objects/contacts")[-1]
    assert archive_list.at - fake.requests_to("/crm/v3/objects/companies/batch/read")[-1].at == 10.0


def test_a_bad_record_goes_to_ingest_errors_and_the_run_goes_on(store: Any, hub: tuple[FakeHubSpot, str]) -> None:
    fake, cid = hub
    fake.update("companies", "1004", domain="not a domain")
    result = run_stream_sync(cid, "companies", store=store)
    assert result.status == "success" and result.counts["failed"] == 1 and result.counts["synced"] == WITH_DOMAIN - 1
    errors = _rows(store, "SELECT kind, external_id, reason FROM ingest_errors WHERE connection_id = %s", cid)
    assert [(e["kind"], e["external_id"]) for e in errors] == [("companies", "1004")] and "domain" in errors[0]["reason"]


def test_a_listing_failure_fails_the_run_and_keeps_the_cursor(store: Any, hub: tuple[FakeHubSpot, str]) -> None:
    fake, cid = hub
    assert run_stream_sync(cid, "contacts", store=store).status == "success"
    cursor = repo.get_stream(store, cid, "contacts").last_sync_at
    fake.add_contacts(3)
    down = fake.inject_5xx("/crm/v3/objects/contacts/search", times=None)
    failed = run_stream_sync(cid, "contacts", store=store)
    assert failed.status == "error" and failed.retriable and down.hits >= 2
    assert repo.get_stream(store, cid, "contacts").last_sync_at == cursor
    fake.faults.remove(down)
    again = run_stream_sync(cid, "contacts", store=store)
    assert again.status == "success" and again.counts["synced"] == 3


def test_token_expiry_mid_sync_is_one_refresh_grant_and_the_old_refresh_token_is_never_reused(
    store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("hissuno_airflow.plugins.hubspot.client.SEARCH_PAGE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, 0, 12, clock.time)
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, "contacts")
    row = repo.get_connection(store, cid)
    before = load_credentials(store, row)
    seen = stored_at_each_request(fake, "/crm/v3/objects/contacts/search", store, cid)
    # HubSpot expires the token server-side before its stated lifetime: while page 2 is served.
    fake.before_request("/crm/v3/objects/contacts/search", lambda req: fake.expire_access_token(before["access_token"]),
                        when=lambda req: bool((req.json() or {}).get("filterGroups")))
    result = run_stream_sync(cid, "contacts", store=store)
    assert result.status == "success", result.error
    assert result.counts["synced"] == 11
    assert fake.refreshes == 1 and fake.refusals == []
    after = load_credentials(store, row)
    # The rotated refresh token was saved before the new access token's first request went out.
    assert stored_when_first_used(seen, after["access_token"]) == after["refresh_token"] != before["refresh_token"]
    assert before["refresh_token"] in fake.used_refresh_tokens
    assert after["refresh_token"] in fake.live_refresh_tokens and after["refresh_token"] != before["refresh_token"]
    assert after["access_token"] != before["access_token"] and (datetime.fromisoformat(after["expires_at"])
                                                              > datetime.now(UTC) + timedelta(minutes=25))
    tokens = [r.bearer_token for r in fake.searches("contacts")]
    # Page 3 was refused once with the old token and resent once with the new one; page 4 used the new one.
    assert fake.refused_tokens == [before["access_token"]], (tokens, fake.refused_tokens)
    assert tokens == [before["access_token"]] * 3 + [after["access_token"]] * 2
    # A second run uses the saved token: no further grant, the old refresh token is never presented again.
    assert run_stream_sync(cid, "contacts", store=store).status == "success"
    assert fake.refreshes == 1 and fake.refusals == []


def test_a_token_about_to_expire_is_refreshed_before_the_first_request(
    store: Any, hub: tuple[FakeHubSpot, str],
) -> None:
    from hissuno_airflow.runtime.credentials import credential_store

    fake, cid = hub
    row = repo.get_connection(store, cid)
    creds = load_credentials(store, row)
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()  # inside the 5-minute leeway
    credential_store(store, "db").save(row, {**creds, "expires_at": soon})
    result = run_stream_sync(cid, "companies", store=store)
    assert result.status == "success", result.error
    assert fake.refreshes == 1
    fresh = load_credentials(store, row)
    assert all(r.bearer_token == fresh["access_token"] for r in fake.searches("companies"))
    # Refreshed tokens are saved with HubSpot's 30-minute lifetime.
    assert datetime.fromisoformat(fresh["expires_at"]) > datetime.now(UTC) + timedelta(minutes=25)


def test_no_token_reaches_logs_progress_or_run_rows(store: Any, serve_fake: Any, clock: FakeClock, caplog: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")  # per-request debug lines too
    caplog.set_level(logging.DEBUG)
    fake = fakes.serve(monkeypatch, serve_fake, 3, 4, clock.time)
    cid = fakes.connect(store, fake)  # the identity check puts the token in a URL path
    enable_stream(store, cid, "contacts")
    events: list[str] = []
    fake.expire_access_token()  # and a refresh mid-run
    result = run_stream_sync(cid, "contacts", store=store, on_progress=lambda e, counts: events.append(e.model_dump_json()))
    assert result.status == "success", result.error
    runs = json.dumps(_rows(store, "SELECT * FROM integration_sync_runs WHERE connection_id = %s", cid), default=str)
    secrets = [*fake.access_issued, *fake.used_refresh_tokens, *fake.live_refresh_tokens, fakes.CLIENT_SECRET]
    assert len(secrets) >= 5 and fake.count("/oauth/v1/access-tokens/" + fake.access_issued[0]) == 1
    for secret in secrets:
        assert secret not in caplog.text and secret not in "".join(events) and secret not in runs
