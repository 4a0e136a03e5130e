"""A Fathom meeting (with its transcript and summary) as ``ctx.ingest.session`` fields.

The reference behaviour (hissuno-reference.md 5.10): a ``[Meeting Summary]`` system message first, one
message per transcript line as ``[<speaker>]: <text>`` at recording start + the line's offset, an
``[Action Items]`` system message last; external invitees speak as ``user``, everyone else as
``human_agent``. Provider times are passed through as Fathom sent them, so a malformed one fails that
record's validation (it lands in ``ingest_errors``) instead of crashing the run.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

UNKNOWN_SPEAKER = "Unknown Speaker"


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time, or None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def iso(value: datetime | None) -> str | None:
    """A time as ISO text: the fields stay JSON, so a record that fails validation can be stored as is."""
    return value.isoformat() if value is not None else None


def offset_seconds(value: Any) -> float | None:
    """A transcript offset: ``HH:MM:SS`` (Fathom), ``MM:SS``, or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parts = [float(p) for p in value.strip().split(":")]
    except ValueError:
        return None
    total = 0.0
    for part in parts:
        total = total * 60 + part
    return total


def _speaker(item: dict[str, Any]) -> tuple[str | None, str | None]:
    """(display name, email) of a transcript item, in Fathom's shape or the older flat one."""
    speaker = item.get("speaker")
    if isinstance(speaker, dict):
        name = speaker.get("display_name") or speaker.get("name")
        email = speaker.get("matched_calendar_invitee_email") or speaker.get("email")
    else:
        name = speaker if isinstance(speaker, str) else item.get("speaker_name") or item.get("speakerName")
        email = item.get("speaker_email")
    return (str(name).strip() or None if name else None), (str(email).strip() or None if email else None)


def has_speakers(transcript: Any) -> bool:
    """Whether an embedded transcript is usable: a non-empty list naming at least one speaker."""
    return isinstance(transcript, list) and any(
        isinstance(item, dict) and any(_speaker(item)) for item in transcript
    )


def summary_text(summary: Any) -> str | None:
    """``default_summary`` as markdown: a string, or an object's ``markdown_formatted`` (or kin)."""
    if summary is None:
        return None
    if isinstance(summary, str):
        return summary.strip() or None
    if isinstance(summary, dict):
        for key in ("markdown_formatted", "markdown", "text", "summary"):
            value = summary.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None
    return json.dumps(summary, sort_keys=True)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _invitees(meeting: dict[str, Any]) -> list[dict[str, Any]]:
    raw = meeting.get("calendar_invitees")
    return [i for i in raw if isinstance(i, dict)] if isinstance(raw, list) else []


def _is_external(name: str | None, email: str | None, invitees: list[dict[str, Any]]) -> bool:
    """Match the speaker to an invitee by email, then by name; unmatched speakers count as internal."""
    if email:
        for inv in invitees:
            if str(inv.get("email") or "").lower() == email.lower():
                return bool(inv.get("is_external"))
    if name:
        for inv in invitees:
            names = {str(inv.get("name") or "").lower(), str(inv.get("matched_speaker_display_name") or "").lower()}
            if name.lower() in names:
                return bool(inv.get("is_external"))
    return False


def session_fields(meeting: dict[str, Any], transcript: list[dict[str, Any]] | None,
                   summary: str | None) -> dict[str, Any]:
    """The session of one meeting; ``transcript`` and ``summary`` after the fallbacks."""
    invitees = _invitees(meeting)
    created = meeting.get("created_at")
    start = (parse_time(meeting.get("recording_start_time")) or parse_time(meeting.get("scheduled_start_time"))
             or parse_time(created))
    rec_end = parse_time(meeting.get("recording_end_time"))
    rec_start = parse_time(meeting.get("recording_start_time"))
    duration = (rec_end - rec_start).total_seconds() if rec_end and rec_start else None
    end = rec_end or parse_time(meeting.get("scheduled_end_time")) or (
        start + timedelta(seconds=duration) if start and duration is not None else start)

    messages: list[dict[str, Any]] = []
    if summary:
        messages.append({"sender_type": "system", "content": f"[Meeting Summary]\n{summary}",
                         "created_at": iso(start)})
    for item in transcript or []:
        if not isinstance(item, dict):
            continue
        text = str(item.get("text") or "").strip()
        if not text:
            continue
        name, email = _speaker(item)
        speaker = name or email or UNKNOWN_SPEAKER
        offset = offset_seconds(item.get("timestamp", item.get("start_time", item.get("startTime"))))
        messages.append({
            "sender_type": "user" if _is_external(name, email, invitees) else "human_agent",
            "sender_name": speaker,
            "content": f"[{speaker}]: {text}",
            "created_at": iso(start + timedelta(seconds=offset) if start and offset is not None else start),
        })
    actions = [a for a in meeting.get("action_items") or [] if isinstance(a, dict) and a.get("description")]
    if actions:
        lines = []
        for a in actions:
            assignee = _obj(a.get("assignee"))
            who = assignee.get("name") or assignee.get("email")
            lines.append(f"- {a['description']}" + (f" ({who})" if who else ""))
        messages.append({"sender_type": "system", "content": "[Action Items]\n" + "\n".join(lines),
                         "created_at": iso(end)})

    external = next((i for i in invitees if i.get("is_external")), None)
    recorded_by = _obj(meeting.get("recorded_by"))
    metadata: dict[str, Any] = {
        "fathom_meeting_id": meeting.get("recording_id"),
        "fathom_url": meeting.get("url") or meeting.get("share_url"),
        "fathom_meeting_type": meeting.get("meeting_type"),
        "fathom_recorded_by": recorded_by.get("email") or recorded_by.get("name"),
        "fathom_participants_count": len(invitees),
        "fathom_duration_seconds": duration,
        "fathom_participants": [
            {"name": i.get("name"), "email": i.get("email"), "is_external": bool(i.get("is_external"))}
            for i in invitees
        ],
    }
    if external is not None:
        metadata.update(name=external.get("name"), email=external.get("email"),
                        userId=external.get("email") or external.get("name"))
    title = meeting.get("title") or meeting.get("meeting_title")
    if not title:
        title = f"Fathom Meeting - {start:%b} {start.day}, {start:%Y}" if start else "Fathom Meeting"
    recording_id = meeting.get("recording_id")
    return {
        # Empty when Fathom sent none: the record then fails validation into ingest_errors.
        "external_id": "" if recording_id is None else str(recording_id),
        "source": "fathom",
        "session_type": "meeting",
        "status": "closed",
        "name": title,
        "user_metadata": {k: v for k, v in metadata.items() if v is not None},
        "messages": messages,
        "first_message_at": iso(start),
        "last_activity_at": iso(end),
        "created_at": created,
        # Fathom meetings carry no update time: they appear once processing is done, so creation is
        # the provider time the cursor follows.
        "updated_at": created,
        "contact_email": (external or {}).get("email") or None,
        "contact_name": (external or {}).get("name") or None,
    }
