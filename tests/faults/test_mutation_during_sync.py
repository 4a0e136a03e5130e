"""Fault: the provider's data changes while a sync pages through it.

For each provider, the fake updates a record the run has already read (it jumps to the end of an
ascending update-time listing, so everything after it shifts one place) and adds a new record, before
every page after the first. The run finishes; then an incremental run starts from the cursor the first
one left. Afterwards the store holds exactly the provider's final state: every record the fake says the
plugin should hold, once, with its latest content, and nothing else. A listing that pages by offset
loses the record that shifted across a page boundary, and a cursor past it never comes back for it:
this is the test that notices.

Real HTTP on 127.0.0.1 through ``run_stream_sync``; every retry waits on the fake's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, RecordSet
from tests.fixtures.fakes import retries_on

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MUTATIONS = 4
"""Pages after the first that each see one update and one addition."""


@dataclass
class Case:
    """One provider's sync under mutation."""

    fake: FakeProvider
    records: RecordSet
    """The fake's records behind the stream (their provider update times)."""
    cid: str
    stream: str
    table: str
    """Entity table of the stream's records (``sessions``, ``issues``, ``companies``)."""
    listing: str
    """Route of the paged listing."""
    later_page: Callable[[FakeRequest], bool]
    """Whether a listing request asks for a page after the first."""
    oldest: Callable[[], str]
    """Id of the record first in the listing (read on page one, whatever happened since)."""
    rename: Callable[[str, str, float | None], None]
    """Change a record's title; its update time moves on (to the given provider time, when there is one)."""
    add: Callable[[], None]
    """Add one record the plugin should hold."""
    expected: Callable[[], set[str]]
    """External ids the plugin should hold in the end."""
    filters: dict[str, Any] | None = None
    """The stream's filters (HubSpot: let the provider's name overwrite the stored one)."""
    renamed: dict[str, str] = field(default_factory=dict)
    """External id -> the last title the fake gave it."""


def _zendesk(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock) -> Case:
    from tests.fakes import zendesk as fakes

    _pace_zendesk(monkeypatch)
    fake, token = fakes.serve(monkeypatch, serve_fake, 20, clock.time)
    fake.max_export_page = 4
    clock.advance(3600)
    cid = fakes.connect(store, token)

    def oldest() -> str:
        return str(min(fake.ingested_tickets(), key=lambda t: fake.tickets.stamps[str(t["id"])])["id"])

    return Case(fake, fake.tickets, cid, "tickets", "sessions", "/api/v2/incremental/tickets/cursor.json",
                lambda r: "cursor" in r.query, oldest,
                lambda i, title, at: fake.tickets.update(i, at=at, subject=title) and None,
                lambda: fake.add_tickets(1, status="solved") and None,
                lambda: {str(t["id"]) for t in fake.ingested_tickets()})


def _pace_zendesk(monkeypatch: pytest.MonkeyPatch) -> None:
    from hissuno_airflow.kit.http import RateBudget

    # The export's 10-a-minute pacing would sleep for real; pace on a clock of its own.
    pace = FakeClock(T0.timestamp())
    budgets: dict[str, RateBudget] = {}
    monkeypatch.setattr("hissuno_airflow.plugins.zendesk.plugin.export_budget", lambda cid: budgets.setdefault(
        cid, RateBudget(10, burst=1, clock=pace.time, sleep=pace.sleep)))


def _intercom(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock) -> Case:
    from tests.fakes import intercom as fakes

    fake, token = fakes.serve(monkeypatch, serve_fake, 20, clock=clock.time, max_per_page=4)
    cid = fakes.connect(store, token)
    rs = fake.conversations
    return Case(fake, rs, cid, "conversations", "sessions", "/conversations/search",
                lambda r: bool(((r.json() or {}).get("pagination") or {}).get("starting_after")),
                lambda: min(rs.records, key=lambda k: (rs.stamps[k], k)),
                lambda i, title, at: rs.update(i, at=at, title=title) and None,
                lambda: fake.add_conversations(1) and None,
                lambda: set(rs.records))


