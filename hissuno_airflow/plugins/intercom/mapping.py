"""Intercom conversations (with their first contact) as ``ctx.ingest.session`` fields.

Shared by the sync and the webhook handler, so a webhook and the next sync agree on every field and
the second writes nothing. Values the provider sends in an unexpected shape are passed on as they are:
the ingest primitive then refuses that one record into ``ingest_errors`` and the run goes on.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

SKIPPED_PARTS = frozenset({"assignment", "close"})
"""Part types that carry no customer-facing text (the reference skips them)."""
SENDERS = {"user": "user", "lead": "user", "contact": "user", "admin": "human_agent", "team": "human_agent",
           "bot": "ai"}
"""Intercom author type -> hissuno sender. Leads and contacts are customers too (the reference mapped a
lead to ``human_agent``); anything unknown is taken for an agent, as the reference does."""
DEFAULT_NAME = "Intercom Conversation"
_TAG = re.compile(r"<[^>]+>")


def _time(value: Any) -> Any:
    """UNIX seconds as ISO 8601 text (JSON-safe, so a refused record can be kept as it was sent);
    anything else unchanged: the record's validation judges it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return datetime.fromtimestamp(value, UTC).isoformat()


def _iso(value: Any) -> str | None:
    when = _time(value)
    return when if isinstance(when, str) and isinstance(value, (int, float)) else None


def _text(body: Any) -> str:
    """A body as text: tags stripped (plain-text mode already has none), entities decoded, trimmed."""
    if not isinstance(body, str):
        return ""
    return html.unescape(_TAG.sub(" ", body)).strip() if "<" in body else body.strip()


def sender(author: Any) -> str:
    """The hissuno sender type of a part or source author."""
    kind = author.get("type") if isinstance(author, Mapping) else None
    return SENDERS.get(str(kind), "human_agent")


def messages(conv: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The opening message (``source``), then every part with text that is not an assignment or close."""
    out: list[dict[str, Any]] = []
    source = conv.get("source") or {}
    if text := _text(source.get("body")):
        author = source.get("author") or {}
        out.append({"sender_type": sender(author), "content": text, "created_at": _time(conv.get("created_at")),
                    "sender_name": author.get("name") or None})
    parts = (conv.get("conversation_parts") or {}).get("conversation_parts") or []
    for part in parts:
        if part.get("part_type") in SKIPPED_PARTS or not (text := _text(part.get("body"))):
            continue
        author = part.get("author") or {}
        out.append({"sender_type": sender(author), "content": text, "created_at": _time(part.get("created_at")),
                    "sender_name": author.get("name") or None})
    return out


def session_name(conv: Mapping[str, Any], msgs: list[dict[str, Any]]) -> str:
    """The title; else the first 50 characters of the first message (47 and "..." when longer)."""
    title = conv.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    if msgs:
        first = " ".join(str(msgs[0]["content"]).split())
        return first if len(first) <= 50 else first[:47] + "..."
    return DEFAULT_NAME


def _names(listing: Any) -> list[str]:
    """Names in an Intercom list (``{"data": [...]}``, ``{"tags": [...]}``, or a bare list)."""
    if isinstance(listing, Mapping):
        listing = listing.get("data", listing.get("tags", listing.get("companies")))
    if not isinstance(listing, list):
        return []
    return [str(x["name"]) for x in listing if isinstance(x, Mapping) and x.get("name")]


def contact_metadata(contact: Mapping[str, Any]) -> dict[str, Any]:
    """The reference's metadata keys from a contact; empty values are left out."""
    location = contact.get("location") or {}
    meta: dict[str, Any] = {
        "name": contact.get("name"), "email": contact.get("email"), "phone": contact.get("phone"),
        "role": contact.get("role"), "city": location.get("city"), "region": location.get("region"),
        "country": location.get("country"), "browser": contact.get("browser"), "os": contact.get("os"),
        "last_seen_at": _iso(contact.get("last_seen_at")), "signed_up_at": _iso(contact.get("signed_up_at")),
    }
    if companies := _names(contact.get("companies")):
        meta["company"] = companies[0]
    if tags := _names(contact.get("tags")):
        meta["tags"] = ", ".join(tags)
    profiles = (contact.get("social_profiles") or {}).get("data") or []
    for profile in profiles:
        if isinstance(profile, Mapping) and profile.get("name") and profile.get("url"):
            meta[f"social_{str(profile['name']).lower()}"] = profile["url"]
    for key, value in (contact.get("custom_attributes") or {}).items():
        if isinstance(value, (str, int, float, bool)):
            meta[f"custom_{key}"] = value
    meta["userId"] = contact.get("external_id") or contact.get("id")
    return {k: v for k, v in meta.items() if v not in (None, "")}


def first_contact(conv: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first contact listed on a conversation (``{type, id, external_id}``), if any."""
    listed = (conv.get("contacts") or {}).get("contacts") or []
    return dict(listed[0]) if listed and isinstance(listed[0], Mapping) and listed[0].get("id") else None


def session_fields(conv: Mapping[str, Any], contact: Mapping[str, Any] | None) -> dict[str, Any]:
    """A conversation (as ``GET /conversations/{id}?display_as=plaintext`` returns it) as session fields.

    ``contact`` is the full first contact, or the reference embedded in the conversation when it could
    not be read. Every conversation is ``closed``, as the reference ingests it.
    """
    msgs = messages(conv)
    meta: dict[str, Any] = {"intercom_conversation_id": str(conv.get("id"))}
    if contact:
        meta.update(contact_metadata(contact))
    email = contact.get("email") if contact else None
    name = contact.get("name") if contact else None
    return {
        "external_id": conv.get("id"),
        "source": "intercom",
        "session_type": "chat",
        "status": "closed",
        "name": session_name(conv, msgs),
        "user_metadata": meta,
        "messages": msgs,
        "first_message_at": _time(conv.get("created_at")),
        "created_at": _time(conv.get("created_at")),
        "last_activity_at": _time(conv.get("updated_at")),
        "updated_at": _time(conv.get("updated_at")),
        "contact_email": email or None,
        "contact_name": name or None,
    }
