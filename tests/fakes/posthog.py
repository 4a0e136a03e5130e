"""A stateful fake of PostHog's private API (providers.md section 11), on ``tests/fakes/server.py``.

Every route wants ``Authorization: Bearer <personal key>`` (``issue_token``); a refusal is PostHog's
``{"type": "authentication_error", ...}`` 401. Project-scoped routes 404 for another project id.

- ``GET /api/projects/{id}/``: the project (``{id, uuid, name, organization, ...}``);
- ``GET /api/projects/{id}/persons/``, ``.../event_definitions/``, ``.../property_definitions/?type=``:
  DRF limit/offset paging, ``{count, next (absolute URL or null), previous, results}``;
- ``POST /api/projects/{id}/query/``: a ``HogQLQuery``. The fake runs the one query shape the plugin
  sends (per person and event over ``events``, placeholders ``{start} {end} {d7} {d14} {d15}`` in
  ``values``, ``LIMIT n OFFSET m`` in the text) over its own events, and answers like PostHog
  (``{results, columns, types, hasMore, limit, offset, ...}``); any other query is a 400. A ``LIMIT``
  above ``max_rows`` (PostHog's MAX_SELECT_RETURNED_ROWS, 50,000) is clamped to it. ``has_more=False``
  leaves ``hasMore`` out of the answer (whether raw HogQL answers carry it is unconfirmed);
- asynchronous queries (``async_polls`` > 0): ``POST .../query/`` answers **202** with ``{query_status:
  {id, complete: false, ...}}`` and ``GET /api/projects/{id}/query/{query_id}/`` answers 202 (still
  running) ``async_polls`` times, then 200 with ``complete: true`` and the response in
  ``query_status.results`` (or ``error``/``error_message`` when ``async_error`` is set).

Persons and definitions are ``RecordSet``s on the fake's clock; events are rows with wall-clock times
(the plugin's window ends at the end of the current UTC day). Faults (429 + Retry-After as DRF's
throttle sends it, 5xx, 401) come from the shared base.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget
from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, FakeResponse, RecordSet, Reply, get, post

PROJECT_ID = "42"
"""Short on purpose: the conformance auth check treats every submitted value of 4+ characters as secret,
and a 401 names the project path."""
PROJECT = {"id": int(PROJECT_ID), "uuid": "01890a5e-0000-0000-0000-000000004242", "name": "Acme Web App",
           "organization": "0189-org", "timezone": "UTC", "api_token": "phc_public_capture_token"}
THROTTLED = {"type": "throttled_error", "code": "throttled",
             "detail": "Request was throttled. Expected available in 3600 seconds.", "attr": None}


def day_start() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class PostHog(FakeProvider):
    """One project with persons, events, and event/property definitions."""

    name = "posthog"
    require_auth = True

    def __init__(self, persons: int = 0, definitions: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.persons = RecordSet(self.clock, resolution=60)
        self.events: list[dict[str, Any]] = []
        self.event_definitions = RecordSet(self.clock, resolution=60)
        self.property_definitions = RecordSet(self.clock, resolution=60)
        self.queries: list[dict[str, Any]] = []
        self.max_rows = 50_000
        self.has_more = True
        self.async_polls = 0
        """Polls an asynchronous query answers 202 before it completes; 0 answers every query at once."""
        self.async_error: str | None = None
        self.running: dict[str, dict[str, Any]] = {}
        """Asynchronous query id -> ``{"polls": left, "response": ...}``."""
        self.newest_first = False
        """List persons and definitions most recently changed first instead of in creation order.
        providers.md does not say how PostHog orders these listings (event definitions sort by
        ``last_seen_at`` in PostHog's UI); this is the worst case for offset paging: a change moves a
        record to page one, so every record behind it shifts one place."""
        self.add_persons(persons)
        self.add_definitions(definitions)
        for i, (name, type_) in enumerate((("plan", "String"), ("email", "String"), ("$current_url", "String"))):
            self.property_definitions.add(id=f"pd-{i}", name=name, property_type=type_, is_numerical=False,
                                          type="person" if i < 2 else "event", description=None)

    # -- data ------------------------------------------------------------------------------------

    def add_persons(self, n: int, *, events: int = 3) -> list[dict[str, Any]]:
        """``n`` identified persons with emails at ``customer<k>.com``, each with ``events`` recent events."""
        out = []
        for _ in range(n):
            i = len(self.persons) + 1
            pid = str(uuid.UUID(int=0x0189_0000_0000_0000_0000_0000_0000_0000 + i))
            person = self.persons.add(id=pid, uuid=pid, name=f"user{i}@customer{i % 4}.com",
                                      distinct_ids=[f"distinct-{i}"], is_identified=True,
                                      properties={"email": f"user{i}@customer{i % 4}.com", "name": f"User {i}",
                                                  "plan": "pro" if i % 2 else "free"})
            for k in range(events):
                self.add_event(pid, "$pageview" if k % 2 == 0 else "report_created", days_ago=k * 5 + 1)
            out.append(person)
        return out

    def add_event(self, person_id: str, event: str, *, days_ago: float = 1, url: str | None = None) -> None:
        ts = day_start() - timedelta(days=days_ago) + timedelta(hours=10)
        self.events.append({"uuid": str(uuid.uuid4()), "event": event, "person_id": person_id, "timestamp": ts,
                            "url": url or f"https://app.acme.io/page/{len(self.events)}"})

    def add_definitions(self, n: int) -> list[dict[str, Any]]:
        start = len(self.event_definitions) + len(self.event_definitions.deleted)
        return [self.event_definitions.add(id=str(uuid.UUID(int=0xE000 + i)), name=f"feature_{i}_used",
                                           description=f"Fired when feature {i} is used.", tags=["core"],
                                           verified=i % 2 == 0, last_seen_at=None, volume_30_day=None)
                for i in range(start, start + n)]

    # -- auth --------------------------------------------------------------------------------------

    def check_auth(self, req: FakeRequest) -> Reply | None:
        if not self.token_valid(req.bearer_token):
            return FakeResponse(401, {"type": "authentication_error", "code": "authentication_failed",
                                      "detail": "Personal API key is invalid.", "attr": None})
        return None

    # -- routes ------------------------------------------------------------------------------------

    def _project(self, pid: str) -> Reply | None:
        return None if pid == PROJECT_ID else (404, {"type": "invalid_request", "code": "not_found",
                                                    "detail": "Not found.", "attr": None})

    @get("/api/projects/{pid}/")
    def project(self, req: FakeRequest, pid: str) -> Reply:
        return self._project(pid) or dict(PROJECT)

    def _ordered(self, rs: RecordSet) -> list[dict[str, Any]]:
        if not self.newest_first:
            return list(rs)
        return sorted(rs, key=lambda r: (rs.stamps[str(r["id"])], str(r["id"])), reverse=True)

    def _page(self, req: FakeRequest, rows: list[dict[str, Any]]) -> Reply:
        limit = min(int(req.query.get("limit") or 100), 100)
        offset = int(req.query.get("offset") or 0)
        extra = {k: v for k, v in req.query.items() if k not in ("limit", "offset")}
        nxt = req.url_for(req.path, **extra, limit=limit, offset=offset + limit) if offset + limit < len(rows) \
            else None
        prev = req.url_for(req.path, **extra, limit=limit, offset=max(0, offset - limit)) if offset else None
        return {"count": len(rows), "next": nxt, "previous": prev, "results": rows[offset : offset + limit]}

    @get("/api/projects/{pid}/persons/")
    def list_persons(self, req: FakeRequest, pid: str) -> Reply:
        return self._project(pid) or self._page(req, [
            {k: v for k, v in p.items() if k != "updated_at"} for p in self._ordered(self.persons)])

    @get("/api/projects/{pid}/event_definitions/")
    def list_event_definitions(self, req: FakeRequest, pid: str) -> Reply:
        return self._project(pid) or self._page(req, self._ordered(self.event_definitions))

    @get("/api/projects/{pid}/property_definitions/")
    def list_property_definitions(self, req: FakeRequest, pid: str) -> Reply:
        return self._project(pid) or self._page(
            req, [d for d in self._ordered(self.property_definitions) if d["type"] == req.query.get("type", "event")])

    @post("/api/projects/{pid}/query/")
    def query(self, req: FakeRequest, pid: str) -> Reply:
        denied = self._project(pid)
        if denied:
            return denied
        body = req.json() or {}
        q = body.get("query") or {}
        text = str(q.get("query") or "")
        self.queries.append(body)
        m = re.search(r"LIMIT (\d+) OFFSET (\d+)\s*$", text)
        if q.get("kind") != "HogQLQuery" or "FROM events" not in text or "GROUP BY person_id, event" not in text \
                or m is None:
            return 400, {"type": "validation_error", "code": "invalid_input", "detail": "Unsupported query",
                         "attr": "query"}
        v = {k: datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
             for k, s in (q.get("values") or {}).items()}
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in self.events:
            if v["start"] <= e["timestamp"] < v["end"]:
                groups.setdefault((e["person_id"], e["event"]), []).append(e)
        rows = []
        for (person, event), evs in sorted(groups.items()):
            last = max(evs, key=lambda e: e["timestamp"])
            rows.append([person, event, len(evs), sum(e["timestamp"] >= v["d7"] for e in evs),
                         sum(e["timestamp"] >= v["d14"] for e in evs), sum(e["timestamp"] >= v["d15"] for e in evs),
                         min(e["timestamp"] for e in evs).strftime("%Y-%m-%d %H:%M:%S"),
                         last["timestamp"].strftime("%Y-%m-%d %H:%M:%S"), last["url"]])
        limit, offset = min(int(m.group(1)), self.max_rows), int(m.group(2))
        columns = ["person_id", "event", "total", "last_7d", "last_14d", "last_15d", "first_seen", "last_seen",
                   "last_url"]
        response: dict[str, Any] = {"results": rows[offset : offset + limit], "columns": columns,
                                    "types": [[c, "String"] for c in columns], "limit": limit, "offset": offset,
                                    "hogql": text, "is_cached": False, "error": None}
        if self.has_more:
            response["hasMore"] = offset + limit < len(rows)
        if not self.async_polls:
            return response
        query_id = uuid.uuid4().hex
        self.running[query_id] = {"polls": self.async_polls, "response": response}
        return 202, {"query_status": self._status(query_id, complete=False)}

    def _status(self, query_id: str, *, complete: bool, **extra: Any) -> dict[str, Any]:
        return {"id": query_id, "team_id": int(PROJECT_ID), "complete": complete, "error": False,
                "error_message": None, "query_async": True, "results": None, **extra}

    @get("/api/projects/{pid}/query/{query_id}/")
    def query_status(self, req: FakeRequest, pid: str, query_id: str) -> Reply:
        denied = self._project(pid)
        if denied:
            return denied
        job = self.running.get(query_id)
        if job is None:
            return 404, {"type": "invalid_request", "code": "not_found", "detail": "Not found.", "attr": None}
        if job["polls"] > 0:
            job["polls"] -= 1
            return 202, {"query_status": self._status(query_id, complete=False)}
        if self.async_error:
            return {"query_status": self._status(query_id, complete=True, error=True,
                                                 error_message=self.async_error)}
        return {"query_status": self._status(query_id, complete=True, results=job["response"])}


# -- conformance factories (see tests/plugins/test_conformance.py) -----------------------------------


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, persons: int, definitions: int,
          clock: Any = None) -> tuple[PostHog, str]:
    """Start the fake and point the self-hosted base (``API``) at it; returns the fake and a good key."""
    fake = serve_fake(PostHog(persons, definitions, clock=clock or FakeClock().time))
    monkeypatch.setenv("HISSUNO_POSTHOG_API_URL", fake.url)
    return fake, fake.issue_token("phx_personal_key_5d2c81f04a7e")


def connect(store: Any, key: str, host: str = "https://posthog.acme.io") -> str:
    from hissuno_airflow.runtime.connect import connect_api_key

    out = connect_api_key(registry.get_plugin("posthog"), store, project_id=settings.default_project_id(),
                          user_id="tester", credentials={"api_key": key, "project_id": PROJECT_ID, "host": host})
    return str(out["connection_id"])


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Five persons with events, seven event definitions; both streams."""
    _fake, key = serve(monkeypatch, serve_fake, 5, 7)
    return ConformanceTarget(connection_id=connect(store, key), stream_ids=("behavioral", "analytics"),
                             filters={"behavioral": {"sync_new_contacts": True}})


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A key the fake issued, and one it revoked."""
    fake, key = serve(monkeypatch, serve_fake, 1, 1)
    revoked = fake.issue_token("phx_revoked_key_0000000000")
    fake.revoke_token(revoked)
    return AuthTarget(good={"api_key": key, "project_id": PROJECT_ID, "host": "https://posthog.acme.io"},
                      bad={"api_key": revoked, "project_id": PROJECT_ID, "host": "https://posthog.acme.io"})
