"""GitHub issues as hissuno sessions (hissuno-reference.md §5.2): the body and every comment are messages,
the issue's author is the ``user`` and everyone else a ``human_agent``; metadata keys as the reference."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from hissuno_airflow.kit.types import SESSION_TAGS


def parse_time(value: Any) -> datetime | None:
    """GitHub's ``2024-01-02T03:04:05Z`` as an aware datetime (None when absent)."""
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def is_pull_request(issue: Mapping[str, Any]) -> bool:
    """The issues endpoints return pull requests too; they carry a ``pull_request`` key."""
    return issue.get("pull_request") is not None


def mapped_tags(labels: Iterable[Any], label_tag_map: Mapping[str, str]) -> list[str]:
    """Session tags for an issue's labels, by the stream's map (labels compared case-insensitively)."""
    by_label = {k.strip().lower(): v for k, v in label_tag_map.items() if v in SESSION_TAGS}
    tags: list[str] = []
    for label in labels:
        name = label.get("name") if isinstance(label, Mapping) else label
        tag = by_label.get(str(name or "").strip().lower())
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def session_fields(repo: str, issue: Mapping[str, Any], comments: Iterable[Mapping[str, Any]],
                   label_tag_map: Mapping[str, str]) -> dict[str, Any]:
    """``ctx.ingest.session`` fields of one issue with its comments."""
    author = issue.get("user") or {}
    login = str(author.get("login") or "") or None
    created = parse_time(issue.get("created_at"))
    messages: list[dict[str, Any]] = []
    body = str(issue.get("body") or "").strip()
    if body:
        messages.append({"sender_type": "user", "content": body, "created_at": created, "sender_name": login})
    for comment in comments:
        text = str(comment.get("body") or "").strip()
        if not text:
            continue
        who = comment.get("user") or {}
        same = author.get("id") is not None and who.get("id") == author.get("id")
        messages.append({"sender_type": "user" if same else "human_agent", "content": text,
                         "created_at": parse_time(comment.get("created_at")), "sender_name": who.get("login")})
    metadata: dict[str, Any] = {
        "github_issue_id": str(issue["id"]), "github_issue_number": issue.get("number"), "github_repo": repo,
        "github_issue_url": issue.get("html_url"), "github_username": login or "unknown",
    }
    if login:
        metadata["name"] = login
    tags = mapped_tags(issue.get("labels") or [], label_tag_map)
    if tags:
        metadata["tags"] = ",".join(tags)
    return {
        "external_id": str(issue["id"]),
        "source": "github",
        "session_type": "chat",
        "status": "closed",
        "name": f"#{issue.get('number')} {issue.get('title') or ''}".strip(),
        "user_metadata": metadata,
        "messages": messages,
        "first_message_at": created,
        "created_at": created,
        "last_activity_at": parse_time(issue.get("updated_at")),
        "updated_at": parse_time(issue.get("updated_at")),
        "custom_fields": {"state": issue.get("state"), "state_reason": issue.get("state_reason"),
                          "labels": [lb.get("name") for lb in issue.get("labels") or [] if isinstance(lb, Mapping)],
                          "author_association": issue.get("author_association")},
    }
