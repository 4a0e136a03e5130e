"""A Gong call (its metadata, parties and transcript) as ``ctx.ingest.session`` fields, and the base URL check.

The mapping follows the reference (hissuno-reference.md 5.9): one ``meeting`` session per call, one
message per transcript monologue ``[<speaker>]: <text>``, the speaker found through the party whose
``speakerId`` matches (name, else email, else the speaker id, else "Unknown Speaker"), external
speakers as ``user`` and everyone else as ``human_agent``, each message timed at the call's start plus
its first sentence's offset (milliseconds). Sync and webhook both map through ``session_fields``, so a
call delivered by webhook and then listed by the next sync writes nothing the second time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from hissuno_airflow.kit import InputError

UNKNOWN_SPEAKER = "Unknown Speaker"
EXAMPLE_BASE = "https://us-12345.api.gong.io"


def normalize_base_url(raw: Any) -> str:
    """The customer's Gong base URL without ``/v2`` or a trailing slash; an https URL with a host.

    Raises:
        InputError: (``base_url``) empty, without a scheme (``api.gong.io``), not https, or with a
            query, fragment or user name.
    """
    text = str(raw or "").strip()
    expected = f"base_url: expected the https URL Gong gives your company, like {EXAMPLE_BASE!r}"
    if not text:
        raise InputError(f"{expected}; got nothing", field="base_url")
    if "://" not in text:
        raise InputError(f"{expected}; got {text[:80]!r} without a scheme: write 'https://{text[:80]}'",
                         field="base_url")
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        raise InputError(f"{expected}; got a malformed URL", field="base_url") from None
    if parts.scheme.lower() != "https":
        raise InputError(f"{expected}; got scheme {parts.scheme!r}: Gong serves its API over https only",
                         field="base_url")
    if not parts.hostname or "@" in parts.netloc or parts.query or parts.fragment:
        raise InputError(f"{expected}, with no user name, query or fragment", field="base_url")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v2")
    return f"https://{parts.netloc.lower()}{path}"


def parse_time(value: Any) -> datetime | None:
    """A Gong timestamp (ISO 8601 with offset), or None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _speaker(party: dict[str, Any] | None, speaker_id: Any) -> str:
    if party:
        for key in ("name", "emailAddress"):
            if isinstance(party.get(key), str) and party[key].strip():
                return str(party[key]).strip()
    return str(speaker_id) if speaker_id not in (None, "") else UNKNOWN_SPEAKER


def _external(party: dict[str, Any] | None) -> bool:
    return bool(party) and str((party or {}).get("affiliation") or "").lower() == "external"


def messages(started: datetime | None, transcript: list[dict[str, Any]],
             parties: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One message per monologue with text; unknown speakers count as internal (``human_agent``)."""
    by_speaker = {str(p["speakerId"]): p for p in parties if p.get("speakerId") not in (None, "")}
    out: list[dict[str, Any]] = []
    for monologue in transcript:
        sentences = [s for s in monologue.get("sentences") or [] if isinstance(s, dict)]
        text = " ".join(str(s.get("text") or "").strip() for s in sentences).strip()
        if not text:
            continue
        speaker_id = monologue.get("speakerId")
        party = by_speaker.get(str(speaker_id)) if speaker_id not in (None, "") else None
        speaker = _speaker(party, speaker_id)
        message: dict[str, Any] = {
            "sender_type": "user" if _external(party) else "human_agent",
            "content": f"[{speaker}]: {text}",
            "sender_name": speaker,
        }
        offset = sentences[0].get("start") if sentences else None
        if started is not None and isinstance(offset, (int, float)):
            message["created_at"] = started + timedelta(milliseconds=offset)
        out.append(message)
    return out


def session_fields(call: dict[str, Any], parties: list[dict[str, Any]],
                   transcript: list[dict[str, Any]]) -> dict[str, Any]:
    """A call (``/v2/calls`` record or ``metaData`` of ``calls/extensive``) as ``ctx.ingest.session`` fields.

    ``updated_at`` is the call's start (its scheduled time when it has none): Gong lists calls by that
    time, and it is the stream's high-water mark. A malformed time is passed on as it came, so the record
    fails validation and lands in ``ingest_errors`` instead of being ingested undated.
    """
    started = parse_time(call.get("started")) or parse_time(call.get("scheduled"))
    duration = call.get("duration")
    seconds = duration if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None
    externals = [p for p in parties if _external(p)]
    first = externals[0] if externals else {}
    email = first.get("emailAddress") or None
    name = first.get("name") or None
    metadata: dict[str, Any] = {
        "gong_call_id": str(call.get("id")),
        "gong_url": call.get("url"),
        "gong_duration_seconds": seconds,
        "gong_direction": call.get("direction"),
        "gong_scope": call.get("scope"),
        "gong_participants_count": len(parties),
        "gong_participants": [
            {"name": p.get("name"), "email": p.get("emailAddress"), "title": p.get("title"),
             "affiliation": p.get("affiliation")}
            for p in parties
        ],
    }
    if externals:
        metadata.update({"name": name, "email": email, "title": first.get("title")})
        if email or name:
            metadata["userId"] = email or name
    title = str(call.get("title") or "").strip()
    return {
        "external_id": str(call.get("id") or ""),
        "source": "gong",
        "session_type": "meeting",
        "status": "closed",
        "name": title or (f"Gong Call - {started:%b} {started.day}, {started.year}" if started else "Gong Call"),
        "user_metadata": metadata,
        "messages": messages(started, transcript, parties),
        "first_message_at": started,
        "created_at": started,
        "last_activity_at": started + timedelta(seconds=seconds) if started and seconds is not None else started,
        "updated_at": started if started is not None else (call.get("started") or call.get("scheduled")),
        "contact_email": email,
        "contact_name": name,
    }
