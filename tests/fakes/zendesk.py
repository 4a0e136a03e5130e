"""A stateful fake of Zendesk Support (providers.md §6), served on 127.0.0.1.

Routes, every one behind HTTP Basic ``{email}/token:{api_token}`` (``add_token``, ``revoke``):

- ``GET /api/v2/users/me.json``: the token's user (or, with ``anonymous_on_bad_auth``, an anonymous user
  with ``id: null`` instead of a 401, the other answer providers.md allows);
- ``GET /api/v2/incremental/tickets/cursor.json``: ``start_time`` (unix seconds, at least a minute old,
  else 400) on the first call, ``cursor`` alone after; tickets with ``generated_timestamp >= start_time``
  and older than a minute, ordered by ``(generated_timestamp, id)``; ``after_cursor`` encodes the last
  position, ``end_of_stream`` is true on the page that reaches the present; deleted tickets appear with
  ``status: "deleted"``. ``export_limit`` (per minute of the fake clock) answers 429 + Retry-After;
- ``GET /api/v2/tickets/{id}.json`` (404 once deleted), ``GET /api/v2/tickets/{id}/comments.json``
  (``page[size]`` at most 100, ``page[after]``; ``meta.has_more``/``meta.after_cursor``, ``links.next``),
  ``GET /api/v2/users/{id}.json``, ``GET /api/v2/organizations/{id}.json``.

Every answer carries ``X-Rate-Limit``/``X-Rate-Limit-Remaining``. Tickets are a ``RecordSet`` on the fake's
clock (``generated_timestamp`` follows ``updated_at``); ``solve``, ``update_ticket``, ``add_comment`` and
``delete_ticket`` mutate them. ``event(kind, ticket_id)`` builds a ``zen:event-type:ticket.*`` webhook
body, which ``Signer(ZendeskSignature())`` signs as Zendesk does. The conformance factories of
``tests/plugins/test_conformance.py`` are at the end.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from hissuno_airflow.store import connections as repo
from tests.fakes.server import (
    FakeClock,
    FakeProvider,
    FakeRequest,
    FakeResponse,
    RecordSet,
    Reply,
    get,
    iso_z,
)
from tests.fakes.webhooks import Signer

SUBDOMAIN = "acme"
ADMIN = {"id": 900, "name": "Ada Admin", "email": "ada@acme-support.com", "role": "admin", "active": True,
         "time_zone": "Europe/Paris", "locale": "en-US", "organization_id": None}
AGENT = {"id": 901, "name": "Gus Agent", "email": "gus@acme-support.com", "role": "agent", "active": True}
ORGS = [
    {"id": 70, "name": "Globex", "domain_names": ["globex.com"], "notes": "Enterprise plan"},
    {"id": 71, "name": "Initech", "domain_names": ["initech.io", "initech.com"], "notes": ""},
    {"id": 72, "name": "Umbrella Holdings", "domain_names": [], "notes": ""},
]
REQUESTERS = [
    {"id": 501, "name": "Gina Globex", "email": "gina@globex.com", "phone": "+1 555 0101", "organization_id": 70},
    {"id": 502, "name": "Hank Globex", "email": "hank@globex.com", "phone": None, "organization_id": 70},
    {"id": 503, "name": "Ivy Initech", "email": "ivy@initech.io", "phone": None, "organization_id": 71},
    {"id": 504, "name": "Uma Umbrella", "email": "uma@umbrella.example", "phone": None, "organization_id": 72},
    {"id": 505, "name": "Solo Sam", "email": "sam@gmail.com", "phone": "+44 20 7946 0000", "organization_id": None},
    {"id": 506, "name": "Phone Only", "email": None, "phone": "+1 555 0199", "organization_id": None},
]
STATUSES = ("solved", "closed", "open", "solved", "pending", "closed", "solved", "hold")
"""Ticket n gets STATUSES[n % 8]: five of every eight are ingested."""
INGESTED = frozenset({"solved", "closed"})


def _encode(*parts: Any) -> str:
    return base64.urlsafe_b64encode(":".join(str(p) for p in parts).encode()).decode()


def _decode(cursor: str) -> list[str]:
    return base64.urlsafe_b64decode(cursor.encode()).decode().split(":")


class FakeZendesk(FakeProvider):
    """Zendesk Support with tickets, comments, users and organizations; see the module docstring."""

    name = "zendesk"
    max_export_page = 1000
    export_limit: int | None = None
    """Export requests allowed per minute of the fake clock (None: unlimited)."""
    anonymous_on_bad_auth = False

    def __init__(self, count: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokens_by_email: dict[str, str] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.orgs: dict[str, dict[str, Any]] = {str(o["id"]): dict(o) for o in ORGS}
        for user in (ADMIN, AGENT, *REQUESTERS):
            self.add_user(dict(user))
        self.tickets = RecordSet(self.clock, resolution=60)
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self._comment_id = 10_000
        self.add_tickets(count)

    # -- data ----------------------------------------------------------------------------------------

    def add_user(self, user: dict[str, Any]) -> dict[str, Any]:
        """Add (or replace) a user; end users unless a role is given."""
        user.setdefault("role", "end-user")
        user.setdefault("tags", ["vip"] if user["id"] == 501 else [])
        user.setdefault("time_zone", "America/New_York")
        self.users[str(user["id"])] = user
        return user

    def add_tickets(self, n: int, status: str | None = None) -> list[dict[str, Any]]:
        """Append ``n`` tickets (ids 1, 2, ...), a minute apart, each with three comments (one internal)."""
        start = len(self.tickets)
        out = []
        for i in range(start, start + n):
            requester = REQUESTERS[i % len(REQUESTERS)]
            ticket = self.tickets.add(
                id=i + 1, subject=f"Export to CSV fails #{i + 1}", description=f"Ticket {i + 1} body",
                status=status or STATUSES[i % len(STATUSES)], priority=("high", "normal", None)[i % 3],
                type="incident", requester_id=requester["id"], submitter_id=requester["id"],
                assignee_id=AGENT["id"], organization_id=requester["organization_id"], group_id=3000 + i % 2,
                brand_id=1, tags=["csv", f"t{i % 4}"], via={"channel": "email"}, custom_fields=[],
                is_public=True, url=f"https://{SUBDOMAIN}.zendesk.com/api/v2/tickets/{i + 1}.json",
            )
            key = str(ticket["id"])
            self.comments[key] = []
            self._comment(key, requester["id"], f"Hello, exporting ticket {i + 1} to CSV fails.")
            self._comment(key, AGENT["id"], "Internal: looks like bug ZD-17.", public=False)
            self._comment(key, AGENT["id"], f"<p>Fixed in <b>v{i + 1}.2</b>, please retry.</p>", html=True)
            out.append(ticket)
        return out

    def _comment(self, ticket_id: str, author: int, body: str, *, public: bool = True, html: bool = False,
                 ) -> dict[str, Any]:
        self._comment_id += 1
        comment = {
            "id": self._comment_id, "type": "Comment", "author_id": author, "public": public,
            "body": body, "html_body": body if html else f"<p>{body}</p>", "plain_body": "" if html else body,
            "created_at": iso_z(self.clock()), "attachments": [], "via": {"channel": "email"},
        }
        self.comments[ticket_id].append(comment)
        return comment

    def update_ticket(self, ticket_id: int, **fields: Any) -> dict[str, Any]:
        """Change a ticket; its ``updated_at`` and ``generated_timestamp`` move on."""
        return self.tickets.update(ticket_id, **fields)

    def solve(self, ticket_id: int) -> dict[str, Any]:
        """Solve a ticket (an agent's closing comment and the status change)."""
        self._comment(str(ticket_id), AGENT["id"], "Solved: closing this one.")
        return self.update_ticket(ticket_id, status="solved")

    def add_comment(self, ticket_id: int, author: int, body: str, public: bool = True) -> dict[str, Any]:
        """Add a comment; the ticket is updated with it."""
        self._comment(str(ticket_id), author, body, public=public)
        return self.update_ticket(ticket_id)

    def delete_ticket(self, ticket_id: int) -> dict[str, Any]:
        """Delete a ticket: the export shows it with ``status: "deleted"``; showing it answers 404."""
        return self.update_ticket(ticket_id, status="deleted")

    def add_token(self, email: str = ADMIN["email"], token: str | None = None) -> str:
        """Accept ``token`` for ``email`` (random when omitted)."""
        token = token or f"zd-{uuid.uuid4().hex}"
        self.tokens_by_email[token] = email
        return token

    def revoke(self, token: str) -> None:
        """Stop accepting ``token``."""
        self.tokens_by_email.pop(token, None)

    # -- what the plugin should end with ---------------------------------------------------------------

    def ingested_tickets(self) -> list[dict[str, Any]]:
        """Tickets the plugin should hold as sessions (solved or closed)."""
        return [t for t in self.tickets if t["status"] in INGESTED]

    def expected_contacts(self) -> set[str]:
        """Emails of the requesters of ingested tickets."""
        return {self.users[str(t["requester_id"])]["email"] for t in self.ingested_tickets()
                if self.users[str(t["requester_id"])].get("email")}

    def expected_companies(self) -> set[str]:
        """Domains of the organizations (requester's, else ticket's) of ingested tickets."""
        out = set()
        for t in self.ingested_tickets():
            org_id = self.users[str(t["requester_id"])].get("organization_id") or t.get("organization_id")
            org = self.orgs.get(str(org_id))
            if org and org["domain_names"]:
                out.add(org["domain_names"][0])
        return out

    # -- auth and headers ------------------------------------------------------------------------------

    def check_auth(self, req: FakeRequest) -> Reply | None:
        creds = req.basic_auth
        if creds is not None:
            user, password = creds
            email = user.removesuffix("/token")
            if user.endswith("/token") and self.tokens_by_email.get(password) == email:
                return None
        if self.anonymous_on_bad_auth and req.path == "/api/v2/users/me.json":
            return {"user": {"id": None, "name": "Anonymous user", "email": "invalid@example.com",
                             "role": "end-user"}}
        return FakeResponse(401, {"error": "Couldn't authenticate you"}, {"WWW-Authenticate": 'Basic realm="Web"'})

    def handle(self, req: FakeRequest) -> FakeResponse:
        resp = super().handle(req)
        headers = dict(resp.headers)
        headers.setdefault("X-Rate-Limit", "700")
        headers.setdefault("X-Rate-Limit-Remaining", "699")
        return FakeResponse(resp.status, resp.json, headers, resp.body, resp.content_type)

    def _user_by_token(self, req: FakeRequest) -> dict[str, Any] | None:
        creds = req.basic_auth
        email = self.tokens_by_email.get(creds[1]) if creds else None
        return next((u for u in self.users.values() if u.get("email") == email), None)

    # -- routes --------------------------------------------------------------------------------------

    @get("/api/v2/incremental/tickets/cursor.json")
    def export(self, req: FakeRequest) -> Reply:
        now = self.clock()
        if self.export_limit is not None:
            recent = [r.at for r in self.requests_to("/api/v2/incremental/tickets/cursor.json")
                      if now - 60 < r.at <= now]
            if len(recent) > self.export_limit:
                wait = int(60 - (now - recent[-self.export_limit - 1])) + 1
                return FakeResponse(429, {"error": "APIRateLimitExceeded"}, {"Retry-After": str(wait)})
        q = req.query
        if ("cursor" in q) == ("start_time" in q):
            return 400, {"error": "InvalidPaginationParameter", "description": "give start_time or cursor"}
        if "cursor" in q:
            gts, last_id = (int(p) for p in _decode(q["cursor"]))
        else:
            start = int(q["start_time"])
            if start > now - 60:
                return 400, {"error": "InvalidValue", "description": "start_time is too recent"}
            gts, last_id = start, -1
        # Ticket changes of the last minute are not exported yet.
        rows = sorted(((int(self.tickets.stamps[str(t["id"])]), t["id"], t) for t in self.tickets
                       if self.tickets.stamps[str(t["id"])] <= now - 60), key=lambda r: (r[0], r[1]))
        after = [r for r in rows if (r[0], r[1]) > (gts, last_id) and r[0] >= gts]
        size = min(int(q.get("per_page") or 1000), self.max_export_page)
        page = after[:size]
        end = len(after) <= size
        pos = (page[-1][0], page[-1][1]) if page else (gts, last_id)
        tickets = [{**t, "generated_timestamp": g} for g, _, t in page]
        cursor = _encode(*pos)
        return {"tickets": tickets, "after_cursor": cursor, "before_cursor": None, "end_of_stream": end,
                "after_url": req.url_for(req.path, cursor=cursor), "before_url": None}

    @get("/api/v2/tickets/{ticket_id}.json")
    def show_ticket(self, req: FakeRequest, ticket_id: str) -> Reply:
        ticket = self.tickets.get(ticket_id)
        if ticket is None or ticket["status"] == "deleted":
            return 404, {"error": "RecordNotFound", "description": "Not found"}
        return {"ticket": dict(ticket)}

    @get("/api/v2/tickets/{ticket_id}/comments.json")
    def list_comments(self, req: FakeRequest, ticket_id: str) -> Reply:
        if ticket_id not in self.comments:
            return 404, {"error": "RecordNotFound", "description": "Not found"}
        size = min(int(req.query.get("page[size]") or 100), 100)
        offset = int(_decode(req.query["page[after]"])[0]) if req.query.get("page[after]") else 0
        rows = self.comments[ticket_id][offset : offset + size]
        more = offset + size < len(self.comments[ticket_id])
        after = _encode(offset + size) if more else None
        return {"comments": rows, "meta": {"has_more": more, "after_cursor": after, "before_cursor": None},
                "links": {"next": req.url_for(req.path, **{"page[size]": size, "page[after]": after}) if more else None,
                          "prev": None}}

    @get("/api/v2/users/{user_id}.json")
    def show_user(self, req: FakeRequest, user_id: str) -> Reply:
        user = self._user_by_token(req) if user_id == "me" else self.users.get(user_id)
        if user is None:
            return 404, {"error": "RecordNotFound", "description": "Not found"}
        return {"user": {**user, "url": req.url_for(f"/api/v2/users/{user['id']}.json"),
                         "created_at": "2024-01-02T03:04:05Z", "updated_at": iso_z(self.clock())}}

    @get("/api/v2/organizations/{org_id}.json")
    def show_org(self, req: FakeRequest, org_id: str) -> Reply:
        org = self.orgs.get(org_id)
        if org is None:
            return 404, {"error": "RecordNotFound", "description": "Not found"}
        return {"organization": dict(org)}

    # -- helpers for tests ---------------------------------------------------------------------------

    def export_requests(self) -> list[FakeRequest]:
        """Every request to the incremental export."""
        return self.requests_to("/api/v2/incremental/tickets/cursor.json")

    def event(self, kind: str, ticket_id: int, event_id: str | None = None) -> dict[str, Any]:
        """A ``zen:event-type:ticket.<kind>`` webhook body (ids as strings in ``detail``, as Zendesk sends)."""
        ticket = self.tickets.get(str(ticket_id)) or {"id": ticket_id}
        detail = {k: (str(v) if k.endswith("_id") and v is not None else v) for k, v in ticket.items()
                  if k in ("id", "status", "subject", "requester_id", "organization_id", "group_id", "priority",
                           "tags", "type", "created_at", "updated_at")}
        detail["id"] = str(ticket_id)
        return {"type": f"zen:event-type:ticket.{kind}", "account_id": 1234,
                "id": event_id or str(uuid.uuid4()), "time": iso_z(self.clock()),
                "zendesk_event_version": "2022-11-06", "subject": f"zen:ticket:{ticket_id}",
                "detail": detail, "event": {}}


# -- conformance factories (see tests/plugins/test_conformance.py) -----------------------------------


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, count: int, clock: Any = None,
          ) -> tuple[FakeZendesk, str]:
    """Start a fake with ``count`` tickets (a minute apart, ending over an hour ago), point the plugin at it,
    and issue the admin's token."""
    clock = clock or FakeClock().time
    fake = serve_fake(FakeZendesk(count, clock=clock))
    monkeypatch.setenv("HISSUNO_ZENDESK_API_URL", fake.url)
    return fake, fake.add_token()


