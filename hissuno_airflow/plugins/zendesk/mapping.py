"""Zendesk records as hissuno records: a ticket and its public comments as a session, its requester as a
contact, the requester's (or ticket's) organization as a company (hissuno-reference.md §5.6).

Pure functions over provider JSON, shared by the sync and the webhook handlers so both write the same
thing and the second of them writes nothing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

INGESTED_STATUSES = frozenset({"solved", "closed"})
"""Only finished conversations are analysed, as in the reference."""
DELETED = "deleted"
"""The export's status for a deleted ticket."""

_TAG = re.compile(r"<[^>]+>")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def parse_time(value: Any) -> datetime | None:
    """A Zendesk ISO 8601 time (``2024-04-17T17:18:10Z``) as an aware datetime; None when absent or
    malformed (the ingest primitive then reports the record itself)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def strip_html(text: str) -> str:
    """Plain text of an HTML body: tags dropped, entities decoded, runs of blank lines collapsed."""
    plain = html.unescape(_TAG.sub(" ", text.replace("<br>", "\n").replace("</p>", "\n")))
    lines = [" ".join(line.split()) for line in plain.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def comment_text(comment: Mapping[str, Any]) -> str:
    """``plain_body``, else the HTML-stripped ``html_body`` or ``body``."""
    plain = comment.get("plain_body")
    if isinstance(plain, str) and plain.strip():
        return plain.strip()
    for key in ("html_body", "body"):
        value = comment.get(key)
        if isinstance(value, str) and value.strip():
            return strip_html(value)
    return ""


def messages(comments: Iterable[Mapping[str, Any]], requester: Mapping[str, Any] | None,
             requester_id: Any) -> list[dict[str, Any]]:
    """Public comments with text as session messages; the requester's are the user's, others an agent's."""
    out: list[dict[str, Any]] = []
    for comment in comments:
        if not comment.get("public", True):
            continue  # an internal note is not part of the conversation with the customer
        text = comment_text(comment)
        if not text:
            continue
        by_requester = requester_id is not None and str(comment.get("author_id")) == str(requester_id)
        out.append({
            "sender_type": "user" if by_requester else "human_agent",
            "content": text,
            "created_at": comment.get("created_at"),
            "sender_name": (requester or {}).get("name") if by_requester else None,
        })
    return out


def company_domain(org: Mapping[str, Any] | None) -> str | None:
    """The organization's first domain, or None.

    The reference fell back to the organization's *name* as a domain, which no company record accepts
    ("Acme Inc" is not a domain); an organization without domains is kept as a name on the session only.
    """
    for domain in (org or {}).get("domain_names") or []:
        if isinstance(domain, str) and domain.strip():
            return domain.strip().lower()
    return None


def company_fields(org: Mapping[str, Any]) -> dict[str, Any] | None:
    """``ctx.ingest.company`` fields of an organization with a domain (external id ``org:<id>``)."""
    domain = company_domain(org)
    if domain is None:
        return None
    return {
        "external_id": f"org:{org['id']}",
        "domain": domain,
        "name": org.get("name") or domain,
        "notes": org.get("notes") or None,
        "custom_fields": {"zendesk_organization_id": org["id"]},
    }


def contact_fields(user: Mapping[str, Any], org: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``ctx.ingest.contact`` fields of a requester with an email (external id ``user:<id>``).

    No ``updated_at``: a user edited after the newest ticket must not move the tickets' cursor.
    """
    email = user.get("email")
    if not isinstance(email, str) or not email.strip():
        return None
    return {
        "external_id": f"user:{user['id']}",
        "email": email.strip(),
        "name": user.get("name") or email.strip(),
        "phone": user.get("phone") or None,
        "company_domain": company_domain(org),
        "custom_fields": {"zendesk_user_id": user["id"]},
    }


def _joined(values: Any) -> str | None:
    if isinstance(values, list) and values:
        return ",".join(str(v) for v in values)
    return None


def session_fields(ticket: Mapping[str, Any], comments: Iterable[Mapping[str, Any]],
                   requester: Mapping[str, Any] | None, org: Mapping[str, Any] | None) -> dict[str, Any]:
    """``ctx.ingest.session`` fields of a ticket (external id: the ticket id)."""
    requester = requester or {}
    email = requester.get("email") or None
    metadata: dict[str, Any] = {
        "zendesk_ticket_id": str(ticket["id"]),
        "zendesk_tags": _joined(ticket.get("tags")),
        "zendesk_priority": ticket.get("priority"),
        "zendesk_group_id": str(ticket["group_id"]) if ticket.get("group_id") is not None else None,
        "name": requester.get("name"),
        "email": email,
        "phone": requester.get("phone"),
        "timezone": requester.get("time_zone"),
        "zendesk_user_tags": _joined(requester.get("tags")),
        "company": (org or {}).get("name"),
        "company_domain": company_domain(org),
        "userId": email or (str(requester["id"]) if requester.get("id") is not None else None),
    }
    msgs = messages(comments, requester, ticket.get("requester_id"))
    via = ticket.get("via")
    return {
        "external_id": str(ticket["id"]),
        "source": "zendesk",
        "session_type": "chat",
        "status": "closed",
        "name": ticket.get("subject") or "Zendesk Ticket",
        "user_metadata": {k: v for k, v in metadata.items() if v not in (None, "")},
        "messages": msgs,
        "created_at": ticket.get("created_at"),
        "first_message_at": msgs[0]["created_at"] if msgs else ticket.get("created_at"),
        "last_activity_at": ticket.get("updated_at"),
        "updated_at": ticket.get("updated_at"),
        "contact_email": email,
        "contact_name": requester.get("name") if email else None,
        "custom_fields": {k: v for k, v in {
            "zendesk_status": ticket.get("status"),
            "zendesk_type": ticket.get("type"),
            "zendesk_channel": via.get("channel") if isinstance(via, Mapping) else None,
        }.items() if v is not None},
    }
