"""Provider set-ups the fault tests share: each fake started on 127.0.0.1 with paged data, a connection
made through the plugin's own connect, and what the stream should hold in the end.

``CASES[provider](store, monkeypatch, serve_fake, clock)`` returns a ``Case``: the fake and its records,
the connection and stream, the paged listing's route, ways to change and add records, and the external
ids the plugin should hold. ``held(store, case)`` reads what the stream holds (and fails on duplicates).
Pages are small (four records), so a sync of twenty records pages five times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, RecordSet

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


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
    """Id of the record a change moves furthest: the one changed longest ago. First in an oldest-first
    listing (read on page one; a change sends it to the end); last in a newest-first one (PostHog: not
    read yet, and a change moves it onto page one, already read)."""
    rename: Callable[[str, str, float | None], None]
    """Change a record's title; its update time moves on (to the given provider time, when there is one)."""
    add: Callable[[], None]
    """Add one record the plugin should hold."""
    expected: Callable[[], set[str]]
    """External ids the plugin should hold in the end."""
    filters: dict[str, Any] | None = None
    """The stream's filters (HubSpot: let the provider's name overwrite the stored one)."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Record id -> the last title the fake gave it."""
    external_id: Callable[[str], str] = str
    """External id the plugin gives a record (most plugins: the provider's id itself)."""
    also_held: frozenset[str] = frozenset()
    """External ids the stream holds besides one per record (PostHog: its two property-definition tables)."""

    def held_ids(self) -> set[str]:
        """External ids the plugin should hold in the end."""
        return {self.external_id(k) for k in self.expected()} | self.also_held


def _zendesk(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock, count: int = 20) -> Case:
    from tests.fakes import zendesk as fakes

    pace_zendesk(monkeypatch)
    fake, token = fakes.serve(monkeypatch, serve_fake, count, clock.time)
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


def pace_zendesk(monkeypatch: pytest.MonkeyPatch) -> None:
    from hissuno_airflow.kit.http import RateBudget

    # The export's 10-a-minute pacing would sleep for real; pace on a clock of its own.
    pace = FakeClock(T0.timestamp())
    budget = RateBudget(10, burst=1, clock=pace.time, sleep=pace.sleep)
    monkeypatch.setattr("hissuno_airflow.plugins.zendesk.plugin.export_budget", lambda: budget)


def _intercom(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock, count: int = 20) -> Case:
    from tests.fakes import intercom as fakes

    fake, token = fakes.serve(monkeypatch, serve_fake, count, clock=clock.time, max_per_page=4)
    cid = fakes.connect(store, token)
    rs = fake.conversations
    return Case(fake, rs, cid, "conversations", "sessions", "/conversations/search",
                lambda r: bool(((r.json() or {}).get("pagination") or {}).get("starting_after")),
                lambda: min(rs.records, key=lambda k: (rs.stamps[k], k)),
                lambda i, title, at: rs.update(i, at=at, title=title) and None,
                lambda: fake.add_conversations(1) and None,
                lambda: set(rs.records))


def _hubspot(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock, count: int = 20) -> Case:
    from tests.fakes import hubspot as fakes

    monkeypatch.setattr("hissuno_airflow.plugins.hubspot.client.SEARCH_PAGE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, 0, 0, clock.time)
    rs = fake.objects["companies"]

    def add() -> None:
        fake.add_companies(1, domain=f"company{len(rs) + 1}.example")  # each with a domain: each one is held

    for _ in range(count):
        add()
    cid = fakes.connect(store, fake)
    return Case(fake, rs, cid, "companies", "companies", "/crm/v3/objects/companies/search",
                lambda r: bool((r.json() or {}).get("filterGroups")),  # a page after the first: a new window
                lambda: min(rs.records, key=lambda k: (rs.stamps[k], k)),
                lambda i, title, at: fake._stamp("companies", rs.update(
                    i, at=at, properties={**rs.records[i]["properties"], "name": title})) and None, add,
                lambda: set(rs.records), filters={"overwrite_policy": "hubspot_wins"})


def _linear(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock, count: int = 20) -> Case:
    from tests.fakes import linear as fakes
    from tests.fakes.linear import TEAMS

    team = TEAMS[0]["id"]
    monkeypatch.setattr("hissuno_airflow.plugins.linear.client.PAGE_SIZE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, count, clock=clock.time)
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


def _jira(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock, count: int = 20) -> Case:
    from tests.fakes import jira as fakes

    monkeypatch.setattr("hissuno_airflow.plugins.jira.client.PAGE_SIZE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, count, clock=clock.time)
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


def _github(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock, count: int = 20) -> Case:
    from tests.fakes import github as fakes

    monkeypatch.setattr("hissuno_airflow.plugins.github.client.PER_PAGE", 4)
    fake = fakes.serve(monkeypatch, serve_fake, clock.time)
    for _ in range(count):
        fake.add_issue("acme/api")
    cid = fakes.install(store)
    rs = fake.issues["acme/api"]

    return Case(fake, rs, cid, "feedback:acme/api", "sessions", "/repos/{o}/{r}/issues",
                lambda r: "since" in r.query,  # each page after the first is a window from the last update
                lambda: min(rs.records, key=lambda k: (rs.stamps[k], int(k))),
                lambda i, title, at: rs.update(i, at=at, title=title) and None,
                lambda: fake.add_issue("acme/api") and None,
                lambda: set(rs.records))


def _posthog(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: FakeClock, count: int = 20) -> Case:
    from tests.fakes import posthog as fakes

    monkeypatch.setattr("hissuno_airflow.plugins.posthog.client.PAGE_SIZE", 4)
    fake, key = fakes.serve(monkeypatch, serve_fake, 0, count, clock=clock.time)
    # Most recently changed first (PostHog does not document the order): a change lands on page one.
    fake.newest_first = True
    cid = fakes.connect(store, key)
    rs = fake.event_definitions
    return Case(fake, rs, cid, "analytics", "knowledge_sources", "/api/projects/{pid}/event_definitions/",
                lambda r: r.query.get("offset") not in (None, "0"),
                lambda: min(rs.records, key=lambda k: (rs.stamps[k], k)),
                lambda i, title, at: rs.update(i, at=at, name=title) and None,
                lambda: fake.add_definitions(1) and None, lambda: set(rs.records),
                external_id=lambda i: f"event:{i}", also_held=frozenset({"properties:event", "properties:person"}))


CASES: dict[str, Callable[..., Case]] = {
    "zendesk": _zendesk, "intercom": _intercom, "hubspot": _hubspot, "linear": _linear, "jira": _jira,
    "github": _github, "posthog": _posthog,
}


def held(store: Any, case: Case) -> dict[str, list[str]]:
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
