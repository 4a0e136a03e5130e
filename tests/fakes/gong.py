"""A stateful fake of Gong's API v2 (providers.md section 9), for ``hissuno_airflow/plugins/gong``.

Routes, every one behind HTTP Basic ``access key : secret`` (``add_key``, ``revoke_key``; a refusal is a 401
with Gong's ``{requestId, errors: [...]}`` body):

- ``GET /v2/workspaces``: the company's workspaces (the plugin's credential test);
- ``GET /v2/calls?fromDateTime=&toDateTime=&cursor=``: calls that started in ``[from, to)``, oldest first,
  ``PAGE_SIZE`` per page, ``records: {totalRecords, currentPageSize, currentPageNumber, cursor}`` with
  ``cursor`` present only while more pages exist. A cursor is opaque and bound to the filter it was issued
  for; anything else is a 400. A window without calls is a 404 "No calls found corresponding to the
  provided filters", as Gong answers (not in providers.md; the plugin treats it as an empty page);
- ``POST /v2/calls/extensive`` with ``{filter: {callIds}, contentSelector: {exposedFields: {parties}}, cursor}``:
  ``calls: [{metaData, parties}]`` (parties only when asked for);
- ``POST /v2/calls/transcript`` with ``{filter: {callIds}, cursor}``: ``callTranscripts: [{callId, transcript}]``
  for the calls that have one.

Calls are a ``RecordSet`` whose provider time is ``started`` (pinned per call with ``at=``; Gong lists by it,
in ISO 8601 with a ``-07:00`` offset). ``edit_call`` changes a call (title, parties, transcript) in place,
as Gong does when a call is re-processed: its ``started`` does not move. ``add_calls(..., at=...)`` adds
calls, also late ones (processed hours after they started). ``remove_call`` deletes one.

Limits, as providers.md 9.3 gives them: ``per_second`` (3) authenticated requests in any second and ``per_day``
(10,000) per UTC day of the fake's clock; past either a 429 with ``Retry-After`` (1 s, or the seconds to the
next UTC midnight). No other rate-limit header exists. ``webhook_body(call_id)`` is what an automation
rule posts: ``{"callData": {metaData, context, parties, content, interaction, collaboration, media},
"isTest": false}``; ``Signer`` from ``tests.fakes.webhooks`` signs it as Gong does (RS256 JWT carrying
``webhook_url`` and ``body_sha256``).

The module also defines the conformance factories of ``tests/plugins/test_conformance.py``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from hissuno_airflow.store import connections as repo
from tests.fakes.server import FakeProvider, FakeRequest, FakeResponse, RecordSet, Reply, get, post
from tests.fakes.webhooks import Signer

PAGE_SIZE = 100
GONG_TZ = timezone(timedelta(hours=-7))
WORKSPACES = [{"id": "5550001234", "name": "Acme Sales", "description": "North America"},
              {"id": "5550009876", "name": "Acme EMEA", "description": None}]
ACCESS_KEY = "GONGAK7QX2M4P9R"
ACCESS_SECRET = "eyJhbGciOiJIUzI1NiJ9.gong-secret-4f1a9c"
BASE_URL = "https://us-55616.api.gong.io"


def gong_time(ts: float) -> str:
    """Epoch seconds as Gong writes a time: ISO 8601, microseconds, ``-07:00``."""
    return datetime.fromtimestamp(ts, GONG_TZ).isoformat(timespec="microseconds")


def _parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Gong(FakeProvider):
    """Calls by start time with parties and transcripts; Basic auth; 3 requests/s and 10,000/day."""

    name = "gong"

    def __init__(self, *, clock: Callable[[], float] = time.time, per_second: int | None = 3,
                 per_day: int | None = 10_000) -> None:
        super().__init__(clock=clock)
        self.calls = RecordSet(self.clock, created_field=None, updated_field="started", fmt=gong_time, resolution=1)
        self.parties: dict[str, list[dict[str, Any]]] = {}
        self.transcripts: dict[str, list[dict[str, Any]]] = {}
        self.keys: dict[str, str] = {}
        self.per_second, self.per_day = per_second, per_day
        self._recent: deque[float] = deque()
        self._daily: dict[str, int] = {}
        self._cursors: dict[str, tuple[Any, int]] = {}
        self._serial = 0

    # -- data ----------------------------------------------------------------------------------------

    def add_key(self, access_key: str = ACCESS_KEY, secret: str = ACCESS_SECRET) -> tuple[str, str]:
        """Accept ``access_key:secret``."""
        self.keys[access_key] = secret
        return access_key, secret

    def revoke_key(self, access_key: str) -> None:
        """Stop accepting a key (a technical admin deleted or rotated it)."""
        self.keys.pop(access_key, None)

    def add_calls(self, n: int, *, at: float, step: float = 3600.0, transcripts: bool = True) -> list[dict[str, Any]]:
        """``n`` calls starting at ``at``, ``step`` seconds apart, each with parties and (mostly) a transcript."""
        made = []
        for k in range(n):
            self._serial += 1
            i = self._serial
            cid = str(7_782_342_000_000_000_000 + i)
            started = at + k * step
            call = self.calls.add(
                {"id": cid, "url": f"https://app.gong.io/call?id={cid}", "title": f"Discovery call {i}",
                 "scheduled": gong_time(started - 300), "duration": 1800 + 60 * (i % 7),
                 "primaryUserId": str(900 + i % 5), "direction": "Conference", "system": "Zoom",
                 "scope": "External", "media": "Video", "language": "eng", "workspaceId": WORKSPACES[0]["id"],
                 "sdrDisposition": None, "clientUniqueId": None, "customData": None, "purpose": None,
                 "meetingUrl": f"https://zoom.us/j/{i}", "isPrivate": False, "calendarEventId": None},
                at=started)
            self.parties[cid] = self._parties(i)
            if transcripts and i % 10 != 0:  # every tenth call has no transcript (not processed yet)
                self.transcripts[cid] = self._transcript(i)
            made.append(call)
        return made

    @staticmethod
    def _parties(i: int) -> list[dict[str, Any]]:
        parties = [
            {"id": f"{i}-1", "name": f"Rep {i % 5}", "emailAddress": f"rep{i % 5}@acme.example", "title": "AE",
             "userId": str(900 + i % 5), "speakerId": f"{i}01", "affiliation": "Internal",
             "phoneNumber": None, "methods": ["Invitee", "Attendee"]},
            {"id": f"{i}-2", "name": f"Buyer {i}", "emailAddress": f"buyer{i}@client{i % 7}.example",
             "title": "VP Operations", "userId": None, "speakerId": f"{i}02", "affiliation": "External",
             "phoneNumber": None, "methods": ["Attendee"]},
        ]
        if i % 4 == 0:  # a dial-in nobody identified: no name, no speaker id
            parties.append({"id": f"{i}-3", "name": None, "emailAddress": None, "title": None, "userId": None,
                            "speakerId": None, "affiliation": "Unknown", "phoneNumber": "+15550100",
                            "methods": ["Attendee"]})
        return parties

    @staticmethod
    def _transcript(i: int) -> list[dict[str, Any]]:
        def mono(speaker: str, start: int, *texts: str) -> dict[str, Any]:
            return {"speakerId": speaker, "topic": None,
                    "sentences": [{"start": start + 4000 * n, "end": start + 4000 * n + 3500, "text": t}
                                  for n, t in enumerate(texts)]}

        out = [mono(f"{i}01", 1200, f"Thanks for joining, this is call {i}.", "Shall we start?"),
               mono(f"{i}02", 9800, "Our invoices keep failing to export.", "It blocks month end."),
               mono(f"{i}01", 21000, "Understood, I will file that with the team.")]
        if i % 5 == 0:  # a speaker Gong could not match to a party
            out.append(mono(f"{i}09", 30500, "Sorry, joining late from the car."))
        return out

    def edit_call(self, call_id: str, *, transcript: list[dict[str, Any]] | None = None, **fields: Any) -> None:
        """Change a call in place (Gong re-processed it): its ``started`` stays."""
        self.calls.records[str(call_id)].update(fields)
        if transcript is not None:
            self.transcripts[str(call_id)] = transcript

    def remove_call(self, call_id: str) -> None:
        """Delete a call (retention policy, privacy request)."""
        self.calls.delete(call_id)
        self.parties.pop(str(call_id), None)
        self.transcripts.pop(str(call_id), None)

    def call_ids(self) -> list[str]:
        """Ids of the current calls, oldest start first."""
        return sorted(self.calls.stamps, key=lambda k: (self.calls.stamps[k], k))

    def webhook_body(self, call_id: str, *, is_test: bool = False) -> dict[str, Any]:
        """What a "Fire webhook" automation rule posts for a processed call."""
        return {"callData": {"metaData": dict(self.calls.records[str(call_id)]), "context": [],
                             "parties": [dict(p) for p in self.parties.get(str(call_id), [])],
                             "content": {"topics": []}, "interaction": {"speakers": []},
                             "collaboration": {"publicComments": []}, "media": {"audioUrl": None}},
                "isTest": is_test}

    # -- auth and limits -------------------------------------------------------------------------------

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> FakeResponse:
        return FakeResponse(status, {"requestId": uuid.uuid4().hex[:18], "errors": [message]}, headers or {})

    def check_auth(self, req: FakeRequest) -> Reply | None:
        pair = req.basic_auth
        if pair is None or self.keys.get(pair[0]) != pair[1] or not pair[1]:
            return self._error(401, "Unauthorized: the access key or secret is not valid")
        now = self.clock()
        with self._lock:
            day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
            if self.per_day is not None and self._daily.get(day, 0) >= self.per_day:
                midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                wait = (midnight + timedelta(days=1)).timestamp() - now
                return self._error(429, "Daily API call limit reached", {"Retry-After": str(max(1, int(wait)))})
            while self._recent and self._recent[0] <= now - 1 + 1e-6:
                self._recent.popleft()
            if self.per_second is not None and len(self._recent) >= self.per_second:
                return self._error(429, "Too many requests", {"Retry-After": "1"})
            self._recent.append(now)
            self._daily[day] = self._daily.get(day, 0) + 1
        return None

    # -- paging ----------------------------------------------------------------------------------------

    def _page(self, rows: list[Any], key: Any, cursor: str | None) -> tuple[list[Any], dict[str, Any]] | FakeResponse:
        offset = 0
        if cursor:
            issued = self._cursors.get(cursor)
            if issued is None or issued[0] != key:
                return self._error(400, "cursor is not valid for this request")
            offset = issued[1]
        page = rows[offset : offset + PAGE_SIZE]
        records: dict[str, Any] = {"totalRecords": len(rows), "currentPageSize": len(page),
                                   "currentPageNumber": offset // PAGE_SIZE}
        if offset + PAGE_SIZE < len(rows):
            token = secrets.token_urlsafe(24)
            self._cursors[token] = (key, offset + PAGE_SIZE)
            records["cursor"] = token
        return page, records

    # -- routes ----------------------------------------------------------------------------------------

    @get("/v2/workspaces")
    def list_workspaces(self, req: FakeRequest) -> Reply:
        return {"requestId": uuid.uuid4().hex[:18], "workspaces": WORKSPACES}

    @get("/v2/calls")
    def list_calls(self, req: FakeRequest) -> Reply:
        q = req.query
        try:
            lo = _parse(q["fromDateTime"]) if q.get("fromDateTime") else None
            hi = _parse(q["toDateTime"]) if q.get("toDateTime") else None
        except ValueError:
            return self._error(400, "fromDateTime/toDateTime: expected ISO 8601")
        rows = [dict(self.calls.records[k]) for k in self.call_ids()
                if (lo is None or self.calls.stamps[k] >= lo) and (hi is None or self.calls.stamps[k] < hi)]
        if not rows:
            return self._error(404, "No calls found corresponding to the provided filters")
        paged = self._page(rows, ("calls", lo, hi), q.get("cursor"))
        if isinstance(paged, FakeResponse):
            return paged
        page, records = paged
        return {"requestId": uuid.uuid4().hex[:18], "records": records, "calls": page}

    def _ids(self, req: FakeRequest) -> tuple[list[str], dict[str, Any]] | FakeResponse:
        body = req.json() or {}
        ids = (body.get("filter") or {}).get("callIds")
        if not isinstance(ids, list) or not ids:
            return self._error(400, "filter.callIds: expected a list of call ids")
        return [str(i) for i in ids], body

    @post("/v2/calls/extensive")
    def extensive(self, req: FakeRequest) -> Reply:
        got = self._ids(req)
        if isinstance(got, FakeResponse):
            return got
        ids, body = got
        exposed = ((body.get("contentSelector") or {}).get("exposedFields") or {})
        rows = []
        for cid in ids:
            if cid in self.calls.records:
                row: dict[str, Any] = {"metaData": dict(self.calls.records[cid])}
                if exposed.get("parties"):
                    row["parties"] = [dict(p) for p in self.parties.get(cid, [])]
                rows.append(row)
        paged = self._page(rows, ("extensive", tuple(ids)), body.get("cursor"))
        if isinstance(paged, FakeResponse):
            return paged
        page, records = paged
        return {"requestId": uuid.uuid4().hex[:18], "records": records, "calls": page}

    @post("/v2/calls/transcript")
    def transcript(self, req: FakeRequest) -> Reply:
        got = self._ids(req)
        if isinstance(got, FakeResponse):
            return got
        ids, body = got
        rows = [{"callId": cid, "transcript": self.transcripts[cid]} for cid in ids if cid in self.transcripts]
        paged = self._page(rows, ("transcript", tuple(ids)), body.get("cursor"))
        if isinstance(paged, FakeResponse):
            return paged
        page, records = paged
        return {"requestId": uuid.uuid4().hex[:18], "records": records, "callTranscripts": page}


# -- conformance factories (see tests/plugins/test_conformance.py) -----------------------------------

CONFORMANCE_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()


def _serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, count: int) -> Gong:
    # The real clock: the runtime's rate budget paces in real time, and the fake counts in real time.
    fake = serve_fake(Gong())
    fake.add_key()
    fake.add_calls(count, at=CONFORMANCE_START)
    monkeypatch.setenv("HISSUNO_GONG_API_URL", fake.url)
    return fake


def _connect(store: Any, access_key: str = ACCESS_KEY, secret: str = ACCESS_SECRET) -> str:
    from hissuno_airflow.runtime.connect import connect_api_key

    out = connect_api_key(registry.get_plugin("gong"), store, project_id=settings.default_project_id(),
                          user_id="tester", credentials=credentials(access_key, secret))
    return str(out["connection_id"])


def credentials(access_key: str = ACCESS_KEY, secret: str = ACCESS_SECRET, base_url: str = BASE_URL) -> dict[str, str]:
    """What a user types into the connect dialog."""
    return {"access_key": access_key, "access_key_secret": secret, "base_url": base_url}


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Twelve calls, connected through the plugin's own credential test."""
    _serve(monkeypatch, serve_fake, 12)
    return ConformanceTarget(connection_id=_connect(store), stream_ids=("calls",))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A key pair the fake accepts, and one a technical admin revoked."""
    fake = _serve(monkeypatch, serve_fake, 1)
    revoked = fake.add_key("GONGAKREVOKED01", "revoked-secret-77")
    fake.revoke_key(revoked[0])
    return AuthTarget(good=credentials(), bad=credentials(*revoked))


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """A connection whose ``webhook_secret`` is the public key of the rule; bodies are ``callData`` posts."""
    fake = _serve(monkeypatch, serve_fake, 1)
    cid = _connect(store)
    signer = Signer(registry.get_plugin("gong").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    template = fake.webhook_body(fake.call_ids()[0])

    def payload(event_id: str) -> dict[str, Any]:
        meta = {**template["callData"]["metaData"], "id": event_id}
        return {**template, "callData": {**template["callData"], "metaData": meta}}

    return WebhookTarget(sign=signer, forge=signer.forged(), connection_id=cid, payload=payload)
