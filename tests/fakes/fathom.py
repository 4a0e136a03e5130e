"""A stateful fake of Fathom's external API (providers.md section 10), on ``tests/fakes/server.py``.

Routes, every one behind ``X-Api-Key`` (a key from ``add_key``; anything else is 401):

- ``GET /meetings?created_after=&created_before=&cursor=&include_transcript=&include_summary=&include_action_items=``:
  meetings created strictly after ``created_after`` and before ``created_before``, oldest first,
  ``{limit, next_cursor, items}`` with an opaque cursor until the last page (``next_cursor: null``);
  transcript, ``default_summary`` and ``action_items`` are ``null`` unless asked for;
- ``GET /recordings/{id}/transcript`` -> ``{transcript: [...]}`` and ``GET /recordings/{id}/summary`` ->
  ``{summary: {template_name, markdown_formatted}}`` (404 for an unknown recording).

Meetings are a ``RecordSet`` keyed by ``recording_id`` on the fake's clock (a minute apart). Some
meetings embed a transcript without speaker names (``speakerless``), which the plugin must fetch
again from the transcript endpoint; some have no embedded summary (``no_summary``). Faults (429 with
Retry-After, 5xx, 401) come from the shared base. ``Signer(StandardWebhooks())`` signs webhook bodies
as Fathom (Svix) does.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit.signatures import StandardWebhooks
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

PAGE_SIZE = 4
OWNER = {"name": "Riley Host", "email": "riley@acme.io", "email_domain": "acme.io", "team": "Sales"}


class Fathom(FakeProvider):
    """Meetings ordered by creation time; ``next_cursor`` paging; transcripts and summaries by recording."""

    name = "fathom"

    def __init__(self, count: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keys: set[str] = set()
        self.meetings = RecordSet(self.clock, id_field="recording_id", resolution=60)
        self.transcripts: dict[str, list[dict[str, Any]]] = {}
        self.summaries: dict[str, str] = {}
        self.garbled: dict[str, dict[str, Any]] = {}
        """Recording id -> fields the API shows instead of the stored ones (a malformed record)."""
        self.add_meetings(count)

    # -- data ------------------------------------------------------------------------------------

    def add_key(self, key: str) -> str:
        self.keys.add(key)
        return key

    def add_meetings(self, n: int, *, speakerless: bool = False, no_summary: bool = False) -> list[dict[str, Any]]:
        """Append ``n`` meetings (recording ids 1001, 1002, ...), each a minute newer than the last."""
        out = []
        for _ in range(n):
            rid = 1001 + len(self.meetings) + len(self.meetings.deleted)
            customer = {"name": f"Casey Buyer {rid}", "email": f"casey{rid}@customer{rid % 3}.com",
                        "email_domain": f"customer{rid % 3}.com", "is_external": True,
                        "matched_speaker_display_name": f"Casey Buyer {rid}"}
            host = {"name": OWNER["name"], "email": OWNER["email"], "email_domain": "acme.io",
                    "is_external": False, "matched_speaker_display_name": OWNER["name"]}
            transcript = [
                {"speaker": {"display_name": OWNER["name"], "matched_calendar_invitee_email": OWNER["email"]},
                 "text": "Thanks for joining, shall we look at the rollout?", "timestamp": "00:00:05"},
                {"speaker": {"display_name": customer["name"], "matched_calendar_invitee_email": customer["email"]},
                 "text": f"Yes: export to CSV keeps timing out for us (call {rid}).", "timestamp": "00:01:12"},
            ]
            self.transcripts[str(rid)] = transcript
            self.summaries[str(rid)] = f"## Summary\nCustomer {rid} reports CSV export timeouts."
            stamp = self.clock()
            rec = self.meetings.add(
                recording_id=rid, title=f"Rollout check-in {rid}", meeting_title=f"Acme <> Customer {rid}",
                url=f"https://fathom.video/calls/{rid}", share_url=f"https://fathom.video/share/{rid}",
                scheduled_start_time=iso_z(stamp - 3600), scheduled_end_time=iso_z(stamp - 1800),
                recording_start_time=iso_z(stamp - 3590), recording_end_time=iso_z(stamp - 1900),
                meeting_type="external", calendar_invitees_domains_type="one_or_more_external",
                transcript_language="en", calendar_invitees=[host, customer], recorded_by=dict(OWNER),
                action_items=[{"description": f"Send export fix ETA to customer {rid}", "user_generated": False,
                               "completed": False, "recording_timestamp": "00:20:00",
                               "assignee": {"name": OWNER["name"], "email": OWNER["email"], "team": "Sales"}}],
                _speakerless=speakerless, _no_summary=no_summary,
            )
            out.append(rec)
        return out

    def view(self, rec: dict[str, Any], *, transcript: bool, summary: bool, actions: bool) -> dict[str, Any]:
        """A meeting as the API shows it (private ``_`` knobs stripped; content only when asked for)."""
        rid = str(rec["recording_id"])
        out = {k: v for k, v in rec.items() if not k.startswith("_") and k != "updated_at"}
        items = self.transcripts.get(rid)
        if rec.get("_speakerless") and items:
            items = [{"text": i["text"], "timestamp": i["timestamp"], "speaker": {}} for i in items]
        out["transcript"] = items if transcript else None
        out["default_summary"] = ({"template_name": "General", "markdown_formatted": self.summaries[rid]}
                                  if summary and not rec.get("_no_summary") else None)
        out["action_items"] = rec["action_items"] if actions else None
        return {**out, **self.garbled.get(rid, {})}

    # -- auth --------------------------------------------------------------------------------------

    def check_auth(self, req: FakeRequest) -> Reply | None:
        if req.header("x-api-key") not in self.keys:
            return FakeResponse(401, {"message": "Unauthorized"})
        return None

    # -- routes ------------------------------------------------------------------------------------

    @get("/meetings")
    def list_meetings(self, req: FakeRequest) -> Reply:
        q = req.query
        after = datetime.fromisoformat(q["created_after"].replace("Z", "+00:00")).timestamp() \
            if q.get("created_after") else None
        before = datetime.fromisoformat(q["created_before"].replace("Z", "+00:00")).timestamp() \
            if q.get("created_before") else None
        rows = [r for r in self.meetings.by_updated()
                if (after is None or _created(r) > after) and (before is None or _created(r) < before)]
        rows.sort(key=lambda r: (_created(r), r["recording_id"]))
        offset = int(base64.b64decode(q["cursor"]).decode()) if q.get("cursor") else 0
        page = rows[offset : offset + PAGE_SIZE]
        more = offset + PAGE_SIZE < len(rows)
        flags = {k: q.get(f"include_{k}") == "true" for k in ("transcript", "summary", "action_items")}
        return {"limit": PAGE_SIZE,
                "next_cursor": base64.b64encode(str(offset + PAGE_SIZE).encode()).decode() if more else None,
                "items": [self.view(r, transcript=flags["transcript"], summary=flags["summary"],
                                    actions=flags["action_items"]) for r in page]}

    @get("/recordings/{rid}/transcript")
    def transcript(self, req: FakeRequest, rid: str) -> Reply:
        if rid not in self.transcripts or self.meetings.get(rid) is None:
            return 404, {"message": "Not found"}
        return {"transcript": self.transcripts[rid]}

    @get("/recordings/{rid}/summary")
    def summary(self, req: FakeRequest, rid: str) -> Reply:
        if self.meetings.get(rid) is None:
            return 404, {"message": "Not found"}
        return {"summary": {"template_name": "General", "markdown_formatted": self.summaries[rid]}}

    def webhook_body(self, recording_id: int) -> dict[str, Any]:
        """The "new meeting content ready" body (webhook created with every ``include_*`` flag)."""
        rec = self.meetings.get(recording_id)
        assert rec is not None
        return self.view(rec, transcript=True, summary=True, actions=True)


def _created(rec: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(rec["created_at"]).replace("Z", "+00:00")).timestamp()


# -- conformance factories (see tests/plugins/test_conformance.py) -----------------------------------


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, count: int, clock: Any = None) -> tuple[Fathom, str]:
    """Start the fake with ``count`` meetings and one key; point the plugin at it."""
    fake = serve_fake(Fathom(count, clock=clock or FakeClock().time))
    monkeypatch.setenv("HISSUNO_FATHOM_API_URL", fake.url)
    return fake, fake.add_key("fathom_live_key_4b1d9e0c77aa")


def connect(store: Any, key: str) -> str:
    from hissuno_airflow.runtime.connect import connect_api_key

    out = connect_api_key(registry.get_plugin("fathom"), store, project_id=settings.default_project_id(),
                          user_id="tester", credentials={"api_key": key})
    return str(out["connection_id"])


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Nine meetings (three pages), connected through the plugin's own auth test."""
    _fake, key = serve(monkeypatch, serve_fake, 9)
    return ConformanceTarget(connection_id=connect(store, key), stream_ids=("meetings",))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A key the fake knows, and one it never issued."""
    _fake, key = serve(monkeypatch, serve_fake, 1)
    return AuthTarget(good={"api_key": key}, bad={"api_key": "fathom_revoked_key_000000"})


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """A connection whose ``webhook_secret`` is a ``whsec_`` secret; payloads are meetings."""
    fake, key = serve(monkeypatch, serve_fake, 1)
    cid = connect(store, key)
    signer = Signer(StandardWebhooks())
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})

    def payload(event_id: str) -> dict[str, Any]:
        return {**fake.webhook_body(1001), "recording_id": abs(hash(event_id)) % 10**9}

    return WebhookTarget(sign=signer, forge=signer.forged(), connection_id=cid, payload=payload)
