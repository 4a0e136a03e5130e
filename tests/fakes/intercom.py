"""A stateful fake of Intercom's REST API 2.x, written from ``providers.md`` §5.

Routes, every one behind a bearer token (``issue_token``; a refused one answers Intercom's ``error.list``
with ``unauthorized``):

- ``GET /me``: the admin and its workspace (``app.id_code``, ``name``, ``region``);
- ``POST /conversations/search``: the query grammar (single filter or ``AND``/``OR`` compound, at most two
  levels and 15 filters per group, operators ``= != IN NIN > < ~ !~ ^ $`` with ``>``/``<`` inclusive);
  a missing or empty query, an unknown operator or ``per_page`` above 150 is a 400; ``sort`` on
  ``updated_at``/``created_at``; cursor pagination ``pagination.starting_after`` <- ``pages.next``. The
  cursor is a keyset (sort value and id of the page's last row), so a conversation updated mid-sync moves
  to the end of an ascending search and is listed again, never skipped;
- ``GET /conversations/{id}``: the conversation with its 500 most recent parts, bodies as plain text
  with ``display_as=plaintext`` (HTML otherwise); 404 once deleted;
- ``GET /contacts/{id}``;
- OAuth (``tests/fakes/oauth.py`` with Intercom's knobs): ``GET /oauth`` (the authorize page of
  app.intercom.com; grants at once) and ``POST /auth/eagle/token`` (``client_secret`` in the body; answers
  ``token`` and ``access_token``, the same never-expiring value, and no refresh token).

Rate limits as Intercom enforces them: a request budget per 10-second window on the fake's clock
(``window_limit``), ``X-RateLimit-Limit/Remaining/Reset`` (reset as epoch seconds) on every authenticated
answer, and 429 ``rate_limit_exceeded`` (no ``Retry-After``) past the budget. Conversations are a
``RecordSet`` stamped in UNIX seconds, a minute apart (``add_conversations``, ``reply``, ``retitle``,
``delete``). ``notification(topic, id)`` builds a webhook body; ``Signer`` of ``tests.fakes.webhooks``
signs it as Intercom does (``X-Hub-Signature: sha1=``). ``max_per_page`` makes the server return
smaller pages than asked, so a small dataset pages.

The module also defines the conformance factories of ``tests/plugins/test_conformance.py``.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import math
import re
import uuid
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from hissuno_airflow.store import connections as repo
from tests.fakes.oauth import FakeOAuthServer
from tests.fakes.server import FakeClock, FakeRequest, FakeResponse, RecordSet, Reply, get, post
from tests.fakes.webhooks import Signer

APP = {"type": "app", "id_code": "abc12xyz", "name": "Acme Support", "created_at": 1_600_000_000, "secure": True,
       "identity_verification": False, "timezone": "Europe/Dublin", "region": "US"}
ADMIN = {"type": "admin", "id": "991", "name": "Grace Admin", "email": "grace@acme.test", "email_verified": True,
         "avatar": {"type": "avatar", "image_url": None}, "has_inbox_seat": True}
CONTACTS = 5
"""Conversation n belongs to contact ``c-<n mod 5>``: contacts repeat, so a run fetches each once."""
WINDOW = 10
"""Seconds per rate-limit window."""
OPERATORS = frozenset({"=", "!=", "IN", "NIN", ">", "<", "~", "!~", "^", "$"})
_TAG = re.compile(r"<[^>]+>")


def error_list(code: str, message: str) -> dict[str, Any]:
    """Intercom's error body."""
    return {"type": "error.list", "request_id": uuid.uuid4().hex[:20],
            "errors": [{"code": code, "message": message}]}


def plaintext(body: Any) -> Any:
    """What ``display_as=plaintext`` does to an HTML body."""
    return html.unescape(_TAG.sub("", body)) if isinstance(body, str) else body


def _cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _uncursor(text: str) -> tuple[int, str] | None:
    try:
        value, ident = json.loads(base64.urlsafe_b64decode(text.encode()))
        return int(value), str(ident)
    except (ValueError, TypeError):
        return None


def query_problem(query: Any, depth: int = 1) -> str | None:
    """Why Intercom would refuse this query (None when it is valid)."""
    if not isinstance(query, dict) or not query:
        return "query: a search needs a query"
    if query.get("operator") in ("AND", "OR"):
        if depth > 2:
            return "query: at most two levels of nesting"
        parts = query.get("value")
        if not isinstance(parts, list) or not parts:
            return "query: a compound query needs a list of filters"
        if len(parts) > 15:
            return "query: at most 15 filters per group"
        for part in parts:
            if problem := query_problem(part, depth + 1):
                return problem
        return None
    if not isinstance(query.get("field"), str) or query.get("operator") not in OPERATORS or "value" not in query:
        return f"query: invalid filter {query!r}"
    return None


