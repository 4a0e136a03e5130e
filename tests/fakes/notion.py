"""A stateful fake of Notion's API (``Notion-Version: 2022-06-28``), written from ``providers.md`` §7.

Routes under ``/v1`` (point ``HISSUNO_NOTION_API_URL`` and ``HISSUNO_NOTION_AUTH_URL`` at ``fake.url + "/v1"``):

- ``GET /oauth/authorize``: checks ``client_id``, ``response_type=code``, ``owner=user``, ``redirect_uri``
  and ``state``, then redirects (302) back with a one-time ``code`` (the user's consent);
- ``POST /oauth/token``: HTTP Basic ``client_id:client_secret``, a **JSON** body ``{grant_type:
  "authorization_code", code, redirect_uri}`` (a form body is ``invalid_request``); a code is single use
  and bound to its redirect URI; the answer is Notion's (``access_token``, ``bot_id``, ``workspace_id``,
  ``workspace_name``, ``owner``...);
- every other route needs ``Authorization: Bearer`` (a token from ``issue_token`` or the exchange; a
  revoked one is 401 ``unauthorized``) and a ``Notion-Version`` header (400 ``missing_version``);
- ``GET /users/me`` (the bot user, with ``bot.workspace_id``/``workspace_name``), ``POST /search``
  (pages or databases, ``query`` on titles, sorted by ``last_edited_time``), ``GET /databases/{id}``,
  ``POST /databases/{id}/query`` (``last_edited_time`` timestamp filter ``on_or_after``/``after``, sorts,
  trashed rows left out), ``GET /pages/{id}`` (trashed pages come back with ``in_trash``; a page deleted
  for good is 404 ``object_not_found``), ``GET /blocks/{id}/children``.

Every list is ``{object: "list", results, next_cursor, has_more}`` with ``start_cursor``/``page_size``
(above 100 is a 400); ``block_page_size`` makes block children page in small pages. Rate limit: a token
bucket of ``burst`` requests refilled at ``per_second`` on the fake's clock; past it, 429 ``rate_limited``
with ``Retry-After: 1``. Pages and rows are a ``RecordSet`` whose ``last_edited_time`` is rounded down to
the minute, as Notion's is (several edits in one minute share a stamp). ``event(type, page_id)`` builds a
webhook body; ``Signer`` signs it as Notion does (``X-Notion-Signature: sha256=``, keyed by the
verification token). The conformance factories of ``tests/plugins/test_conformance.py`` are at the end.
"""

from __future__ import annotations

import copy
import json
import math
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from hissuno_airflow.store import connections as repo
from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, FakeResponse, RecordSet, Reply, get, post
from tests.fakes.webhooks import Signer

WORKSPACE_ID = "8d3c9a43-6f0e-4b55-9f55-6b2a1d1e0c11"
WORKSPACE_NAME = "Acme Wiki"
INTERNAL_BOT = "1f1c3b0a-0000-4000-8000-00000000b0t1"
OAUTH_BOT = "2e2d4c1b-0000-4000-8000-00000000b0t2"
CLIENT_ID = "notion-client-id"
CLIENT_SECRET = "notion-client-secret-xyz"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROW_TYPES = ("Bug", "Feature", "Improvement", "")
ROW_PRIORITIES = ("High", "Low", "Urgent")
ROW_STATUSES = ("Not started", "In progress", "Done")
FIELD_MAPPING = {
    "title": "Name", "description": "Details", "type": "Type", "priority": "Priority", "status": "Status",
    "typeValueMap": {"Feature": "feature_request", "Improvement": "change_request"},
    "priorityValueMap": {"Urgent": "high"},
    "statusValueMap": {"Not started": "open", "Done": "resolved"},
    "customFields": ["Tags", "Votes", "Owner", "Due Date"],
}
"""The mapping the tests configure for the ``Roadmap`` database."""


