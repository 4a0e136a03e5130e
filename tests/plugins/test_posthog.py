"""The ``posthog`` plugin against the stateful fake of ``tests/fakes/posthog.py`` on 127.0.0.1.

Connect through the real connect flow (and the real CLI), runs through ``run_stream_sync`` into the real
store. Retries wait on a fake clock, so Retry-After waits are asserted, not taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit import InputError, ProviderAuthError, RateLimited
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes import posthog as fakes
from tests.fakes.posthog import PROJECT_ID, THROTTLED, PostHog
from tests.fakes.server import FakeClock
from tests.fixtures.cli import standalone_env
from tests.fixtures.fakes import retries_on
from tests.fixtures.store import row_versions

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake's clock; every HTTP client's retries wait on it instead of sleeping."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def project(store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[PostHog, str, str]:
    """150 persons with emails (two pages), one more sharing an email, one without; seven definitions."""
    fake, key = fakes.serve(monkeypatch, serve_fake, 150, 7, clock=clock.time)
    twin = fake.persons.add(id="twin", uuid="twin", distinct_ids=["twin-d"], is_identified=True,
                            properties={"email": "USER1@customer1.com", "title": "CTO"})
    fake.add_event(twin["id"], "$exception", days_ago=2, url="https://app.acme.io/settings")
    fake.persons.add(id="anon", uuid="anon", distinct_ids=["anon-d"], is_identified=False, properties={})
    fake.add_event("anon", "$pageview")
    cid = fakes.connect(store, key)
    enable_stream(store, cid, "behavioral", filters={"sync_new_contacts": True})
    enable_stream(store, cid, "analytics")
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


def _summary(store: Any, external_id: str) -> str:
    with store.connection() as c:
        return str(c.execute("SELECT content FROM session_messages WHERE session_id = %s",
                             (_session(store, external_id)["id"],)).fetchone()["content"])


# -- connect -----------------------------------------------------------------------------------------


def _connect(store: Any, **creds: str) -> dict[str, Any]:
    return connect_api_key(registry.get_plugin("posthog"), store, project_id=settings.default_project_id(),
                           user_id="t", credentials=creds)


def test_connect_self_hosted_us_and_eu_hosts(store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, key = fakes.serve(monkeypatch, serve_fake, 1, 1)
    cid = fakes.connect(store, key, host="https://posthog.acme.io/")
    conn = repo.get_connection(store, cid)
    assert (conn.external_account_id, conn.account_label) == ("posthog.acme.io/42", "Acme Web App")
    assert fake.requests_to("/api/projects/{pid}/")[0].bearer_token == key
    # Cloud hosts use their own bases (no template, no DNS check); the operator may still point them elsewhere.
    monkeypatch.setenv("HISSUNO_POSTHOG_US_URL", fake.url)
    monkeypatch.setenv("HISSUNO_POSTHOG_EU_URL", fake.url)
    monkeypatch.delenv("HISSUNO_POSTHOG_API_URL")
    us = _connect(store, api_key=key, project_id=PROJECT_ID, host="")
    eu = _connect(store, api_key=key, project_id=" 42 ", host="EU")
    assert repo.get_connection(store, us["connection_id"]).external_account_id == "us.posthog.com/42"
    assert repo.get_connection(store, eu["connection_id"]).external_account_id == "eu.posthog.com/42"
    assert len({cid, us["connection_id"], eu["connection_id"]}) == 3


def test_connect_refusals_name_the_field(store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, key = fakes.serve(monkeypatch, serve_fake, 1, 1)
    with pytest.raises(InputError, match=r"api_key: this is a project API key \(phc_"):
        _connect(store, api_key="phc_public_capture_token", project_id=PROJECT_ID, host="https://posthog.acme.io")
    with pytest.raises(InputError, match="project_id: expected the numeric project id"):
        _connect(store, api_key=key, project_id="acme-web", host="https://posthog.acme.io")
    with pytest.raises(InputError, match=r"project_id: project 99 was not found on posthog\.acme\.io") as missing:
        _connect(store, api_key=key, project_id="99", host="https://posthog.acme.io")
    assert missing.value.field == "credentials.project_id"
    revoked = fake.issue_token("phx_revoked_000000000000")
    fake.revoke_token(revoked)
    with pytest.raises(Exception, match="401") as refused:
        _connect(store, api_key=revoked, project_id=PROJECT_ID, host="https://posthog.acme.io")
    assert refused.value.http_status == 400 and revoked not in str(refused.value)  # type: ignore[attr-defined]
    assert fake.count("/api/projects/{pid}/") == 2, "the phc_ key and the malformed id never left the process"
    # Without the operator's override the user's host is checked: a URL, and not a private address.
    monkeypatch.delenv("HISSUNO_POSTHOG_API_URL")
    with pytest.raises(InputError, match="host: expected an http"):
        _connect(store, api_key=key, project_id=PROJECT_ID, host="posthog.acme.io")
    with pytest.raises(InputError, match=r"host: the host '127\.0\.0\.1' is a loopback address"):
        _connect(store, api_key=key, project_id=PROJECT_ID, host=fake.url)
    assert _one(store, "SELECT count(*) FROM integration_connections") == 0


# -- behavioral --------------------------------------------------------------------------------------


def test_behavioral_first_sync_one_session_per_contact_with_metrics_and_429_waits(
    store: Any, project: tuple[PostHog, str, str], clock: FakeClock
) -> None:
    fake, cid, _key = project
    limited = fake.inject_429("/api/projects/{pid}/persons/", retry_after=5,
                              when=lambda r: r.query.get("offset") == "100")

    result = run_stream_sync(cid, "behavioral", store=store)

    assert result.status == "success", result.error
    assert result.counts["synced"] == 150 and result.counts["failed"] == 0
    assert _one(store, "SELECT count(*) FROM sessions WHERE session_type = 'behavioral'") == 150
    assert _one(store, "SELECT count(*) FROM contacts") == 150
    assert limited.hits == 1 and clock.sleeps == [5]
    assert len(fake.queries) == 1 and fake.queries[0]["refresh"] == "blocking"
    # The two persons sharing an email are one contact: both persons' events count, the property too.
    s = _session(store, "contact:user1@customer1.com")
    assert s["name"] == "PostHog Activity - User 1" and s["source"] == "posthog"
    assert s["custom_fields"]["posthog_person_ids"] == sorted([fake.persons[0]["id"], "twin"])
    assert s["custom_fields"]["posthog_event_count"] == 4
    # Weighted over days before the window's end: 3 x 3 (events 1, 2 and 6 days ago) + 2 (11 days) = 11 -> 6.
    assert s["custom_fields"]["posthog_engagement_score"] == 6
    summary = _summary(store, "contact:user1@customer1.com")
    assert "**Engagement score:** 6/100 (growing)" in summary
    assert "- $exception: 1 (last " in summary and "https://app.acme.io/settings" in summary
    with store.connection() as c:
        contact = c.execute("SELECT * FROM contacts WHERE email = 'user1@customer1.com'").fetchone()
    assert contact["custom_fields"]["posthog_plan"] == "pro" and contact["title"] == "CTO"
    assert result.cursor_after is not None


def test_behavioral_enriches_the_projects_existing_contacts_and_makes_no_new_ones_by_default(
    store: Any, project: tuple[PostHog, str, str]
) -> None:
    """The reference's default: the project's contacts (here as another integration left them, read
    through the store) matched to persons by email; unmatched and archived contacts get nothing, and no
    person becomes a contact unless ``sync_new_contacts`` is on."""
    fake, cid, _key = project
    enable_stream(store, cid, "behavioral", filters={})
    pid = settings.default_project_id()
    with store.connection() as c:
        for email, name, archived in (("user3@customer3.com", "Casey From Zendesk", False),
                                      ("USER1@customer1.com", "Uma One", False),
                                      ("nobody@elsewhere.com", "No Person", False),
                                      ("user5@customer1.com", "Archived Five", True)):
            c.execute("INSERT INTO contacts (project_id, name, email, custom_fields, is_archived)"
                      " VALUES (%s, %s, %s, %s, %s)", (pid, name, email, json.dumps({"zendesk_tier": "gold"}),
                                                        archived))
    result = run_stream_sync(cid, "behavioral", store=store)

    assert result.status == "success", result.error
    assert result.counts["synced"] == 2
    assert _one(store, "SELECT count(*) FROM contacts") == 4, "no person became a new contact"
    assert _session(store, "contact:user3@customer3.com")["name"] == "PostHog Activity - Casey From Zendesk"
    assert _session(store, "contact:user1@customer1.com")["custom_fields"]["posthog_person_ids"] == sorted(
        [fake.persons[0]["id"], "twin"])
    assert _session(store, "contact:nobody@elsewhere.com") is None
    assert _session(store, "contact:user5@customer1.com") is None, "an archived contact is left alone"
    with store.connection() as c:
        casey = c.execute("SELECT * FROM contacts WHERE email = 'user3@customer3.com'").fetchone()
    # Person properties merged into the contact's custom fields; what it had is kept.
    assert casey["name"] == "Casey From Zendesk"
    assert casey["custom_fields"] == {"zendesk_tier": "gold", "posthog_plan": "pro", "posthog_name": "User 3",
                                      "posthog_email": "user3@customer3.com"}

    enable_stream(store, cid, "behavioral", filters={"sync_new_contacts": True, "max_new_contacts": 10})
    more = run_stream_sync(cid, "behavioral", SyncPlan.full(), store=store)
    assert more.status == "success" and more.counts["synced"] == 10, more.counts
    # Ten new emails; one of them (user5) is the archived contact's, which keeps its one row.
    assert _one(store, "SELECT count(*) FROM contacts") == 4 + 9


def test_behavioral_reruns_update_in_place_and_pick_up_exactly_the_changed(
    store: Any, project: tuple[PostHog, str, str]
) -> None:
    fake, cid, _key = project
    assert run_stream_sync(cid, "behavioral", store=store).counts["synced"] == 150
    versions = row_versions(store)
    assert run_stream_sync(cid, "behavioral", store=store).counts["synced"] == 0
    assert row_versions(store) == versions, "a second sync writes no row"
    stamp = _one(store, "SELECT max(updated_at) FROM sessions")

    fake.add_event(fake.persons[4]["id"], "report_created", days_ago=0.5)
    fake.add_event(fake.persons[9]["id"], "$rageclick", days_ago=0.5)
    fake.add_persons(1)
    again = run_stream_sync(cid, "behavioral", store=store)

    assert again.status == "success" and again.counts["synced"] == 3
    assert _one(store, "SELECT count(*) FROM sessions WHERE updated_at > %s", stamp) == 3
    versions = row_versions(store)
    full = run_stream_sync(cid, "behavioral", SyncPlan.full(), store=store)
    assert full.status == "success" and full.counts["synced"] == 0
    assert row_versions(store) == versions, "a full resync writes no row"
    # The reference made a new behavioural session per contact on every run; here there is one each.
    assert _one(store, "SELECT count(*) FROM sessions") == 151
    assert _one(store, "SELECT count(DISTINCT contact_id) FROM sessions") == 151


def test_behavioral_backfill_reads_exactly_its_window(store: Any, project: tuple[PostHog, str, str]) -> None:
    fake, cid, _key = project
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)
    result = run_stream_sync(cid, "behavioral", SyncPlan.backfill(since, until), store=store)
    assert result.status == "success", result.error
    assert fake.queries[-1]["query"]["values"]["start"] == "2026-01-01 00:00:00"
    assert fake.queries[-1]["query"]["values"]["end"] == "2026-01-31 00:00:00"
    assert repo.get_stream(store, cid, "behavioral").last_sync_at is None


def test_hogql_hourly_throttle_fails_the_run_retriably_without_waiting_an_hour(
    store: Any, project: tuple[PostHog, str, str], clock: FakeClock
) -> None:
    fake, cid, _key = project
    first = run_stream_sync(cid, "behavioral", store=store)
    fake.inject_429("/api/projects/{pid}/query/", retry_after=3600, json=THROTTLED)
    failed = run_stream_sync(cid, "behavioral", store=store)
    assert failed.status == "error" and failed.error_code == RateLimited.code and failed.retriable
    assert clock.sleeps == [] and len(fake.queries) == 1, "refused once, not retried within the hour"
    assert repo.get_stream(store, cid, "behavioral").last_sync_at == first.cursor_after


def test_a_revoked_key_asks_for_a_reconnect_and_is_not_retried(
    store: Any, project: tuple[PostHog, str, str], clock: FakeClock
) -> None:
    fake, cid, key = project
    fake.revoke_token(key)
    failed = run_stream_sync(cid, "behavioral", store=store)
    assert failed.status == "error" and failed.error_code == ProviderAuthError.code and not failed.retriable
    assert fake.count("/api/projects/{pid}/persons/") == 1 and clock.sleeps == []
    assert key not in (failed.error or "")


# -- analytics ---------------------------------------------------------------------------------------


def test_analytics_definitions_edits_deletions_and_idempotent_resyncs(
    store: Any, project: tuple[PostHog, str, str]
) -> None:
    fake, cid, _key = project
    first = run_stream_sync(cid, "analytics", store=store)
    assert first.status == "success" and first.counts["synced"] == 9, first.error
    assert _one(store, "SELECT count(*) FROM knowledge_sources") == 9
    with store.connection() as c:
        doc = c.execute("SELECT * FROM knowledge_sources WHERE name = 'PostHog person properties'").fetchone()
    assert doc is not None
    versions = row_versions(store)
    assert run_stream_sync(cid, "analytics", store=store).counts["synced"] == 0
    assert row_versions(store) == versions, "a second sync writes no row"

    fake.event_definitions.update(fake.event_definitions[2]["id"], description="Renamed in PostHog.")
    gone = fake.event_definitions[5]["id"]
    fake.event_definitions.delete(gone)
    fake.add_definitions(1)
    again = run_stream_sync(cid, "analytics", store=store)
    assert again.status == "success" and again.counts["synced"] == 2 and again.counts["deleted"] == 1
    assert _one(store, "SELECT count(*) FROM knowledge_sources WHERE deleted_at IS NULL") == 9
    versions = row_versions(store)
    full = run_stream_sync(cid, "analytics", SyncPlan.full(), store=store)
    assert full.counts["synced"] == 0 and full.counts.get("deleted", 0) == 0
    assert row_versions(store) == versions, "a full resync writes no row"


def test_a_malformed_definition_goes_to_ingest_errors_and_a_listing_failure_keeps_cursor_and_data(
    store: Any, project: tuple[PostHog, str, str]
) -> None:
    fake, cid, _key = project
    fake.add_definitions(100)  # 107: two pages
    fake.event_definitions.records[fake.event_definitions[3]["id"]]["updated_at"] = "yesterday-ish"
    first = run_stream_sync(cid, "analytics", store=store)
    assert first.status == "success" and first.counts["failed"] == 1 and first.counts["synced"] == 108
    assert _one(store, "SELECT count(*) FROM ingest_errors WHERE kind = 'knowledge'") == 1

    fake.inject_5xx("/api/projects/{pid}/event_definitions/", status=502, times=None,
                    when=lambda r: r.query.get("offset") == "100")
    failed = run_stream_sync(cid, "analytics", store=store)
    assert failed.status == "error" and failed.retriable
    assert repo.get_stream(store, cid, "analytics").last_sync_at == first.cursor_after
    assert _one(store, "SELECT count(*) FROM knowledge_sources WHERE deleted_at IS NOT NULL") == 0, \
        "a half-read listing deletes nothing"


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_connects_and_syncs_both_streams(store: Any, database_url: str, tmp_path: Any, serve_fake: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake, key = fakes.serve(monkeypatch, serve_fake, 12, 3)
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db", "HISSUNO_POSTHOG_API_URL": fake.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    bad = cli("connect", "posthog", "--set", "api_key=phc_nope", "--set", f"project_id={PROJECT_ID}",
              "--set", "host=https://posthog.acme.io")
    assert bad.returncode != 0 and "api_key: this is a project API key" in bad.stderr
    assert "Traceback" not in bad.stderr
    out = cli("connect", "posthog", "--set", f"api_key={key}", "--set", f"project_id={PROJECT_ID}",
              "--set", "host=https://posthog.acme.io", "--json")
    assert out.returncode == 0, out.stderr
    cid = json.loads(out.stdout)["connection_id"]
    for sid, n in (("behavioral", 12), ("analytics", 5)):
        assert cli("enable", cid, sid, "--filters", '{"sync_new_contacts": true}' if sid == "behavioral"
                   else "{}").returncode == 0
        done = json.loads(cli("sync", cid, sid, "--json").stdout)
        assert done["status"] == "success" and done["counts"]["synced"] == n, done
        assert key not in json.dumps(done)
    assert _one(store, "SELECT count(*) FROM sessions") == 12


def test_the_window_ends_at_the_end_of_the_utc_day(store: Any, project: tuple[PostHog, str, str]) -> None:
    fake, cid, _key = project
    run_stream_sync(cid, "behavioral", store=store)
    values = fake.queries[-1]["query"]["values"]
    end = datetime.strptime(values["end"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert end == datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert values["start"] == (end - timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")


def test_a_person_created_mid_sync_is_not_lost(store: Any, project: tuple[PostHog, str, str]) -> None:
    fake, cid, _key = project
    fake.before_request("/api/projects/{pid}/persons/", lambda req: fake.add_persons(1),
                        when=lambda r: r.query.get("offset") == "100")
    first = run_stream_sync(cid, "behavioral", store=store)
    second = run_stream_sync(cid, "behavioral", store=store)
    assert first.status == second.status == "success"
    assert first.counts["synced"] + second.counts["synced"] == 151
    assert _one(store, "SELECT count(*) FROM sessions") == 151


# -- HogQL paging and asynchronous queries -------------------------------------------------------------

CLIENT = "hissuno_airflow.plugins.posthog.client"


def _events_counted(store: Any) -> int:
    """Every event the behavioural sessions account for (``posthog_event_count`` summed)."""
    return int(_one(store, "SELECT coalesce(sum((custom_fields->>'posthog_event_count')::int), 0) FROM sessions"))


def _offsets(fake: PostHog) -> list[int]:
    return [int(q["query"]["query"].rsplit("OFFSET", 1)[1]) for q in fake.queries]


@pytest.mark.parametrize("has_more", [True, False], ids=["hasMore", "no-hasMore"])
def test_hogql_rows_are_read_page_after_page_until_the_last(
    store: Any, project: tuple[PostHog, str, str], monkeypatch: pytest.MonkeyPatch, has_more: bool
) -> None:
    """Pages of 50 rows here (10,000 in production): every (person, event) row of the window counts, with
    or without PostHog's ``hasMore`` (a full page is always followed by one more query)."""
    fake, cid, _key = project
    fake.has_more = has_more
    monkeypatch.setattr(f"{CLIENT}.QUERY_PAGE_ROWS", 50)
    with_email = sum(1 for e in fake.events if e["person_id"] != "anon")
    rows = len({(e["person_id"], e["event"]) for e in fake.events})

    result = run_stream_sync(cid, "behavioral", store=store)

    assert result.status == "success" and result.counts["synced"] == 150, result.error
    assert _events_counted(store) == with_email
    assert _offsets(fake) == list(range(0, rows + 1, 50)), "LIMIT 50 OFFSET 0, 50, ... to the last row"
    assert all("LIMIT 50 OFFSET" in q["query"]["query"] for q in fake.queries)


