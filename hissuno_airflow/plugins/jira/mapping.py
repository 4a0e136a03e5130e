"""A Jira issue as ``ctx.ingest.issue`` fields (type, status and priority mapped as the reference does)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .adf import adf_to_text

FIELDS = ("summary", "description", "status", "priority", "issuetype", "project", "labels", "created", "updated",
          "reporter")
"""What search and issue reads ask for (enhanced search returns only ``id`` unless told)."""


def parse_time(value: Any) -> datetime | None:
    """Jira's ``2024-05-01T12:34:56.789+0000`` (or ISO 8601 with a colon or ``Z``) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (Jira leaves unset fields null)."""
    return value if isinstance(value, dict) else {}


def _name(value: Any) -> str:
    return str(value.get("name") or "") if isinstance(value, dict) else ""


def issue_type(fields: dict[str, Any]) -> str:
    name = _name(fields.get("issuetype")).lower()
    if "bug" in name:
        return "bug"
    if "story" in name or "feature" in name:
        return "feature_request"
    return "change_request"


def issue_status(fields: dict[str, Any]) -> str:
    status = obj(fields.get("status"))
    category = obj(status.get("statusCategory"))
    key = category.get("key")
    if key == "done":
        return "resolved"
    if key == "indeterminate":
        return "in_progress"
    return "open"


def issue_priority(fields: dict[str, Any]) -> str | None:
    """high / medium / low from the priority's name; None leaves ingest's default."""
    name = _name(fields.get("priority")).lower()
    if "high" in name:
        return "high"
    if "medium" in name:
        return "medium"
    if "low" in name:
        return "low"
    return None


def issue_fields(issue: dict[str, Any], site: dict[str, Any]) -> dict[str, Any]:
    """``ctx.ingest.issue`` keyword arguments for ``issue`` of ``site`` (``{cloud_id, url, name}``)."""
    fields = obj(issue.get("fields"))
    project = obj(fields.get("project"))
    out: dict[str, Any] = {
        "external_id": str(issue["id"]),
        "name": str(fields.get("summary") or "").strip() or str(issue.get("key") or issue["id"]),
        "description": adf_to_text(fields.get("description")),
        "type": issue_type(fields),
        "status": issue_status(fields),
        # An unreadable time is passed as it came, so the record fails validation naming updated_at (and
        # lands in ingest_errors) instead of being ingested without feeding the cursor.
        "updated_at": parse_time(fields.get("updated")) or fields.get("updated") or None,
        "custom_fields": {
            "jira_key": issue.get("key"),
            "jira_project_key": project.get("key"),
            "jira_cloud_id": site.get("cloud_id"),
            "jira_cloud_url": site.get("url"),
            "jira_issue_type": _name(fields.get("issuetype")) or None,
        },
    }
    priority = issue_priority(fields)
    if priority is not None:
        out["priority"] = priority
    return out
