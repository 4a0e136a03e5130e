"""A Slack thread as a session record; its authors as contacts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .decide import is_bot, taken_over

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
CONTENT_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "bot_message", "me_message"})
"""Message subtypes that carry conversation (joins, topic changes and the like do not)."""


def thread_external_id(team_id: str, channel_id: str, thread_ts: str) -> str:
    """One session per thread: workspace, channel and the parent's ts."""
    return f"{team_id}:{channel_id}:{thread_ts}"


def slack_time(ts: Any) -> datetime | None:
    """A Slack ts (``"1700000000.000100"``) as an aware datetime."""
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def ts_key(ts: Any) -> float:
    try:
        return float(ts)
    except (TypeError, ValueError):
        return 0.0


@dataclass(frozen=True)
class Author:
    """A message author as ``users.info`` describes them."""

    id: str
    name: str | None
    email: str | None
    external: bool
    """The email's domain is not one of the workspace's (unknown email: not external)."""
    title: str | None = None


def author_from_user(user: Mapping[str, Any], internal_domains: Sequence[str]) -> Author:
    profile = user.get("profile") if isinstance(user.get("profile"), Mapping) else {}
    assert isinstance(profile, Mapping)
    email = str(profile.get("email") or "").strip() or None
    name = (str(profile.get("real_name") or user.get("real_name") or profile.get("display_name")
                or user.get("name") or "").strip() or None)
    domain = email.rsplit("@", 1)[-1].lower() if email and "@" in email else None
    # No known workspace domain: every author with an email counts as external (as the reference compares
    # against a missing primary domain).
    external = domain is not None and domain not in {d.lower().lstrip("@") for d in internal_domains}
    return Author(id=str(user.get("id") or ""), name=name, email=email, external=external,
                  title=str(profile.get("title") or "").strip() or None)


def readable(text: str, authors: Mapping[str, Author], bot_user_id: str) -> str:
    """Mentions as ``@Name``; the bot's own mention removed."""
    def sub(m: re.Match[str]) -> str:
        uid = m.group(1)
        if uid == bot_user_id:
            return ""
        who = authors.get(uid)
        return f"@{who.name}" if who and who.name else f"@{uid}"
    return re.sub(r"[ \t]{2,}", " ", _MENTION.sub(sub, text or "")).strip()


def conversation(thread: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The thread's messages that carry conversation, oldest first."""
    msgs = [m for m in thread if m.get("subtype") in CONTENT_SUBTYPES]
    return sorted(msgs, key=lambda m: ts_key(m.get("ts")))


def session_fields(
    *, team_id: str, channel_id: str, channel_name: str | None, thread_ts: str,
    thread: Sequence[Mapping[str, Any]], authors: Mapping[str, Author], bot_user_id: str,
) -> dict[str, Any]:
    """The ``ingest.session`` fields of a thread (parent first)."""
    msgs = conversation(thread)
    messages: list[dict[str, Any]] = []
    for m in msgs:
        bot = is_bot(m, bot_user_id)
        who = authors.get(str(m.get("user") or ""))
        text = readable(str(m.get("text") or ""), authors, bot_user_id)
        if not text:
            text = "(attachment)" if m.get("files") or m.get("attachments") else ""
        if not text:
            continue
        messages.append({"sender_type": "ai" if bot else "user", "content": text,
                         "created_at": slack_time(m.get("ts")),
                         "sender_name": "bot" if bot else (who.name if who else None)})
    humans = [authors[str(m.get("user"))] for m in msgs
              if not is_bot(m, bot_user_id) and str(m.get("user") or "") in authors]
    customer = next((a for a in humans if a.external and a.email), None)
    starter = humans[0] if humans else None
    times = [t for m in msgs for t in (slack_time(m.get("ts")),
                                       slack_time((m.get("edited") or {}).get("ts")) if isinstance(m.get("edited"), Mapping) else None) if t]
    first = min(times) if times else slack_time(thread_ts)
    last = max(times) if times else first
    parent_text = messages[0]["content"] if messages else ""
    metadata: dict[str, Any] = {
        "slack_workspace_id": team_id, "slack_channel_id": channel_id, "slack_thread_ts": thread_ts,
        "slack_user_id": starter.id if starter else None,
        "is_external": any(a.external for a in humans),
        "human_takeover": taken_over(msgs, bot_user_id),
        "bot_participated": any(is_bot(m, bot_user_id) for m in msgs),
    }
    if customer is not None:
        metadata["email"] = customer.email
        if customer.name:
            metadata["name"] = customer.name
    return {
        "external_id": thread_external_id(team_id, channel_id, thread_ts),
        "source": "slack", "session_type": "chat", "status": "active",
        "name": f"Slack: #{channel_name or channel_id}",
        "description": parent_text[:280] or None,
        "user_metadata": metadata,
        "messages": messages,
        "first_message_at": first, "last_activity_at": last, "created_at": first, "updated_at": last,
        "contact_email": customer.email if customer else None,
        "contact_name": customer.name if customer else None,
    }


def contact_fields(author: Author) -> dict[str, Any] | None:
    """An external author with an email as a contact (the workspace's own people are not contacts)."""
    if not author.external or not author.email:
        return None
    return {"external_id": author.id, "email": author.email, "name": author.name, "title": author.title,
            "custom_fields": {"slack_user_id": author.id}}