def test_more_rows_than_the_query_cap_fail_the_run_instead_of_dropping_rows(
    store: Any, project: tuple[PostHog, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, cid, _key = project
    monkeypatch.setattr(f"{CLIENT}.QUERY_PAGE_ROWS", 50)
    monkeypatch.setattr(f"{CLIENT}.MAX_QUERY_PAGES", 3)
    result = run_stream_sync(cid, "behavioral", store=store)
    assert result.status == "error" and "more than 150 (person, event) rows in the window" in (result.error or "")
    assert len(fake.queries) == 3 and _one(store, "SELECT count(*) FROM sessions") == 0
    assert repo.get_stream(store, cid, "behavioral").last_sync_at is None


def test_an_asynchronous_query_is_polled_until_complete_on_the_clients_clock(
    store: Any, project: tuple[PostHog, str, str], clock: FakeClock
) -> None:
    fake, cid, _key = project
    fake.async_polls = 3  # 202 on the POST, then three "still running" answers
    result = run_stream_sync(cid, "behavioral", store=store)
    assert result.status == "success" and result.counts["synced"] == 150, result.error
    assert _events_counted(store) == sum(1 for e in fake.events if e["person_id"] != "anon")
    polls = fake.requests_to("/api/projects/{pid}/query/{query_id}/")
    assert len(polls) == 4 and clock.sleeps == [1.0, 2.0, 4.0, 8.0], "waits double, on the retry sleeper"


def test_an_asynchronous_query_that_fails_or_never_finishes_fails_the_run_and_keeps_the_cursor(
    store: Any, project: tuple[PostHog, str, str], clock: FakeClock
) -> None:
    fake, cid, _key = project
    first = run_stream_sync(cid, "behavioral", store=store)
    fake.async_polls, fake.async_error = 1, "Query exceeded memory limit"
    failed = run_stream_sync(cid, "behavioral", store=store)
    assert failed.status == "error" and "Query exceeded memory limit" in (failed.error or "")
    assert not failed.retriable

    fake.async_polls, fake.async_error = 10_000, None
    stuck = run_stream_sync(cid, "behavioral", store=store)
    assert stuck.status == "error" and stuck.retriable and "still running after 600 s" in (stuck.error or "")
    assert sum(clock.sleeps[-70:]) >= 600 and max(clock.sleeps) == 10.0
    assert repo.get_stream(store, cid, "behavioral").last_sync_at == first.cursor_after


# -- listings that change while they are paged -----------------------------------------------------------


def test_persons_that_shift_across_pages_mid_sync_are_counted_once_and_all_held_next_run(
    store: Any, project: tuple[PostHog, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offset paging over a listing that changes: a person created mid-sync lands on page one (newest
    first), so the person at each later page's boundary is served twice. Counted twice, its events would
    be too; the next run (listing unchanged) holds every person once."""
    fake, cid, _key = project
    fake.newest_first = True
    monkeypatch.setattr(f"{CLIENT}.PAGE_SIZE", 25)
    hook = fake.before_request("/api/projects/{pid}/persons/", lambda req: fake.add_persons(1), times=3,
                               when=lambda r: r.query.get("offset") not in (None, "0"))
    first = run_stream_sync(cid, "behavioral", store=store)
    assert first.status == "success", first.error
    assert hook.runs == 3

    def check() -> None:
        with store.connection() as c:
            rows = c.execute("SELECT custom_fields FROM sessions WHERE session_type = 'behavioral'").fetchall()
        for row in rows:
            ids = row["custom_fields"]["posthog_person_ids"]
            assert len(ids) == len(set(ids)), ids
            events = sum(1 for e in fake.events if e["person_id"] in ids)
            assert row["custom_fields"]["posthog_event_count"] == events, (ids, row["custom_fields"])

    check()
    second = run_stream_sync(cid, "behavioral", store=store)
    assert second.status == "success", second.error
    check()
    assert _one(store, "SELECT count(*) FROM sessions") == 153
    assert _events_counted(store) == sum(1 for e in fake.events if e["person_id"] != "anon")


def test_definitions_that_move_to_page_one_mid_sync_are_not_deleted_and_no_change_is_lost(
    store: Any, project: tuple[PostHog, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A definition changed mid-sync moves to page one (newest first) after page one was read: a single
    pass never sees it. It still exists, so the run must not delete it, and the change must be held."""
    fake, cid, _key = project
    fake.newest_first = True
    monkeypatch.setattr(f"{CLIENT}.PAGE_SIZE", 4)
    fake.add_definitions(13)  # 20 event definitions: five pages
    rs = fake.event_definitions
    first = run_stream_sync(cid, "analytics", store=store)
    assert first.status == "success" and first.counts["synced"] == 22, first.error
    renamed: dict[str, str] = {}

    def mutate(req: Any) -> None:
        last = min(rs.records, key=lambda k: (rs.stamps[k], k))  # at the listing's end, not read yet
        renamed[last] = f"moved_{len(renamed) + 1}"
        rs.update(last, name=renamed[last])
        fake.add_definitions(1)

    hook = fake.before_request("/api/projects/{pid}/event_definitions/", mutate, times=3,
                               when=lambda r: r.query.get("offset") not in (None, "0"))
    second = run_stream_sync(cid, "analytics", store=store)
    assert second.status == "success", second.error
    assert hook.runs == 3
    fake.hooks.remove(hook)
    assert second.counts.get("deleted", 0) == 0, "a definition that still exists was deleted"

    def held() -> dict[str, list[str]]:
        with store.connection() as c:
            rows = c.execute("SELECT r.external_id, k.name FROM integration_synced_records r JOIN knowledge_sources k"
                             " ON k.id = r.hissuno_id WHERE r.connection_id = %s AND r.stream_id = 'analytics'"
                             " AND r.deleted_at IS NULL AND k.deleted_at IS NULL", (cid,)).fetchall()
            live = c.execute("SELECT count(*) AS n FROM knowledge_sources WHERE deleted_at IS NULL").fetchone()["n"]
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["external_id"], []).append(r["name"])
        assert live == len(rows), "duplicates"
        return out

    expected = {f"event:{k}" for k in rs.records} | {"properties:event", "properties:person"}
    for after in (second, run_stream_sync(cid, "analytics", store=store)):
        assert after.status == "success", after.error
        now = held()
        assert set(now) == expected, (sorted(expected - set(now)), sorted(set(now) - expected))
        assert all(len(names) == 1 for names in now.values())
        assert all(now[f"event:{k}"] == [f"PostHog event: {name}"] for k, name in renamed.items()), now
