"""A Linear issue as ``ctx.ingest.issue`` fields: status from the workflow state type, priority from
Linear's 0-4 scale, type from the issue's labels."""

from __future__ import annotations

from typing import Any

STATUS_BY_STATE_TYPE = {
    "backlog": "open",
    "unstarted": "ready",
    "started": "in_progress",
    "completed": "resolved",
    "canceled": "closed",
}
"""Workflow state type -> hissuno status; anything else (``triage``, a missing state) is ``open``."""

PRIORITY = {1: "high", 2: "high", 3: "medium", 4: "low"}
"""Linear priority (1 urgent, 2 high, 3 medium, 4 low) -> hissuno; 0 (none) is left to the default."""

TYPE_BY_LABEL = (
    ("bug", ("bug", "defect", "regression")),
    ("feature_request", ("feature", "feature request", "feature-request")),
    ("change_request", ("improvement", "enhancement", "change request", "change-request")),
)
"""Label names (case-insensitive) naming an issue type, strongest first: a bug labelled also as an
improvement is a bug. Linear's own templates name these labels ``Bug``, ``Feature``, ``Improvement``."""


def issue_type(labels: list[str]) -> str:
    """``bug``, ``feature_request`` or ``change_request`` from label names (default ``change_request``)."""
    names = {name.strip().lower() for name in labels}
    for kind, words in TYPE_BY_LABEL:
        if names & set(words):
            return kind
    return "change_request"


def label_names(issue: dict[str, Any]) -> list[str]:
    """The label names of a GraphQL issue (``labels { nodes { name } }``), sorted for a stable hash."""
    labels = issue.get("labels") or {}
    nodes = labels.get("nodes") if isinstance(labels, dict) else labels
    return sorted(str(n["name"]) for n in nodes or [] if isinstance(n, dict) and n.get("name"))


def issue_fields(issue: dict[str, Any]) -> dict[str, Any]:
    """The ``ctx.ingest.issue`` fields of a GraphQL issue (``client.ISSUE_FIELDS``)."""
    state = issue.get("state") or {}
    team = issue.get("team") or {}
    labels = label_names(issue)
    fields: dict[str, Any] = {
        "external_id": str(issue["id"]),
        "name": issue.get("title") or issue.get("identifier") or str(issue["id"]),
        "description": issue.get("description") or "",
        "type": issue_type(labels),
        "status": STATUS_BY_STATE_TYPE.get(str(state.get("type") or ""), "open"),
        "updated_at": issue.get("updatedAt"),
        "custom_fields": {
            "linear_identifier": issue.get("identifier"),
            "linear_url": issue.get("url"),
            "linear_team_id": team.get("id"),
            "linear_state": state.get("name"),
            "linear_labels": labels,
        },
    }
    priority = PRIORITY.get(issue.get("priority") or 0)
    if priority is not None:
        fields["priority"] = priority
    return fields