def _field(record: dict[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def matches(query: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether ``record`` satisfies ``query`` (``>`` and ``<`` are inclusive, as Intercom documents)."""
    if query.get("operator") in ("AND", "OR"):
        results = [matches(q, record) for q in query["value"]]
        return all(results) if query["operator"] == "AND" else any(results)
    have, op, want = _field(record, query["field"]), query["operator"], query["value"]
    if isinstance(have, int) and isinstance(want, str) and want.lstrip("-").isdigit():
        want = int(want)  # dates may be sent as strings
    if op in (">", "<"):
        if not isinstance(have, (int, float)) or not isinstance(want, (int, float)):
            return False
        return have >= want if op == ">" else have <= want
    if op in ("IN", "NIN"):
        return (have in want) == (op == "IN")
    if op in ("=", "!="):
        return (have == want) == (op == "=")
    text, sub = str(have or ""), str(want)
    return {"~": sub in text, "!~": sub not in text, "^": text.startswith(sub), "$": text.endswith(sub)}[op]


class Intercom(FakeOAuthServer):
    """Conversations, contacts and the admin of one workspace; see the module docstring."""

    name = "intercom"
    require_auth = True
    # OAuth as Intercom runs it (providers.md 5.1): authorize on app.intercom.com at /oauth, no scopes,
    # the code exchanged at /auth/eagle/token with the client secret in the body, and a token that never
    # expires (no refresh token, no expires_in). Who-am-I is the API's own /me below.
    client_id = "intercom-app-client"
    client_secret = "intercom-app-secret-4f1c"
    authorize_path = "/oauth"
    token_path = "/auth/eagle/token"
    revoke_path = None
    userinfo_path = None
    access_ttl = None
    issue_refresh_tokens = False
    access_prefix = "dG9rOm"

    def __init__(self, count: int = 0, *, window_limit: int = 1000, max_per_page: int = 150,
                 app: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = dict(app or APP)
        self.window_limit = window_limit
        self.max_per_page = max_per_page
        # One minute between stamps, in UNIX seconds as Intercom sends them.
        self.conversations = RecordSet(self.clock, fmt=int, resolution=60)
        self.contacts = {f"c-{i}": self._contact(i) for i in range(CONTACTS)}
        self._window_start = -1.0
        self._window_used = 0
        self.window_refusals = 0
        """429s answered because a 10-second window's budget was spent."""
        self.add_conversations(count)

    # -- data ----------------------------------------------------------------------------------------

    def _contact(self, i: int) -> dict[str, Any]:
        lead = i == CONTACTS - 1
        return {
            "type": "contact", "id": f"c-{i}", "external_id": None if lead else f"user-{i}",
            "workspace_id": self.app["id_code"], "role": "lead" if lead else "user",
            "email": f"customer{i}@example{i}.test", "phone": f"+35312345{i:02d}", "name": f"Customer {i}",
            "created_at": 1_690_000_000, "updated_at": 1_690_000_000, "signed_up_at": 1_690_000_000 + i,
            "last_seen_at": 1_700_000_000 + i, "browser": "chrome", "os": "macOS",
            "location": {"type": "location", "country": "Ireland", "region": "Leinster", "city": "Dublin"},
            "companies": {"type": "list", "data": [{"type": "company", "id": f"co-{i}", "name": f"Company {i}"}]},
            "tags": {"type": "list", "data": [{"type": "tag", "id": "t-1", "name": "vip"},
                                              {"type": "tag", "id": "t-2", "name": "beta"}]},
            "social_profiles": {"type": "list", "data": [{"type": "social_profile", "name": "Twitter",
                                                          "url": f"https://twitter.com/customer{i}"}]},
            "custom_attributes": {"plan": "pro", "seats": i + 1, "nested": {"ignored": True}},
        }

    def _part(self, n: int, k: int, part_type: str, body: str | None, author: dict[str, Any],
              at: int) -> dict[str, Any]:
        return {"type": "conversation_part", "id": f"p-{n}-{k}", "part_type": part_type, "body": body,
                "created_at": at, "updated_at": at, "notified_at": at, "assigned_to": None, "author": author,
                "attachments": [], "external_id": None, "redacted": False}

    def add_conversations(self, n: int) -> list[dict[str, Any]]:
        """Append ``n`` conversations (ids ``1001``...), each a minute newer than the last: the customer's
        opening message, an agent's reply, an assignment (with the assigner's note, which is not a message
        of the conversation) and the customer's answer."""
        out = []
        start = len(self.conversations) + len(self.conversations.deleted)
        for n_ in range(start + 1, start + n + 1):
            contact = self.contacts[f"c-{n_ % CONTACTS}"]
            user = {"type": contact["role"], "id": contact["id"], "name": contact["name"], "email": contact["email"]}
            admin = {"type": "admin", "id": ADMIN["id"], "name": ADMIN["name"], "email": ADMIN["email"]}
            rec = self.conversations.add(
                id=str(1000 + n_), type="conversation", title=f"Billing question {n_}" if n_ % 3 == 0 else None,
                state="open", open=True, read=True, priority="not_priority", waiting_since=None,
                snoozed_until=None, admin_assignee_id=None, team_assignee_id=None,
                tags={"type": "tag.list", "tags": []},
                source={"type": "conversation", "id": f"s-{n_}", "delivered_as": "customer_initiated",
                        "subject": "", "body": f"<p>Hi, my invoice {n_} shows the wrong amount &amp; date.</p>",
                        "author": user, "attachments": [], "url": None, "redacted": False},
                contacts={"type": "contact.list", "contacts": [
                    {"type": "contact", "id": contact["id"], "external_id": contact["external_id"]}]},
            )
            at = rec["created_at"]
            rec["conversation_parts"] = {"type": "conversation_part.list", "total_count": 3, "conversation_parts": [
                self._part(n_, 1, "comment", f"<p>Sorry about invoice {n_}, checking now.</p>", admin, at + 5),
                self._part(n_, 2, "assignment", "<p>Assigning to billing.</p>", admin, at + 6),
                self._part(n_, 3, "comment", "<p>Thanks!</p>", user, at + 7),
            ]}
            out.append(rec)
        return out

    def reply(self, conversation_id: str, body: str, *, author_type: str = "admin", state: str | None = None,
              **fields: Any) -> dict[str, Any]:
        """Add a part (moves ``updated_at``): an agent's reply, or a customer's that reopens a closed one."""
        conv = self.conversations.get(conversation_id)
        assert conv is not None, conversation_id
        parts = copy.deepcopy(conv["conversation_parts"])
        author = {"type": author_type, "id": "x", "name": f"An {author_type}", "email": None}
        at = int(self.clock())
        parts["conversation_parts"].append(self._part(int(conversation_id) - 1000, len(parts["conversation_parts"]) + 1,
                                                      "comment", f"<p>{html.escape(body)}</p>", author, at))
        parts["total_count"] = len(parts["conversation_parts"])
        if state is not None:
            fields.update(state=state, open=state == "open")
        return self.conversations.update(conversation_id, conversation_parts=parts, **fields)

    def notification(self, topic: str, conversation_id: str, *, notification_id: str | None = None,
                     created_at: int | None = None) -> dict[str, Any]:
        """A webhook body as Intercom posts it: the conversation (HTML bodies, with parts) as the item."""
        conv = self.conversations.get(conversation_id)
        item = copy.deepcopy(conv) if conv is not None else {"type": "conversation", "id": conversation_id}
        at = int(self.clock()) if created_at is None else created_at
        return {"type": "notification_event", "app_id": self.app["id_code"],
                "id": notification_id or f"notif_{uuid.uuid4()}", "topic": topic, "created_at": at,
                "delivery_status": "pending", "delivery_attempts": 1, "delivered_at": 0, "first_sent_at": at,
                "self": None, "links": {}, "data": {"type": "notification_event_data", "item": item}}

    # -- auth and rate limits ----------------------------------------------------------------------

    def _issue(self, account: dict[str, Any], scopes: tuple[str, ...], *, refresh: bool = True) -> dict[str, Any]:
        # Intercom answers the token twice: {"token_type": "Bearer", "token": t, "access_token": t}.
        body = super()._issue(account, scopes, refresh=refresh)
        body["token"] = body["access_token"]
        return body

    def check_auth(self, req: FakeRequest) -> Reply | None:
        if req.path in (self.authorize_path, self.token_path):
            return None  # the OAuth legs authenticate the client themselves
        denied = self.check_bearer(req)
        if denied is not None:
            return FakeResponse(401, error_list("unauthorized", "Access Token Invalid"))
        now = self.clock()
        start = math.floor(now / WINDOW) * WINDOW
        if start != self._window_start:
            self._window_start, self._window_used = start, 0
        self._window_used += 1
        if self._window_used > self.window_limit:
            self.window_refusals += 1
            return FakeResponse(429, error_list("rate_limit_exceeded",
                                                f"Exceeded rate limit of {self.window_limit} in 10_seconds"))
        return None

    def handle(self, req: FakeRequest) -> FakeResponse:
        resp = super().handle(req)
        if resp.status == 401 or self._window_start < 0:
            return resp
        headers = dict(resp.headers)
        headers.setdefault("X-RateLimit-Limit", str(self.window_limit))
        headers.setdefault("X-RateLimit-Remaining", str(max(0, self.window_limit - self._window_used)))
        headers.setdefault("X-RateLimit-Reset", str(int(self._window_start + WINDOW)))
        return FakeResponse(resp.status, resp.json, headers, resp.body, resp.content_type)

    # -- routes --------------------------------------------------------------------------------------

    @get("/me")
    def me(self, req: FakeRequest) -> Reply:
        return {**ADMIN, "app": self.app}

    @post("/conversations/search")
    def search(self, req: FakeRequest) -> Reply:
        body = req.json() or {}
        if problem := query_problem(body.get("query")):
            return 400, error_list("parameter_invalid", problem)
        pagination = body.get("pagination") or {}
        asked = int(pagination.get("per_page") or 20)
        if not 1 <= asked <= 150:
            return 400, error_list("parameter_invalid", "per_page: expected 1 to 150")
        per_page = min(asked, self.max_per_page)
        sort = body.get("sort") or {}
        field = sort.get("field") or "updated_at"
        descending = sort.get("order") == "descending"
        rows = sorted((r for r in self.conversations if matches(body["query"], r)),
                      key=lambda r: (r[field], r["id"]), reverse=descending)
        total = len(rows)
        offset = 0
        if after := pagination.get("starting_after"):
            key = _uncursor(str(after))
            if key is None:
                return 400, error_list("parameter_invalid", "starting_after: not a cursor")
            later = [i for i, r in enumerate(rows) if ((r[field], r["id"]) < key if descending else (r[field], r["id"]) > key)]
            offset = later[0] if later else len(rows)
        page = rows[offset : offset + per_page]
        more = offset + per_page < len(rows)
        nxt = {"per_page": per_page, "starting_after": _cursor((page[-1][field], page[-1]["id"]))} if more else None
        listed = [{k: copy.deepcopy(v) for k, v in r.items() if k != "conversation_parts"} for r in page]
        return {"type": "conversation.list", "conversations": listed, "total_count": total,
                "pages": {"type": "pages", "page": offset // per_page + 1, "per_page": per_page,
                          "total_pages": max(1, math.ceil(total / per_page)), "next": nxt}}

    @get("/conversations/{conversation_id}")
    def conversation(self, req: FakeRequest, conversation_id: str) -> Reply:
        conv = self.conversations.get(conversation_id)
        if conv is None:
            return 404, error_list("not_found", "Resource Not Found")
        out = copy.deepcopy(conv)
        parts = out["conversation_parts"]
        parts["conversation_parts"] = parts["conversation_parts"][-500:]
        if req.query.get("display_as") == "plaintext":
            out["source"]["body"] = plaintext(out["source"]["body"])
            for part in parts["conversation_parts"]:
                part["body"] = plaintext(part["body"])
        return out

    @get("/contacts/{contact_id}")
    def contact(self, req: FakeRequest, contact_id: str) -> Reply:
        contact = self.contacts.get(contact_id)
        if contact is None:
            return 404, error_list("not_found", "User Not Found")
        return copy.deepcopy(contact)

    # -- helpers for tests ---------------------------------------------------------------------------

    def searches(self) -> list[dict[str, Any]]:
        """The bodies of every search request, in order."""
        return [r.json() for r in self.requests_to("/conversations/search")]


# -- conformance factories (see tests/plugins/test_conformance.py) -----------------------------------


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, count: int, **kwargs: Any) -> tuple[Intercom, str]:
    """Start the fake with ``count`` conversations, point the plugin at it, and issue a token."""
    kwargs.setdefault("clock", FakeClock().time)
    fake = serve_fake(Intercom(count, **kwargs))
    monkeypatch.setenv("HISSUNO_INTERCOM_API_URL", fake.url)
    return fake, fake.issue_token()


def connect(store: Any, token: str, **fields: Any) -> str:
    """A connection made through the plugin's own auth test."""
    from hissuno_airflow.runtime.connect import connect_api_key

    out = connect_api_key(registry.get_plugin("intercom"), store, project_id=settings.default_project_id(),
                          user_id="tester", credentials={"access_token": token, **fields})
    return str(out["connection_id"])


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Twelve conversations, in pages of five."""
    _fake, token = serve(monkeypatch, serve_fake, 12, max_per_page=5)
    return ConformanceTarget(connection_id=connect(store, token), stream_ids=("conversations",))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A token the fake issued, and one it revoked."""
    fake, token = serve(monkeypatch, serve_fake, 1)
    revoked = fake.issue_token()
    fake.revoke_token(revoked)
    return AuthTarget(good={"access_token": token}, bad={"access_token": revoked})


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """A connection whose ``webhook_secret`` is the app's client secret; payloads are reply notifications."""
    fake, token = serve(monkeypatch, serve_fake, 1)
    cid = connect(store, token)
    signer = Signer(registry.get_plugin("intercom").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})

    def payload(event_id: str) -> dict[str, Any]:
        return fake.notification("conversation.user.replied", "1001", notification_id=event_id)

    return WebhookTarget(sign=signer, forge=signer.forged(), connection_id=cid, payload=payload)