def credentials(token: str, **overrides: Any) -> dict[str, Any]:
    """Connect-form values for the fake's admin."""
    return {"subdomain": SUBDOMAIN, "email": ADMIN["email"], "api_token": token, **overrides}


def connect(store: Any, token: str) -> str:
    """Connect through the plugin's own auth test; returns the connection id."""
    from hissuno_airflow.runtime.connect import connect_api_key

    out = connect_api_key(registry.get_plugin("zendesk"), store, project_id=settings.default_project_id(),
                          user_id="tester", credentials=credentials(token))
    return str(out["connection_id"])


def _aged(fake: FakeZendesk, clock: FakeClock) -> None:
    # The export leaves out the last minute's changes; move past it.
    clock.advance(3600)


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Twelve tickets (seven solved or closed), connected through the plugin's own auth test."""
    clock = FakeClock()
    fake, token = serve(monkeypatch, serve_fake, 12, clock.time)
    _aged(fake, clock)
    return ConformanceTarget(connection_id=connect(store, token), stream_ids=("tickets",))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """The admin's token, and one the fake revoked."""
    fake, token = serve(monkeypatch, serve_fake, 1)
    revoked = fake.add_token()
    fake.revoke(revoked)
    return AuthTarget(good=credentials(token), bad=credentials(revoked))


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """A connection whose ``webhook_secret`` is the signer's; payloads are ``ticket.status_changed`` events."""
    from hissuno_airflow.kit.signatures import ZendeskSignature

    fake, token = serve(monkeypatch, serve_fake, 1)
    cid = connect(store, token)
    signer = Signer(ZendeskSignature())
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    return WebhookTarget(sign=signer, forge=signer.forged(), connection_id=cid,
                         payload=lambda event_id: fake.event("status_changed", 1, event_id=event_id))
