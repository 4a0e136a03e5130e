"""A stateful fake of TicketDesk, the provider of the worked example (``docs/examples/ticketdesk``).

Routes, every one behind a bearer token (``issue_token``):

- ``GET /api/me``: the account the token belongs to;
- ``GET /api/tickets?updated_since=&cursor=&limit=``: tickets updated strictly after ``updated_since``,
  oldest update first, ``next_cursor`` (an offset) until the last page, then ``null``.

Tickets are a ``RecordSet`` on the fake's clock, one minute apart (``add_tickets``, ``tickets.update``,
``tickets.delete``). ``event(type, ticket_id)`` builds the body of a TicketDesk webhook; ``Signer``
from ``tests.fakes.webhooks`` signs it the way TicketDesk does (Standard Webhooks). Faults (429, 5xx,
401) come from the shared base: ``inject_429``, ``inject_5xx``, ``inject``, ``rate_limit``.

The module also defines the conformance factories of ``tests/plugins/test_conformance.py``
(``conformance``, ``auth_target``, ``webhook_target``); they need the ``ticketdesk`` plugin registered,
which ``tests/plugins/test_ticketdesk.py`` does for its tests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from hissuno_airflow.store import connections as repo
from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, RecordSet, Reply, get
from tests.fakes.webhooks import Signer

ACCOUNT = {"id": "acct-42", "name": "Acme Support"}


class TicketDesk(FakeProvider):
    """Tickets ordered by update time; ``?updated_since=&cursor=&limit=``; ``next_cursor`` until the end."""

    name = "ticketdesk"
    require_auth = True

    def __init__(self, count: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # One minute between stamps: ticket n is updated n - 1 minutes after the clock's start.
        self.tickets = RecordSet(self.clock, resolution=60)
        self.add_tickets(count)

    def add_tickets(self, n: int) -> list[dict[str, Any]]:
        """Append ``n`` tickets (``T-<n>``), each a minute newer than the last."""
        start = len(self.tickets) + len(self.tickets.deleted)
        return [
            self.tickets.add(id=f"T-{i + 1}", title=f"Printer on floor {i % 7} jams",
                             body=f"Ticket {i + 1}: the printer jams on every second page.")
            for i in range(start, start + n)
        ]

    @get("/api/me")
    def me(self, req: FakeRequest) -> Reply:
        return {"account": ACCOUNT}

    @get("/api/tickets")
    def list_tickets(self, req: FakeRequest) -> Reply:
        since = req.query.get("updated_since")
        rows = self.tickets.by_updated(datetime.fromisoformat(since).timestamp() if since else None)
        offset = int(req.query.get("cursor") or 0)
        limit = int(req.query.get("limit") or 50)
        more = offset + limit < len(rows)
        return {"tickets": rows[offset : offset + limit], "next_cursor": str(offset + limit) if more else None}

    def ticket_requests(self, cursor: str | None) -> list[FakeRequest]:
        """Requests for the page at ``cursor`` (None: the first page)."""
        return [r for r in self.requests_to("/api/tickets") if r.query.get("cursor") == cursor]

    def event(self, type: str, ticket_id: str) -> dict[str, Any]:
        """A webhook body: ``ticket.updated`` carries the ticket, ``ticket.deleted`` only its id."""
        ticket = self.tickets.get(ticket_id)
        return {"type": type, "ticket": dict(ticket) if ticket is not None and type != "ticket.deleted"
                else {"id": ticket_id}}


# -- conformance factories (see tests/plugins/test_conformance.py) -----------------------------------


def _serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, count: int) -> tuple[TicketDesk, str]:
    fake = serve_fake(TicketDesk(count, clock=FakeClock().time))
    monkeypatch.setenv("HISSUNO_TICKETDESK_API_URL", fake.url)
    return fake, fake.issue_token()


def _connect(store: Any, token: str) -> str:
    from hissuno_airflow.runtime.connect import connect_api_key

    out = connect_api_key(registry.get_plugin("ticketdesk"), store, project_id=settings.default_project_id(),
                          user_id="tester", credentials={"api_token": token})
    return str(out["connection_id"])


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Twelve tickets (three pages), connected through the plugin's own auth test."""
    _fake, token = _serve(monkeypatch, serve_fake, 12)
    return ConformanceTarget(connection_id=_connect(store, token), stream_ids=("tickets",))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A token the fake issued, and one it revoked."""
    fake, token = _serve(monkeypatch, serve_fake, 1)
    revoked = fake.issue_token()
    fake.revoke_token(revoked)
    return AuthTarget(good={"api_token": token}, bad={"api_token": revoked})


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """A connection whose ``webhook_secret`` is the signer's; payloads are ``ticket.updated`` events."""
    from hissuno_airflow.kit.signatures import StandardWebhooks

    fake, token = _serve(monkeypatch, serve_fake, 1)
    cid = _connect(store, token)
    signer = Signer(StandardWebhooks())
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})

    def payload(event_id: str) -> dict[str, Any]:
        return {"type": "ticket.updated", "ticket": {**fake.tickets[0], "id": f"T-{event_id}"}}

    return WebhookTarget(sign=signer, forge=signer.forged(), connection_id=cid, payload=payload)
