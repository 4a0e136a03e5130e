"""The ``linear`` plugin's ``issues`` stream end to end against ``tests/fakes/linear.py`` on 127.0.0.1.

Connected through the real OAuth round trip (authorize URL, the fake's consent, the callback), runs
through ``run_stream_sync`` into the real store. Every HTTP client's retries wait on the fake's clock.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream, list_instances
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes import linear as fakes
from tests.fakes.linear import TEAMS, FakeLinear
from tests.fakes.server import FakeClock
from tests.fixtures.fakes import retries_on

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PER_TEAM = 7
ENG, DES = TEAMS[0]["id"], TEAMS[1]["id"]
PAGE = 3


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def linear(store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeLinear, str]:
    """Seven issues per team (stamped 09:00-09:13), pages of three, a connection with both teams enabled."""
    monkeypatch.setattr("hissuno_airflow.plugins.linear.client.PAGE_SIZE", PAGE)
    fake = fakes.serve(monkeypatch, serve_fake, PER_TEAM, clock=clock.time)
    clock.advance(50 * 60)
    cid = fakes.connect(store, fake)
    for team in (ENG, DES):
        enable_stream(store, cid, f"issues:{team}")
    return fake, cid


def _one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return next(iter(row.values()))


def _issues(store: Any, stream: str) -> dict[str, dict[str, Any]]:
    """External id -> the issue row (with its row version) this stream made."""
    with store.connection() as c:
        rows = c.execute("SELECT r.external_id, i.*, i.xmin::text AS version FROM integration_synced_records r"
                         " JOIN issues i ON i.id = r.hissuno_id WHERE r.stream_id = %s", (stream,)).fetchall()
    return {r["external_id"]: dict(r) for r in rows}


def _stamp(issue: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(issue["updatedAt"].replace("Z", "+00:00"))


def test_first_sync_ingests_each_team_with_one_query_per_page(store: Any, linear: tuple[FakeLinear, str]) -> None:
    fake, cid = linear
    for team in (ENG, DES):
        before = len(fake.graphql_bodies("Issues"))
        result = run_stream_sync(cid, f"issues:{team}", store=store)
        assert result.status == "success", result.error
        assert result.counts["synced"] == PER_TEAM and result.counts["failed"] == 0
        rows = _issues(store, f"issues:{team}")
        assert set(rows) == {i["id"] for i in fake.team_issues(team)}
        assert result.cursor_after == max(_stamp(i) for i in fake.team_issues(team))
        assert repo.get_stream(store, cid, f"issues:{team}").last_sync_at == result.cursor_after
        # Three pages of three, state and labels inside them: no request per issue.
        bodies = fake.graphql_bodies("Issues")[before:]
        assert len(bodies) == 3 and all(b["variables"]["filter"] == {"team": {"id": {"eq": team}}} for b in bodies)
        assert [bool(b["variables"].get("after")) for b in bodies] == [False, True, True]
        assert "state { id name type }" in bodies[0]["query"] and "includeArchived: true" in bodies[0]["query"]
    assert _one(store, "SELECT count(*) FROM issues") == 2 * PER_TEAM
    # Every request carried the connection's access token.
    token = load_credentials(store, repo.get_connection(store, cid))["access_token"]
    assert {r.bearer_token for r in fake.requests_to("/graphql")} == {token}


def test_mapping_of_state_priority_labels_and_identifiers(store: Any, linear: tuple[FakeLinear, str]) -> None:
    fake, cid = linear
    assert run_stream_sync(cid, f"issues:{ENG}", store=store).status == "success"
    rows = _issues(store, f"issues:{ENG}")
    expected_status = {"triage": "open", "backlog": "open", "unstarted": "ready", "started": "in_progress",
                       "completed": "resolved", "canceled": "closed"}
    expected_priority = {0: "low", 1: "high", 2: "high", 3: "medium", 4: "low"}
    expected_type = {"Bug": "bug", "Feature": "feature_request", "Improvement": "change_request"}
    for issue in fake.team_issues(ENG):
        row = rows[issue["id"]]
        labels = [lb["name"] for lb in issue["labels"]["nodes"]]
        assert row["name"] == issue["title"] and row["description"] == issue["description"]
        assert row["status"] == expected_status[issue["state"]["type"]], issue["state"]
        assert row["priority"] == expected_priority[issue["priority"]]
        assert row["type"] == (expected_type[labels[0]] if labels else "change_request")
        assert row["custom_fields"]["linear_identifier"] == issue["identifier"]
        assert row["custom_fields"]["linear_url"] == issue["url"]
        assert row["custom_fields"]["linear_team_id"] == ENG
    types = {r["type"] for r in rows.values()}
    assert types == {"bug", "feature_request", "change_request"}  # not the reference's constant


def test_a_bug_label_wins_and_labels_are_case_insensitive(store: Any, linear: tuple[FakeLinear, str]) -> None:
    fake, cid = linear
    issue = fake.team_issues(ENG)[0]
    fake.update_issue(issue["id"], labels={"nodes": [{"id": "x", "name": "improvement"}, {"id": "y", "name": "BUG"}]})
    assert run_stream_sync(cid, f"issues:{ENG}", store=store).status == "success"
    assert _issues(store, f"issues:{ENG}")[issue["id"]]["type"] == "bug"


def test_second_sync_writes_nothing_and_k_mutations_change_exactly_k(store: Any, linear: tuple[FakeLinear, str],
                                                                    clock: FakeClock) -> None:
    fake, cid = linear
    stream = f"issues:{ENG}"
    first = run_stream_sync(cid, stream, store=store)
    versions = {k: r["version"] for k, r in _issues(store, stream).items()}

    again = run_stream_sync(cid, stream, store=store)
    assert again.status == "success" and again.counts["synced"] == 0
    assert {k: r["version"] for k, r in _issues(store, stream).items()} == versions
    # Incremental and boundary-safe: updatedAt >= the cursor (the boundary issue comes back unchanged).
    flt = fake.graphql_bodies("Issues")[-1]["variables"]["filter"]
    assert flt["updatedAt"] == {"gte": first.cursor_after.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    assert again.cursor_after == first.cursor_after

    clock.advance(60)
    changed = [i["id"] for i in fake.team_issues(ENG)[1:4]]
    for n, issue_id in enumerate(changed):
        fake.update_issue(issue_id, title=f"Renamed {n}")
    third = run_stream_sync(cid, stream, store=store)
    assert third.status == "success" and third.counts["synced"] == 3
    now = _issues(store, stream)
    assert {k for k, r in now.items() if r["version"] != versions[k]} == set(changed)
    assert {now[k]["name"] for k in changed} == {"Renamed 0", "Renamed 1", "Renamed 2"}
    assert third.cursor_after == max(_stamp(i) for i in fake.team_issues(ENG))

    versions = {k: r["version"] for k, r in now.items()}
    full = run_stream_sync(cid, stream, SyncPlan(sync_mode="full"), store=store)
    assert full.status == "success" and full.counts["synced"] == 0
    assert "updatedAt" not in fake.graphql_bodies("Issues")[-1]["variables"]["filter"]
    assert {k: r["version"] for k, r in _issues(store, stream).items()} == versions
    assert _one(store, "SELECT count(*) FROM issues") == PER_TEAM


def test_an_issue_updated_between_pages_ends_in_its_latest_state(store: Any, linear: tuple[FakeLinear, str]) -> None:
    fake, cid = linear
    first_on_page_one = fake.team_issues(ENG)[0]["id"]
    fake.before_request("/graphql", lambda req: fake.update_issue(first_on_page_one, title="Changed mid-sync"),
                        when=lambda req: bool((req.json() or {}).get("variables", {}).get("after")))
    result = run_stream_sync(cid, f"issues:{ENG}", store=store)
    assert result.status == "success" and result.counts["failed"] == 0
    assert _issues(store, f"issues:{ENG}")[first_on_page_one]["name"] == "Changed mid-sync"
    assert result.cursor_after == _stamp(fake.issues.get(first_on_page_one))
    assert _one(store, "SELECT count(*) FROM issues") == PER_TEAM


def test_archived_issues_are_deleted_and_restored(store: Any, linear: tuple[FakeLinear, str],
                                                 clock: FakeClock) -> None:
    fake, cid = linear
    stream = f"issues:{ENG}"
    run_stream_sync(cid, stream, store=store)
    gone = fake.team_issues(ENG)[2]["id"]
    clock.advance(60)
    fake.archive_issue(gone)
    result = run_stream_sync(cid, stream, store=store)
    assert result.status == "success" and result.counts["deleted"] == 1
    assert _issues(store, stream)[gone]["deleted_at"] is not None
    assert result.cursor_after == _stamp(fake.issues.get(gone))  # the archive moved the cursor
    assert run_stream_sync(cid, stream, store=store).counts["deleted"] == 0  # already deleted: unchanged
    clock.advance(60)
    fake.update_issue(gone, archivedAt=None)
    assert run_stream_sync(cid, stream, store=store).status == "success"
    assert _issues(store, stream)[gone]["deleted_at"] is None


def test_filters_to_date_state_types_and_from_date_are_applied(store: Any, linear: tuple[FakeLinear, str]) -> None:
    fake, cid = linear
    issues = fake.team_issues(ENG)
    from_date = datetime.fromisoformat(issues[1]["createdAt"].replace("Z", "+00:00"))
    to_date = datetime.fromisoformat(issues[5]["createdAt"].replace("Z", "+00:00"))
    # Backlog is in: the first and the last issue (backlog both) are left out by the dates alone.
    filters = {"from_date": from_date.isoformat(), "to_date": to_date.isoformat(),
               "state_types": ["backlog", "unstarted", "started", "completed"]}
    enable_stream(store, cid, f"issues:{ENG}", filters=filters)
    result = run_stream_sync(cid, f"issues:{ENG}", store=store)
    assert result.status == "success", result.error
    assert {issues[0]["state"]["type"], issues[6]["state"]["type"]} == {"backlog"}
    expected = {i["id"] for i in issues[1:6] if i["state"]["type"] in filters["state_types"]}
    assert expected and set(_issues(store, f"issues:{ENG}")) == expected
    assert {i["state"]["type"] for i in issues[1:6] if i["id"] not in expected} == {"canceled", "triage"}
    flt = fake.graphql_bodies("Issues")[-1]["variables"]["filter"]
    assert flt["createdAt"] == {"gte": issues[1]["createdAt"].replace("Z", ".000Z"),
                                "lte": issues[5]["createdAt"].replace("Z", ".000Z")}
    assert flt["state"] == {"type": {"in": ["backlog", "unstarted", "started", "completed"]}}


def test_a_bad_state_type_is_refused_naming_the_field(store: Any, linear: tuple[FakeLinear, str]) -> None:
    from hissuno_airflow.kit import HissunoError

    _fake, cid = linear
    with pytest.raises(HissunoError) as ei:
        enable_stream(store, cid, f"issues:{ENG}", filters={"state_types": ["doing"]})
    assert ei.value.http_status == 400 and "state_types" in str(ei.value)


def test_backfill_window_is_honoured(store: Any, linear: tuple[FakeLinear, str]) -> None:
    fake, cid = linear
    issues = fake.team_issues(ENG)
    since, until = _stamp(issues[2]), _stamp(issues[5])
    result = run_stream_sync(cid, f"issues:{ENG}", SyncPlan.backfill(since, until), store=store)
    assert result.status == "success"
    assert set(_issues(store, f"issues:{ENG}")) == {i["id"] for i in issues[2:5]}
    assert fake.graphql_bodies("Issues")[-1]["variables"]["filter"]["updatedAt"] == {
        "gte": issues[2]["updatedAt"].replace("Z", ".000Z"), "lt": issues[5]["updatedAt"].replace("Z", ".000Z")}
    assert repo.get_stream(store, cid, f"issues:{ENG}").last_sync_at is None


def test_a_429_is_honoured_per_retry_after(store: Any, linear: tuple[FakeLinear, str], clock: FakeClock) -> None:
    fake, cid = linear
    limited = fake.inject_429("/graphql", retry_after=7, json=fakes.RATE_LIMITED,
                              when=lambda r: bool((r.json() or {}).get("variables", {}).get("after")))
    sleeps = len(clock.sleeps)
    result = run_stream_sync(cid, f"issues:{ENG}", store=store)
    assert result.status == "success" and result.counts["synced"] == PER_TEAM and limited.hits == 1
    assert clock.sleeps[sleeps:] == [7.0]
    page2 = [r for r in fake.requests_to("/graphql") if (r.json() or {}).get("variables", {}).get("after")][:2]
    assert page2[1].at - page2[0].at == 7


def test_a_spent_complexity_budget_waits_for_its_reset(store: Any, serve_fake: Any, clock: FakeClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Linear answers HTTP 400 RATELIMITED, no Retry-After; the complexity budget resets on the hour.
    monkeypatch.setattr("hissuno_airflow.plugins.linear.client.PAGE_SIZE", PAGE)
    fake = fakes.serve(monkeypatch, serve_fake, PER_TEAM, clock=clock.time, complexity_limit=20)
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, f"issues:{ENG}")
    clock.advance(T0.timestamp() + 3540 - clock.time())  # 09:59: the window resets in 60 s
    sleeps = len(clock.sleeps)
    result = run_stream_sync(cid, f"issues:{ENG}", store=store)
    assert result.status == "success", result.error
    assert result.counts["synced"] == PER_TEAM and fake.limited >= 1
    assert clock.sleeps[sleeps:][0] == pytest.approx(60, abs=1)
    assert all(r.at >= T0.timestamp() + 3600 for r in fake.requests_to("/graphql")[-2:])


def test_a_listing_failure_fails_the_run_and_keeps_the_cursor(store: Any, linear: tuple[FakeLinear, str],
                                                             clock: FakeClock) -> None:
    fake, cid = linear
    stream = f"issues:{ENG}"
    first = run_stream_sync(cid, stream, store=store)
    clock.advance(60)
    for issue in fake.team_issues(ENG)[:4]:
        fake.update_issue(issue["id"], title=issue["title"] + " (edited)")
    broken = fake.inject("/graphql", 200, times=None, json={"data": None, "errors": [
        {"message": "Query too complex", "extensions": {"type": "invalid input", "code": "INPUT_ERROR"}}]},
        when=lambda r: bool((r.json() or {}).get("variables", {}).get("after")))
    failed = run_stream_sync(cid, stream, store=store)
    assert failed.status == "error" and "query Issues failed: Query too complex" in failed.error
    assert repo.get_stream(store, cid, stream).last_sync_at == first.cursor_after
    fake.faults.remove(broken)
    healed = run_stream_sync(cid, stream, store=store)
    # Read again from the old cursor: the boundary issue and all four edits (page one's are unchanged now).
    assert healed.status == "success" and healed.counts["found"] == 5
    assert failed.counts["synced"] + healed.counts["synced"] == 4
    assert sum("(edited)" in r["name"] for r in _issues(store, stream).values()) == 4


def test_a_record_that_fails_goes_to_ingest_errors_and_the_run_goes_on(store: Any,
                                                                       linear: tuple[FakeLinear, str]) -> None:
    fake, cid = linear
    bad = fake.team_issues(ENG)[3]["id"]
    fake.update_issue(bad, title="   ")
    result = run_stream_sync(cid, f"issues:{ENG}", store=store)
    assert result.status == "success" and result.counts["failed"] == 1 and result.counts["synced"] == PER_TEAM - 1
    assert _one(store, "SELECT count(*) FROM ingest_errors WHERE external_id = %s AND status = 'open'", bad) == 1


def test_a_missing_team_fails_clearly(store: Any, linear: tuple[FakeLinear, str]) -> None:
    fake, cid = linear
    fake.teams = [t for t in fake.teams if t["id"] != DES]
    result = run_stream_sync(cid, f"issues:{DES}", store=store)
    assert result.status == "error" and f"linear team {DES!r} is gone" in result.error


def test_instances_are_the_teams(store: Any, linear: tuple[FakeLinear, str]) -> None:
    _fake, cid = linear
    listed = list_instances(store, cid, "issues")
    assert [(i.id, i.label, i.metadata) for i in listed] == [
        (t["id"], f"{t['name']} ({t['key']})", {"key": t["key"], "name": t["name"]}) for t in TEAMS]


def test_no_token_reaches_the_logs(store: Any, linear: tuple[FakeLinear, str], caplog: Any,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake, cid = linear
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    caplog.set_level(logging.DEBUG)
    fake.inject_429("/graphql", retry_after=1)
    assert run_stream_sync(cid, f"issues:{ENG}", store=store).status == "success"
    creds = load_credentials(store, repo.get_connection(store, cid))
    text = caplog.text
    assert "linear" in text and creds["access_token"] not in text and creds["refresh_token"] not in text


def test_cursor_is_a_provider_time_not_the_clock(store: Any, linear: tuple[FakeLinear, str]) -> None:
    _fake, cid = linear
    result = run_stream_sync(cid, f"issues:{ENG}", store=store)
    assert result.cursor_after is not None and result.cursor_after < T0 + timedelta(minutes=20)


def test_a_budget_spent_to_zero_waits_before_the_next_page_without_a_refusal(
        store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # Team query (2 points) and two pages (7 each) spend exactly 16: the answer to page two says the
    # complexity budget is at 0, so page three waits for its reset instead of being refused.
    monkeypatch.setattr("hissuno_airflow.plugins.linear.client.PAGE_SIZE", PAGE)
    fake = fakes.serve(monkeypatch, serve_fake, PER_TEAM, clock=clock.time, complexity_limit=16)
    cid = fakes.connect(store, fake)
    enable_stream(store, cid, f"issues:{ENG}")
    clock.advance(T0.timestamp() + 3570 - clock.time())  # 09:59:30: the window resets in 30 s
    sleeps = len(clock.sleeps)
    fake.requests_used = fake.complexity_used = 0
    result = run_stream_sync(cid, f"issues:{ENG}", store=store)
    assert result.status == "success", result.error
    assert fake.limited == 0 and clock.sleeps[sleeps:] == [pytest.approx(30, abs=1)]


def test_a_failed_record_is_replayed_by_reading_the_issue_again(store: Any, linear: tuple[FakeLinear, str]) -> None:
    from hissuno_airflow.runtime.replay import replay_failed

    fake, cid = linear
    bad = fake.team_issues(ENG)[3]["id"]
    fake.update_issue(bad, title="   ")
    assert run_stream_sync(cid, f"issues:{ENG}", store=store).counts["failed"] == 1
    fake.update_issue(bad, title="Fixed at Linear")
    replay_failed(cid, all_open=True, store=store)
    assert _issues(store, f"issues:{ENG}")[bad]["name"] == "Fixed at Linear"
    assert _one(store, "SELECT status FROM ingest_errors WHERE external_id = %s", bad) == "resolved"
    assert fake.graphql_bodies("Issues")[-1]["variables"]["filter"] == {"id": {"eq": bad}}