def nid(name: str) -> str:
    """A stable UUID for a fake object's name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"notion-fake/{name}"))


def minute_iso(ts: float) -> str:
    """Notion's stamp: ISO with milliseconds, rounded down to the minute."""
    return datetime.fromtimestamp(math.floor(ts / 60) * 60, UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")


def error(status: int, code: str, message: str) -> FakeResponse:
    """Notion's error body."""
    return FakeResponse(status, {"object": "error", "status": status, "code": code, "message": message,
                                 "request_id": str(uuid.uuid4())})


def rich(text: str, **annotations: Any) -> list[dict[str, Any]]:
    """A rich-text array of one run."""
    ann = {"bold": False, "italic": False, "strikethrough": False, "underline": False, "code": False,
           "color": "default", **{k: v for k, v in annotations.items() if k != "link"}}
    link = annotations.get("link")
    return [{"type": "text", "text": {"content": text, "link": {"url": link} if link else None},
             "annotations": ann, "plain_text": text, "href": link}]


def block(kind: str, text: str = "", children: list[dict[str, Any]] | None = None, **value: Any) -> dict[str, Any]:
    """A block of ``kind``; ``children`` become its nested blocks."""
    body: dict[str, Any] = {"rich_text": rich(text, **value.pop("ann", {}))} if text else {}
    body.update(value)
    out = {"object": "block", "id": str(uuid.uuid4()), "type": kind, kind: body, "has_children": bool(children),
           "in_trash": False, "archived": False}
    if children:
        out["_children"] = children
    return out


class Notion(FakeProvider):
    """See the module docstring."""

    name = "notion"

    def __init__(self, *, rows: int = 12, clock: Any = None, burst: int = 1000, per_second: float = 3.0,
                 block_page_size: int = 100, page_size_cap: int = 100) -> None:
        super().__init__(clock=clock or FakeClock(T0.timestamp()).time)
        self.pages = RecordSet(self.clock, created_field="created_time", updated_field="last_edited_time",
                               fmt=minute_iso, resolution=1)
        self.databases: dict[str, dict[str, Any]] = {}
        self.blocks: dict[str, list[dict[str, Any]]] = {}
        """Parent (page or block) id -> its child blocks, in order."""
        self.gone: set[str] = set()
        """Pages deleted for good (404), not only trashed."""
        self.bots: dict[str, str] = {}
        """Token -> the bot user it belongs to."""
        self.codes: dict[str, str] = {}
        """One-time authorization code -> the redirect URI it was issued for."""
        self.burst, self.per_second = burst, per_second
        self._tokens, self._refilled = float(burst), self.clock()
        self.refusals = 0
        self.block_page_size, self.page_size_cap = block_page_size, page_size_cap
        self.roadmap = self.add_database("Roadmap")
        for i in range(rows):
            self.add_row(f"Row {i + 1}", i)
        self.build_handbook()

    # -- data ----------------------------------------------------------------------------------------

    def add_database(self, title: str, parent: dict[str, Any] | None = None) -> str:
        db_id = nid(f"db/{title}")
        stamp = minute_iso(self.clock())
        self.databases[db_id] = {
            "object": "database", "id": db_id, "title": rich(title), "url": f"https://www.notion.so/{db_id.replace('-', '')}",
            "created_time": stamp, "last_edited_time": stamp, "in_trash": False, "archived": False, "is_inline": False,
            "parent": parent or {"type": "workspace", "workspace": True},
            "properties": {
                "Name": {"id": "title", "name": "Name", "type": "title", "title": {}},
                "Type": {"id": "t1", "name": "Type", "type": "select",
                         "select": {"options": [{"name": n} for n in ROW_TYPES if n]}},
                "Priority": {"id": "p1", "name": "Priority", "type": "select",
                             "select": {"options": [{"name": n} for n in ROW_PRIORITIES]}},
                "Status": {"id": "s1", "name": "Status", "type": "status",
                           "status": {"options": [{"name": n} for n in ROW_STATUSES]}},
                "Details": {"id": "d1", "name": "Details", "type": "rich_text", "rich_text": {}},
                "Tags": {"id": "g1", "name": "Tags", "type": "multi_select", "multi_select": {"options": []}},
                "Votes": {"id": "v1", "name": "Votes", "type": "number", "number": {"format": "number"}},
                "Owner": {"id": "o1", "name": "Owner", "type": "people", "people": {}},
                "Due Date": {"id": "u1", "name": "Due Date", "type": "date", "date": {}},
            },
        }
        return db_id

    def row_properties(self, title: str, i: int, *, details: str | None = None) -> dict[str, Any]:
        """The property values of row ``i``: types, priorities and statuses cycle; every third row has no
        ``Details`` (its description is then the page content)."""
        kind = ROW_TYPES[i % len(ROW_TYPES)]
        text = details if details is not None else ("" if i % 3 == 2 else f"Details of {title}")
        return {
            "Name": {"id": "title", "type": "title", "title": rich(title)},
            "Type": {"id": "t1", "type": "select", "select": {"name": kind} if kind else None},
            "Priority": {"id": "p1", "type": "select", "select": {"name": ROW_PRIORITIES[i % 3]}},
            "Status": {"id": "s1", "type": "status", "status": {"name": ROW_STATUSES[i % 3]}},
            "Details": {"id": "d1", "type": "rich_text", "rich_text": rich(text) if text else []},
            "Tags": {"id": "g1", "type": "multi_select", "multi_select": [{"name": "api"}, {"name": f"t{i % 2}"}]},
            "Votes": {"id": "v1", "type": "number", "number": i * 2 if i % 4 else None},
            "Owner": {"id": "o1", "type": "people", "people": [{"object": "user", "id": nid("u/ada"), "name": "Ada"}]},
            "Due Date": {"id": "u1", "type": "date", "date": {"start": f"2026-04-{i % 28 + 1:02d}", "end": None}},
        }

    def _page(self, page_id: str, parent: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
        return self.pages.add(
            id=page_id, object="page", in_trash=False, archived=False, parent=parent, properties=properties,
            url=f"https://www.notion.so/{page_id.replace('-', '')}", icon=None, cover=None,
            created_by={"object": "user", "id": nid("u/ada")}, last_edited_by={"object": "user", "id": nid("u/ada")})

    def add_row(self, title: str, i: int, database_id: str | None = None, *, details: str | None = None) -> dict[str, Any]:
        """A row of the database (``Roadmap`` by default), with two paragraphs of content."""
        db = database_id or self.roadmap
        row = self._page(nid(f"row/{db}/{title}"), {"type": "database_id", "database_id": db},
                         self.row_properties(title, i, details=details))
        self.blocks[row["id"]] = [block("paragraph", f"{title}: what happened."),
                                  block("bulleted_list_item", "Steps to reproduce")]
        return row

    def add_page(self, title: str, parent_id: str | None = None, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A page under ``parent_id`` (the workspace when None); the parent gets a ``child_page`` block."""
        page_id = nid(f"page/{parent_id}/{title}")
        parent = {"type": "page_id", "page_id": parent_id} if parent_id else {"type": "workspace", "workspace": True}
        page = self._page(page_id, parent, {"title": {"id": "title", "type": "title", "title": rich(title)}})
        self.set_blocks(page_id, blocks or [block("paragraph", f"About {title}.")], touch=False)
        if parent_id:
            child = block("child_page", title=title)
            child["id"] = page_id
            self.blocks.setdefault(parent_id, []).append(child)
        return page

    def add_child_database(self, title: str, parent_id: str) -> str:
        """An inline database in a page (a ``child_database`` block whose id is the database's)."""
        db_id = self.add_database(title, {"type": "page_id", "page_id": parent_id})
        child = block("child_database", title=title)
        child["id"] = db_id
        self.blocks.setdefault(parent_id, []).append(child)
        return db_id

    def set_blocks(self, page_id: str, blocks: list[dict[str, Any]], *, touch: bool = True) -> None:
        """Replace a page's content (nested ``_children`` stored under each block); moves its edit time."""
        def store(parent: str, items: list[dict[str, Any]]) -> None:
            self.blocks[parent] = []
            for b in items:
                kids = b.pop("_children", None)
                self.blocks[parent].append(b)
                if kids:
                    store(b["id"], kids)
        store(page_id, blocks)
        if touch:
            self.pages.update(page_id)

    def build_handbook(self) -> None:
        """The knowledge tree: Handbook -> Onboarding -> First week, and an inline Runbooks database with
        two rows; one page elsewhere in the workspace."""
        handbook = self.add_page("Handbook", blocks=[
            block("heading_1", "Welcome"),
            block("paragraph", "Read this first.", ann={"bold": True}),
            block("paragraph", "Ask in chat", ann={"link": "https://chat.acme.test"}),
            block("bulleted_list_item", "Be kind", [block("bulleted_list_item", "Always")]),
            block("numbered_list_item", "Clone the repo"),
            block("to_do", "Get a laptop", checked=True),
            block("to_do", "Meet the team", checked=False),
            block("toggle", "Secrets policy", [block("paragraph", "Never paste tokens.")]),
            block("code", "make dev", language="bash"),
            block("quote", "Ship it."),
            block("callout", "Office closed on Fridays", icon={"type": "emoji", "emoji": "💡"}),
            block("divider"),
            block("image", caption=rich("Org chart"), type="external", external={"url": "https://img.acme.test/org.png"}),
            block("bookmark", url="https://acme.test/policies", caption=[]),
            block("equation", expression="e=mc^2"),
            block("heading_2", "Contacts"),
            block("paragraph", "hr@acme.test", ann={"code": True}),
        ])
        self.handbook = handbook["id"]
        onboarding = self.add_page("Onboarding", self.handbook, [block("heading_2", "Week one"),
                                                                 block("paragraph", "Pair with a buddy.")])
        self.onboarding = onboarding["id"]
        self.first_week = self.add_page("First week", self.onboarding)["id"]
        self.runbooks = self.add_child_database("Runbooks", self.handbook)
        self.runbook_rows = [self.add_row(f"Runbook {c}", i, self.runbooks)["id"] for i, c in enumerate("AB")]
        self.elsewhere = self.add_page("Elsewhere")["id"]

    def edit_row(self, row_id: str, **values: Any) -> dict[str, Any]:
        """Change property values by name (select/status names, ``Name`` and ``Details`` texts)."""
        row = self.pages.get(row_id)
        assert row is not None
        props = copy.deepcopy(row["properties"])
        for name, value in values.items():
            p = props[name]
            if p["type"] in ("title", "rich_text"):
                p[p["type"]] = rich(value) if value else []
            elif p["type"] in ("select", "status"):
                p[p["type"]] = {"name": value} if value else None
            else:
                p[p["type"]] = value
        return self.pages.update(row_id, properties=props)

    def trash(self, page_id: str, *, archived_alias: bool = True) -> None:
        """Move a page to the trash (still readable with ``in_trash``); its child-page block disappears.
        ``archived_alias=False`` leaves the deprecated ``archived`` false, as newer API versions answer."""
        self.pages.update(page_id, in_trash=True, archived=archived_alias)
        for items in self.blocks.values():
            items[:] = [b for b in items if b["id"] != page_id]

    def delete_for_good(self, page_id: str) -> None:
        """Remove a page entirely: 404 from now on."""
        self.trash(page_id)
        self.pages.delete(page_id)
        self.gone.add(page_id)

    def event(self, kind: str, page_id: str, *, event_id: str | None = None) -> dict[str, Any]:
        """A webhook body as Notion sends it (``timestamp`` is added by the signer)."""
        return {"id": event_id or str(uuid.uuid4()), "workspace_id": WORKSPACE_ID, "workspace_name": WORKSPACE_NAME,
                "subscription_id": nid("sub"), "integration_id": nid("integration"), "type": kind,
                "authors": [{"id": nid("u/ada"), "type": "person"}], "attempt_number": 1, "api_version": "2022-06-28",
                "entity": {"id": page_id, "type": "page"}, "data": {}}

    # -- auth, version header, rate limit ------------------------------------------------------------

    def issue_internal_token(self) -> str:
        token = self.issue_token("ntn_" + secrets.token_hex(16))
        self.bots[token] = INTERNAL_BOT
        return token

    def check_auth(self, req: FakeRequest) -> Reply | None:
        if req.path.startswith("/v1/oauth/"):
            return None
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.per_second)
        self._refilled = now
        if self._tokens < 1:
            self.refusals += 1
            resp = error(429, "rate_limited", "You have been rate limited. Please try again in a few minutes.")
            return FakeResponse(429, resp.json, {"Retry-After": "1"})
        self._tokens -= 1
        if not self.token_valid(req.bearer_token):
            return error(401, "unauthorized", "API token is invalid.")
        if not req.header("notion-version"):
            return error(400, "missing_version", "Notion-Version header failed validation: should be defined.")
        return None

    # -- OAuth ---------------------------------------------------------------------------------------

    @get("/v1/oauth/authorize")
    def authorize(self, req: FakeRequest) -> Reply:
        q = req.query
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code" or q.get("owner") != "user":
            return error(400, "invalid_request", "client_id, response_type=code and owner=user are required")
        if not q.get("redirect_uri") or not q.get("state"):
            return error(400, "invalid_request", "redirect_uri and state are required")
        code = "code-" + secrets.token_hex(8)
        self.codes[code] = q["redirect_uri"]
        target = q["redirect_uri"] + ("&" if "?" in q["redirect_uri"] else "?") + urlencode({"code": code, "state": q["state"]})
        return FakeResponse(302, None, {"Location": target})

    @post("/v1/oauth/token")
    def token(self, req: FakeRequest) -> Reply:
        if req.basic_auth != (CLIENT_ID, CLIENT_SECRET):
            return error(401, "invalid_client", "Basic auth with the client id and secret is required.")
        if not (req.header("content-type") or "").startswith("application/json"):
            return error(400, "invalid_request", "body must be JSON")
        body = req.json() or {}
        code = body.get("code")
        if body.get("grant_type") != "authorization_code" or code not in self.codes:
            return error(400, "invalid_grant", "Invalid code.")
        if self.codes.pop(code) != body.get("redirect_uri"):
            return error(400, "invalid_grant", "redirect_uri does not match.")
        token = self.issue_token("ntn_oauth_" + secrets.token_hex(16))
        self.bots[token] = OAUTH_BOT
        return {"access_token": token, "token_type": "bearer", "refresh_token": None, "bot_id": OAUTH_BOT,
                "workspace_id": WORKSPACE_ID, "workspace_name": WORKSPACE_NAME, "workspace_icon": "🏢",
                "owner": {"type": "user", "user": {"object": "user", "id": nid("u/ada"), "name": "Ada",
                                                   "type": "person", "person": {"email": "ada@acme.test"}}},
                "duplicated_template_id": None, "request_id": str(uuid.uuid4())}

    # -- reads ---------------------------------------------------------------------------------------

    def _list(self, req: FakeRequest, items: list[dict[str, Any]], kind: str, cap: int | None = None) -> Reply:
        body = req.json() if req.method == "POST" else None
        src = body if isinstance(body, dict) else req.query
        try:
            size = int(src.get("page_size") or 100)
            start = int(src.get("start_cursor") or 0)
        except ValueError:
            return error(400, "validation_error", "start_cursor or page_size is invalid")
        if not 1 <= size <= 100:
            return error(400, "validation_error", "body.page_size should be ≤ 100")
        size = min(size, cap or self.page_size_cap)
        page = items[start : start + size]
        more = start + size < len(items)
        return {"object": "list", "results": copy.deepcopy(page), "next_cursor": str(start + size) if more else None,
                "has_more": more, "type": kind, kind: {}}

    @get("/v1/users/me")
    def me(self, req: FakeRequest) -> Reply:
        bot = self.bots.get(req.bearer_token or "", INTERNAL_BOT)
        return {"object": "user", "id": bot, "type": "bot", "name": "Hissuno", "avatar_url": None,
                "bot": {"owner": {"type": "workspace", "workspace": True}, "workspace_name": WORKSPACE_NAME,
                        "workspace_id": WORKSPACE_ID}}

    @post("/v1/search")
    def search(self, req: FakeRequest) -> Reply:
        body = req.json() or {}
        wanted = (body.get("filter") or {}).get("value")
        query = str(body.get("query") or "").lower()
        pages = [p for p in self.pages if not p["in_trash"]]
        dbs = list(self.databases.values())
        items = pages if wanted == "page" else dbs if wanted == "database" else pages + dbs

        def title(o: dict[str, Any]) -> str:
            if o["object"] == "database":
                return "".join(r["plain_text"] for r in o["title"])
            return "".join(r["plain_text"] for p in o["properties"].values() if p["type"] == "title" for r in p["title"])

        items = [o for o in items if query in title(o).lower()]
        items.sort(key=lambda o: o["last_edited_time"], reverse=True)
        return self._list(req, items, "page_or_database")

    @get("/v1/databases/{database_id}")
    def database(self, req: FakeRequest, database_id: str) -> Reply:
        db = self.databases.get(database_id)
        return copy.deepcopy(db) if db else error(404, "object_not_found", f"Could not find database {database_id}.")

    @post("/v1/databases/{database_id}/query")
    def query(self, req: FakeRequest, database_id: str) -> Reply:
        if database_id not in self.databases:
            return error(404, "object_not_found", f"Could not find database with ID: {database_id}.")
        body = req.json() or {}
        rows = [p for p in self.pages if not p["in_trash"]
                and p["parent"].get("database_id") == database_id]
        flt = body.get("filter")
        if flt:
            if flt.get("timestamp") != "last_edited_time":
                return error(400, "validation_error", "only the last_edited_time timestamp filter is faked")
            cond = flt["last_edited_time"]
            if "on_or_after" in cond:
                rows = [r for r in rows if r["last_edited_time"] >= _norm(cond["on_or_after"])]
            elif "after" in cond:
                rows = [r for r in rows if r["last_edited_time"] > _norm(cond["after"])]
            else:
                return error(400, "validation_error", "unsupported last_edited_time condition")
        rows.sort(key=lambda r: (r["last_edited_time"], self.pages.stamps.get(r["id"], 0.0)))
        return self._list(req, rows, "page")

    @get("/v1/pages/{page_id}")
    def page(self, req: FakeRequest, page_id: str) -> Reply:
        page = self.pages.get(page_id)
        if page is None:
            return error(404, "object_not_found", f"Could not find page with ID: {page_id}.")
        return copy.deepcopy(page)

    @get("/v1/blocks/{block_id}/children")
    def children(self, req: FakeRequest, block_id: str) -> Reply:
        if block_id in self.gone or (block_id not in self.blocks and self.pages.get(block_id) is None):
            return error(404, "object_not_found", f"Could not find block with ID: {block_id}.")
        items = [b for b in self.blocks.get(block_id, []) if not b.get("in_trash")]
        return self._list(req, items, "block", cap=self.block_page_size)

    # -- helpers for tests ---------------------------------------------------------------------------

    def query_bodies(self, database_id: str | None = None) -> list[dict[str, Any]]:
        """Bodies of the database queries, in order."""
        return [r.json() for r in self.requests_to(f"/v1/databases/{database_id or self.roadmap}/query")]


# -- the declared rate, enforced (the shared rate budget's tests) ----------------------------------------

PER_MINUTE, BURST = 180, 3
"""What the notion plugin declares (``rate_limit_per_minute``, ``rate_limit_burst``)."""
JITTER_S = 0.2
"""Arrival-time slack ``LimitedNotion`` grants: a request 200 ms early is not a breach. A request leaves when its
booked slot comes, but a task process that wakes late (seen at load average 10 on 2 cores, with 50 ms of slack:
one 429 in 121 requests) arrives together with the next one that woke on time; the provider's "about 3 a
second" is not kept to the millisecond either. The per-process control overruns by tens of requests."""


class LimitedNotion(Notion):
    """Notion's fake on real time, enforcing the declared rate itself (GCRA, ``JITTER_S`` slack) and recording
    when each request arrives (``time.monotonic``), wherever its clients run: test threads, CLI processes,
    Airflow task processes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(clock=time.time, burst=10**9, **kwargs)  # the base class's own limit off
        self.arrivals: list[float] = []
        self.limited = 0
        self._tat = 0.0
        self._gate = threading.Lock()

    def check_auth(self, req: FakeRequest) -> Reply | None:
        if not req.path.startswith("/v1/oauth/"):
            interval, tolerance = 60 / PER_MINUTE, (BURST - 1) * 60 / PER_MINUTE
            with self._gate:
                now = time.monotonic()
                self.arrivals.append(now)
                if now < self._tat - tolerance - JITTER_S:
                    self.limited += 1
                    return FakeResponse(429, {"object": "error", "status": 429, "code": "rate_limited",
                                              "message": "rate limited"}, {"Retry-After": "1"})
                self._tat = max(self._tat, now) + interval
        return super().check_auth(req)

    def reset(self) -> None:
        """Forget arrivals and refill the bucket (after the set-up's requests: connect, instance listings)."""
        with self._gate:
            self.arrivals.clear()
            self.limited = 0
            self._tat = 0.0

    def add_boards(self, count: int, rows: int) -> list[str]:
        """``Roadmap`` and ``count - 1`` more databases, each with ``rows`` rows whose details are in a
        property (no block fetch per row): their ids."""
        databases = [self.roadmap, *(self.add_database(f"Board {n}") for n in range(2, count + 1))]
        for db in databases:
            for i in range(rows):
                self.add_row(f"Row {i + 1}", i, db, details=f"details {i}")
        return databases


def worst_excess(arrivals: list[float]) -> float:
    """The most requests any window held beyond ``BURST + rate * window`` (<= 0: within the budget)."""
    times = sorted(arrivals)
    worst = float("-inf")
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = BURST + (times[j] - times[i] + JITTER_S) * PER_MINUTE / 60
            worst = max(worst, (j - i + 1) - allowed)
    return worst


def _norm(iso: str) -> str:
    """A filter bound in the fake's stamp format, for string comparison."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# -- wiring and conformance factories (see tests/plugins/test_conformance.py) ------------------------


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, **kwargs: Any) -> Notion:
    """Start the fake and point the plugin's API and AUTH bases at it."""
    fake: Notion = serve_fake(Notion(**kwargs))
    monkeypatch.setenv("HISSUNO_NOTION_API_URL", fake.url + "/v1")
    monkeypatch.setenv("HISSUNO_NOTION_AUTH_URL", fake.url + "/v1")
    return fake


def connect_token(store: Any, token: str, *, reconnect_id: str | None = None) -> str:
    """A connection made through the plugin's own connect with an internal integration token."""
    from hissuno_airflow import settings
    from hissuno_airflow.kit import Request
    from hissuno_airflow.runtime.connect import connect_custom

    body = json.dumps({"access_token": token}).encode()
    answer, _ = connect_custom(registry.get_plugin("notion"), store,
                               Request("POST", "/api/plugins/notion/connect", {}, {}, body),
                               project_id=settings.default_project_id(), user_id="tester", reconnect_id=reconnect_id)
    return str(answer["connection_id"])


def _paced(monkeypatch: pytest.MonkeyPatch, fake: Notion, clock: FakeClock) -> None:
    """Every client waits on the fake's clock, and paces at the plugin's 3 requests a second on it."""
    from hissuno_airflow.kit.http.ratelimit import RateBudget
    from tests.fixtures.fakes import retries_on

    retries_on(monkeypatch, clock, RateBudget(180, burst=3, clock=clock.time, sleep=clock.sleep))


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Five rows and the handbook tree, through the real connect flow with an internal token."""
    clock = FakeClock(T0.timestamp())
    fake = serve(monkeypatch, serve_fake, rows=5, clock=clock.time, burst=3, block_page_size=4)
    _paced(monkeypatch, fake, clock)
    cid = connect_token(store, fake.issue_internal_token())
    from hissuno_airflow.runtime.streams import enable_stream

    enable_stream(store, cid, f"issues:{fake.roadmap}", settings={"fieldMapping": FIELD_MAPPING})
    return ConformanceTarget(connection_id=cid, stream_ids=(f"issues:{fake.roadmap}", f"knowledge:{fake.handbook}"))


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """A connection whose ``webhook_secret`` is the verification token; payloads are row edits."""
    clock = FakeClock(T0.timestamp())
    fake = serve(monkeypatch, serve_fake, rows=2, clock=clock.time)
    _paced(monkeypatch, fake, clock)
    cid = connect_token(store, fake.issue_internal_token())
    signer = Signer(registry.get_plugin("notion").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    from hissuno_airflow.runtime.streams import enable_stream

    enable_stream(store, cid, f"issues:{fake.roadmap}", settings={"fieldMapping": FIELD_MAPPING})
    row = fake.pages[0]["id"]

    def payload(event_id: str) -> dict[str, Any]:
        return fake.event("page.properties_updated", row, event_id=event_id)

    return WebhookTarget(sign=signer, forge=signer.forged(), connection_id=cid, payload=payload)


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """The custom connect's token path: a token the fake issued, and one it revoked."""
    clock = FakeClock(T0.timestamp())
    fake = serve(monkeypatch, serve_fake, rows=1, clock=clock.time)
    _paced(monkeypatch, fake, clock)
    revoked = fake.issue_internal_token()
    fake.revoke_token(revoked)
    return AuthTarget(good={"access_token": fake.issue_internal_token()}, bad={"access_token": revoked})
