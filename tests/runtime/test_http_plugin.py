"""End to end: a plugin written with the kit alone talks HTTP through the runtime, with nothing of its own.

The ``ticketdesk`` plugin below declares ``base_urls={"API": ...}``, connects with an API token, and
syncs through ``ctx.http_client("API", auth=BearerAuth(...), retry=RetryPolicy(...))`` plus a kit
paginator. ``HISSUNO_TICKETDESK_API_URL`` points it at a stateful fake on 127.0.0.1 that pages
tickets, demands the bearer token, rate-limits page 2 once (429 + Retry-After) and fails once with
503. Runs go through ``run_stream_sync`` into the real store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthCtx,
    AuthResult,
    Field,
    Icon,
    PluginDef,
    ProviderAuthError,
    Stream,
    SyncCtx,
    define_plugin,
)
from hissuno_airflow.kit.http import BearerAuth, CursorPaginator, RetryPolicy
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, Reply, get

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
PAGE_SIZE = 5
TOKEN = "tdk_live_7f3a9c21e5b84d06a1c2"
RETRY_AFTER = 7


class TicketDesk(FakeProvider):
    """Tickets ordered by update time; ``?updated_since=&cursor=&limit=``; ``next_cursor`` until the end."""

    name = "ticketdesk"
    require_auth = True

    def __init__(self, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tickets: list[dict[str, Any]] = []
        self.add_tickets(count)

    def add_tickets(self, n: int) -> None:
        start = len(self.tickets)
        for i in range(start, start + n):
            self.tickets.append({"id": f"T-{i + 1}", "title": f"Printer on floor {i % 7} jams",
                                 "body": f"Ticket {i + 1}: the printer jams on every second page.",
                                 "updated_at": (T0 + timedelta(minutes=i)).isoformat()})

    @get("/api/me")
    def me(self, req: FakeRequest) -> Reply:
        return {"account": {"id": "acct-42", "name": "Acme Support"}}

    @get("/api/tickets")
    def list_tickets(self, req: FakeRequest) -> Reply:
        since = req.query.get("updated_since")
        floor = datetime.fromisoformat(since) if since else None
        rows = [t for t in self.tickets if floor is None or datetime.fromisoformat(t["updated_at"]) > floor]
        offset = int(req.query.get("cursor") or 0)
        limit = int(req.query.get("limit") or 50)
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        return {"tickets": page, "next_cursor": str(offset + limit) if more else None}

    def ticket_requests(self, cursor: str | None) -> list[FakeRequest]:
        """Requests for the page at ``cursor`` (None: the first page)."""
        return [r for r in self.requests_to("/api/tickets") if r.query.get("cursor") == cursor]


def _define(clock: FakeClock) -> PluginDef:
    def test_credentials(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
        with ctx.http_client("API", auth=BearerAuth(credentials["api_token"])) as client:
            account = client.get_json("/api/me")["account"]
        return AuthResult(external_account_id=account["id"], account_label=account["name"],
                          credentials=credentials)

    def sync_tickets(ctx: SyncCtx) -> None:
        # The fake clock stands in for time.sleep, so the test records waits instead of taking them.
        retry = RetryPolicy(sleep=clock.sleep, clock=clock.time, jitter=lambda: 0.0)
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        since = ctx.since()
        if since is not None:
            params["updated_since"] = since.isoformat()
        with ctx.http_client("API", auth=BearerAuth(ctx.credentials["api_token"]), retry=retry) as client:
            for ticket in client.paginate("GET", "/api/tickets", CursorPaginator("next_cursor", "cursor"),
                                          params=params, data_path="tickets"):
                ctx.progress("found", external_id=ticket["id"])
                ctx.ingest.issue(external_id=ticket["id"], name=ticket["title"], description=ticket["body"],
                                 type="bug", updated_at=ticket["updated_at"])

    return define_plugin(
        id="ticketdesk", name="TicketDesk", description="Tickets from a help desk.", category="issues",
        icon=Icon(), base_urls={"API": "https://api.ticketdesk.invalid"},
        auth=ApiKeyAuth(fields=(Field(id="api_token", label="API token", secret=True, required=True),),
                        test=test_credentials),
        streams={"tickets": Stream(kind="issues", label="Tickets", sync=sync_tickets)},
    )


@pytest.fixture
def desk(store: Any, serve_fake: Any, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
         ) -> Iterator[tuple[TicketDesk, str]]:
    """The fake desk with 23 tickets, the plugin registered and pointed at it, and a connection."""
    fake = serve_fake(TicketDesk(23, clock=fake_clock.time))
    fake.issue_token(TOKEN)
    monkeypatch.setenv("HISSUNO_TICKETDESK_API_URL", fake.url)
    # Per-request debug lines too, so the token check covers every line the HTTP layer can write.
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    registry.register(_define(fake_clock))
    try:
        out = connect_api_key(registry.get_plugin("ticketdesk"), store, project_id=settings.default_project_id(),
                              user_id="tester", credentials={"api_token": TOKEN})
        enable_stream(store, out["connection_id"], "tickets")
        yield fake, out["connection_id"]
    finally:
        registry.unregister("ticketdesk")


def _one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return next(iter(row.values()))


def test_sync_pages_retries_and_ingests_every_ticket_once(store: Any, desk: tuple[TicketDesk, str],
                                                          fake_clock: FakeClock, caplog: Any) -> None:
    fake, cid = desk
    assert fake.count("/api/me") == 1 and fake.requests_to("/api/me")[0].bearer_token == TOKEN
    limited = fake.inject_429("/api/tickets", retry_after=RETRY_AFTER,
                              when=lambda r: r.query.get("cursor") == str(PAGE_SIZE))
    unavailable = fake.inject_5xx("/api/tickets", when=lambda r: r.query.get("cursor") == str(3 * PAGE_SIZE))
    events: list[str] = []
    caplog.set_level(logging.DEBUG)

    result = run_stream_sync(cid, "tickets", store=store,
                             on_progress=lambda e, counts: events.append(e.model_dump_json()))

    assert result.status == "success", result.error
    assert result.counts["synced"] == 23 and result.counts["failed"] == 0
    assert _one(store, "SELECT count(*) FROM issues") == 23
    assert _one(store, "SELECT count(DISTINCT external_id) FROM integration_synced_records"
                       " WHERE connection_id = %s", cid) == 23
    assert result.cursor_after == T0 + timedelta(minutes=22)
    assert repo.get_stream(store, cid, "tickets").last_sync_at == result.cursor_after

    # Five pages, page 2 asked twice (429 then 200) and page 4 twice (503 then 200); every one signed.
    ticket_requests = fake.requests_to("/api/tickets")
    assert len(ticket_requests) == 7 and limited.hits == 1 and unavailable.hits == 1
    assert all(r.bearer_token == TOKEN for r in ticket_requests)
    page2 = fake.ticket_requests(str(PAGE_SIZE))
    assert len(page2) == 2 and page2[1].at - page2[0].at == RETRY_AFTER
    assert len(fake.ticket_requests(str(3 * PAGE_SIZE))) == 2
    # Retry-After honoured exactly; the 503 waits the first backoff step (0.5s nominal, jitter 0 -> half).
    assert fake_clock.sleeps == [RETRY_AFTER, 0.25]

    assert "attempt 1/5, retrying in 7s" in caplog.text and "/api/tickets" in caplog.text
    with store.connection() as c:
        run = c.execute("SELECT error_message, counts::text AS counts FROM integration_sync_runs"
                        " WHERE id = %s", (result.run_id,)).fetchone()
    for text in (caplog.text, *events, str(result.to_json()), str(run)):
        assert TOKEN not in text


def test_a_401_fails_the_run_with_provider_auth_error_and_keeps_the_cursor(
    store: Any, desk: tuple[TicketDesk, str], fake_clock: FakeClock, caplog: Any
) -> None:
    fake, cid = desk
    first = run_stream_sync(cid, "tickets", store=store)
    assert first.status == "success"
    cursor = repo.get_stream(store, cid, "tickets").last_sync_at

    fake.add_tickets(8)
    # The token is revoked after the first page of the next run: records of page 1 land, then 401.
    refused = fake.inject("/api/tickets", 401, json={"error": "invalid_auth"},
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                          when=lambda r: r.query.get("cursor") == str(PAGE_SIZE) and "updated_since" in r.query)
    caplog.set_level(logging.DEBUG)
    failed = run_stream_sync(cid, "tickets", store=store)

    assert failed.status == "error" and failed.error_code == ProviderAuthError.code and not failed.retriable
    assert failed.error == "ticketdesk GET /api/tickets: 401 Unauthorized"
    incremental_page2 = [r for r in fake.ticket_requests(str(PAGE_SIZE)) if "updated_since" in r.query]
    assert refused.hits == 1 and len(incremental_page2) == 1, "a 401 is not retried"
    assert fake_clock.sleeps == []
    stream = repo.get_stream(store, cid, "tickets")
    assert stream.last_sync_at == cursor and stream.last_sync_status == "error"
    assert stream.last_sync_error == failed.error
    assert _one(store, "SELECT count(*) FROM issues") == 23 + PAGE_SIZE, "page 1 stays ingested"
    assert TOKEN not in caplog.text and TOKEN not in (stream.last_sync_error or "")

    recovered = run_stream_sync(cid, "tickets", store=store)
    assert recovered.status == "success" and recovered.counts["synced"] == 3
    assert _one(store, "SELECT count(*) FROM issues") == 31
    assert recovered.cursor_after == T0 + timedelta(minutes=30)


def test_a_declared_rate_limit_paces_every_client_of_the_connection(store: Any, desk: tuple[TicketDesk, str]) -> None:
    from hissuno_airflow.runtime.services import budget_for

    fake, cid = desk
    declared = registry.get_plugin("ticketdesk").model_copy(update={"rate_limit_per_minute": 240,
                                                                      "rate_limit_burst": 1})
    registry.unregister("ticketdesk")
    registry.register(declared)
    budget = budget_for(declared, cid)
    assert budget is not None and budget is budget_for(declared, cid)
    assert budget_for(declared, "another-connection") is not budget
    assert budget_for(registry.get_plugin("sample"), cid) is None

    started = time.monotonic()
    result = run_stream_sync(cid, "tickets", store=store)
    elapsed = time.monotonic() - started
    assert result.status == "success" and result.counts["synced"] == 23, result.error
    # Five pages at 4 requests/second with no burst: at least four quarter-second waits between them.
    assert len(fake.requests_to("/api/tickets")) == 5 and elapsed >= 1.0
