"""Closed sets of the plugin contract, in one place."""

from __future__ import annotations

from typing import Literal, get_args

StreamKind = Literal["sessions", "contacts", "companies", "issues", "knowledge", "analytics"]
Frequency = Literal["manual", "1h", "6h", "24h", "webhook"]
Category = Literal["interactive", "sessions", "issues", "knowledge", "analytics", "customer_data"]
SyncMode = Literal["incremental", "full"]
TriggerSource = Literal["manual", "cron", "webhook", "backfill"]
AuthType = Literal["api_key", "oauth2", "github_app", "custom"]
SenderType = Literal["user", "ai", "human_agent", "system"]
IssueType = Literal["bug", "feature_request", "change_request"]
IssueStatus = Literal["open", "ready", "in_progress", "resolved", "closed"]
IssuePriority = Literal["low", "medium", "high"]
MergeStrategy = Literal["fill_nulls", "overwrite", "never_overwrite"]
KnowledgeType = Literal[
    "codebase", "website", "docs_portal", "uploaded_doc", "raw_text", "notion", "folder"
]
SessionTag = Literal[
    "general_feedback", "wins", "losses", "bug", "feature_request", "change_request"
]

STREAM_KINDS: tuple[str, ...] = get_args(StreamKind)
FREQUENCIES: tuple[str, ...] = get_args(Frequency)
CATEGORIES: tuple[str, ...] = get_args(Category)
SESSION_TAGS: tuple[str, ...] = get_args(SessionTag)
DEFAULT_FREQUENCIES: tuple[Frequency, ...] = ("manual", "1h", "6h", "24h")