def _hubspot(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock) -> Case:
    from tests.fakes import hubspot as fakes

    monkeypatch.setattr("hissuno_airflow.plugins.hubspot.client.SEARCH_PAGE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, 0, 0, clock.time)
    rs = fake.objects["companies"]

    def add() -> None:
        fake.add_companies(1, domain=f"company{len(rs) + 1}.example")  # each with a domain: each one is held

    for _ in range(20):
        add()
    cid = fakes.connect(store, fake)
    return Case(fake, rs, cid, "companies", "companies", "/crm/v3/objects/companies/search",
                lambda r: bool((r.json() or {}).get("filterGroups")),  # a page after the first: a new window
                lambda: min(rs.records, key=lambda k: (rs.stamps[k], k)),
                lambda i, title, at: fake._stamp("companies", rs.update(
                    i, at=at, properties={**rs.records[i]["properties"], "name": title})) and None, add,
                lambda: set(rs.records), filters={"overwrite_policy": "hubspot_wins"})


def _linear(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock) -> Case:
    from tests.fakes import linear as fakes
    from tests.fakes.linear import TEAMS

    team = TEAMS[0]["id"]
    monkeypatch.setattr("hissuno_airflow.plugins.linear.client.PAGE_SIZE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, 20, clock=clock.time)
    clock.advance(3600)
    cid = fakes.connect(store, fake)
    rs = fake.issues

    def oldest() -> str:
        return min((i["id"] for i in fake.team_issues(team)), key=lambda k: (rs.stamps[k], k))

    return Case(fake, rs, cid, f"issues:{team}", "issues", "/graphql",
                lambda r: bool(((r.json() or {}).get("variables") or {}).get("after")), oldest,
                lambda i, title, at: rs.update(i, at=at, title=title) and None,
                lambda: fake.add_issues(team, 1) and None,
                lambda: {i["id"] for i in fake.team_issues(team)})


def _jira(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock) -> Case:
    from tests.fakes import jira as fakes

    monkeypatch.setattr("hissuno_airflow.plugins.jira.client.PAGE_SIZE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, 20, clock=clock.time)
    clock.advance(3600)
    cid = fakes.connect(store, fake)
    rs = fake.issues[fakes.SITE_A["id"]]

    def eng() -> list[str]:
        return [str(r["id"]) for r in fake.project_issues(fakes.SITE_A["id"], "ENG")]

    return Case(fake, rs, cid, fakes.ENG_A, "issues", fakes.API + "/search/jql",
                lambda r: bool(r.query.get("nextPageToken")),
                lambda: min(eng(), key=lambda k: (rs.stamps[k], k)),
                lambda i, title, at: rs.update(i, at=at, summary=title) and None,
                lambda: fake.add_issues(1) and None, lambda: set(eng()))


def _github(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock) -> Case:
    from tests.fakes import github as fakes

    monkeypatch.setattr("hissuno_airflow.plugins.github.client.PER_PAGE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, clock.time)
    for _ in range(20):
        fake.add_issue("acme/api")
    cid = fakes.install(store)
    rs = fake.issues["acme/api"]

    return Case(fake, rs, cid, "feedback:acme/api", "sessions", "/repos/{o}/{r}/issues",
                lambda r: "since" in r.query,  # each page after the first is a window from the last update
                lambda: min(rs.records, key=lambda k: (rs.stamps[k], int(k))),
                lambda i, title, at: rs.update(i, at=at, title=title) and None,
                lambda: fake.add_issue("acme/api") and None,
                lambda: set(rs.records))


CASES: dict[str, Callable[..., Case]] = {
    "zendesk": _zendesk, "intercom": _intercom, "hubspot": _hubspot, "linear": _linear, "jira": _jira,
    "github": _github,
}


def _held(store: Any, case: Case) -> dict[str, list[str]]:
    """External id -> names of the live entities the stream's synced records point at."""
    with store.connection() as c:
        rows = c.execute(f"SELECT r.external_id, e.name FROM integration_synced_records r JOIN {case.table} e"
                         " ON e.id = r.hissuno_id WHERE r.connection_id = %s AND r.stream_id = %s"
                         " AND r.deleted_at IS NULL AND e.deleted_at IS NULL", (case.cid, case.stream)).fetchall()
        live = c.execute(f"SELECT count(*) AS n FROM {case.table} WHERE deleted_at IS NULL").fetchone()["n"]
    held: dict[str, list[str]] = {}
    for r in rows:
        held.setdefault(r["external_id"], []).append(r["name"])
    assert live == len(rows), f"{live} live {case.table} rows for {len(rows)} synced records: duplicates"
    return held


@pytest.mark.parametrize("provider", sorted(CASES))
def test_changes_during_a_sync_are_all_picked_up_by_the_next_incremental_run(
    provider: str, store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    case = CASES[provider](store, monkeypatch, serve_fake, clock)
    enable_stream(store, case.cid, case.stream, filters=case.filters)

    def mutate(req: FakeRequest) -> None:
        # The record read first moves to the end of the listing; everything behind it shifts one place.
        target = case.oldest()
        title = f"Mutated {len(case.renamed) + 1} ({provider})"
        case.rename(target, title, None)
        case.renamed[target] = title
        case.add()

    hook = case.fake.before_request(case.listing, mutate, times=MUTATIONS, when=case.later_page)
    first = run_stream_sync(case.cid, case.stream, store=store)
    assert first.status == "success", first.error
    assert hook.runs == MUTATIONS, f"the listing had {hook.runs + 1} pages; the test wants more than {MUTATIONS}"
    case.fake.hooks.remove(hook)

    clock.advance(3600)  # past any "changes of the last minute are not listed yet" delay
    second = run_stream_sync(case.cid, case.stream, store=store)
    assert second.status == "success", second.error

    held = _held(store, case)
    expected = case.expected()
    assert set(held) == expected, (f"missing {sorted(expected - set(held))}, unexpected {sorted(set(held) - expected)}")
    assert all(len(names) == 1 for names in held.values())
    stale = {k: (held[k][0], title) for k, title in case.renamed.items() if title not in held[k][0]}
    assert not stale, f"records holding an old title (held, latest): {stale}"

    again = run_stream_sync(case.cid, case.stream, store=store)
    assert again.status == "success" and again.counts["synced"] == 0, again.counts
    assert _held(store, case) == held


@pytest.mark.parametrize("provider", sorted(CASES))
def test_a_change_stamped_at_the_cursor_itself_is_not_lost(
    provider: str, store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Providers stamp in whole seconds (or minutes): a record can change in the very instant of the newest
    one a run read, after the run read it. The cursor is that instant, so the next run must read it again
    (inclusive) and tell the changed record from the ones it already holds."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    case = CASES[provider](store, monkeypatch, serve_fake, clock)
    enable_stream(store, case.cid, case.stream, filters=case.filters)
    first = run_stream_sync(case.cid, case.stream, store=store)
    assert first.status == "success" and first.cursor_after is not None, first.error

    rs = case.records
    newest = max(case.expected(), key=lambda k: (rs.stamps[k], k))
    target = case.oldest()
    assert target != newest
    title = f"Changed at the cursor ({provider})"
    case.rename(target, title, rs.stamps[newest])
    assert rs.stamps[target] == rs.stamps[newest]
    clock.advance(3600)
    second = run_stream_sync(case.cid, case.stream, store=store)

    assert second.status == "success", second.error
    held = _held(store, case)
    assert set(held) == case.expected()
    assert title in held[target][0], f"{target} still holds {held[target][0]!r} after a change at the cursor"
    assert second.counts["synced"] == 1, second.counts

