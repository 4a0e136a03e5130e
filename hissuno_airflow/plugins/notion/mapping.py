"""Notion pages as hissuno records: property values, the issue field mapping with its value maps, titles."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from .markdown import page_url, plain_text

ISSUE_TYPES = ("bug", "feature_request", "change_request")
ISSUE_PRIORITIES = ("low", "medium", "high")
ISSUE_STATUSES = ("open", "ready", "in_progress", "resolved", "closed")
DEFAULTS = {"type": "feature_request", "priority": "medium", "status": "open"}
"""What a row gets when its mapped value is empty or maps to nothing valid (the reference's defaults)."""


class FieldMapping(BaseModel):
    """Which database properties (by name) fill which issue fields; value maps translate option names."""

    title: str | None = None
    """Property holding the issue name (required: a run without it fails naming ``fieldMapping.title``)."""
    description: str | None = None
    """Property holding the description; else the page's own content as markdown."""
    type: str | None = None
    typeValueMap: dict[str, str] = Field(default_factory=dict)
    priority: str | None = None
    priorityValueMap: dict[str, str] = Field(default_factory=dict)
    status: str | None = None
    statusValueMap: dict[str, str] = Field(default_factory=dict)
    customFields: list[str] = Field(default_factory=list)
    """Properties copied into the issue's custom fields (key: the name lower-cased, non ``[a-z0-9_]`` -> ``_``)."""


def _user_name(user: Any) -> str | None:
    if isinstance(user, Mapping):
        name = user.get("name") or (user.get("person") or {}).get("email") or user.get("id")
        return str(name) if name else None
    return None


def property_value(prop: Mapping[str, Any] | None) -> Any:
    """A property's value: text for title/rich_text, a number, an option name, a list, a date start..."""
    if not isinstance(prop, Mapping):
        return None
    kind = str(prop.get("type") or "")
    value = prop.get(kind)
    if kind in ("title", "rich_text"):
        return plain_text(value)
    if kind in ("select", "status"):
        return value.get("name") if isinstance(value, Mapping) else None
    if kind == "multi_select":
        return [o.get("name") for o in value or [] if isinstance(o, Mapping)]
    if kind == "people":
        return [n for n in (_user_name(u) for u in value or []) if n]
    if kind == "date":
        return value.get("start") if isinstance(value, Mapping) else None
    if kind in ("created_by", "last_edited_by"):
        return _user_name(value)
    if kind in ("formula", "rollup"):
        if not isinstance(value, Mapping):
            return None
        inner = value.get(str(value.get("type")))
        if value.get("type") == "array":
            return [property_value(v) for v in inner or [] if isinstance(v, Mapping)]
        if value.get("type") == "date":
            return inner.get("start") if isinstance(inner, Mapping) else None
        return inner
    if kind in ("number", "checkbox", "url", "email", "phone_number", "created_time", "last_edited_time",
                "unique_id", "relation", "files"):
        if kind == "unique_id" and isinstance(value, Mapping):
            prefix = value.get("prefix")
            return f"{prefix}-{value.get('number')}" if prefix else value.get("number")
        if kind == "relation":
            return [r.get("id") for r in value or [] if isinstance(r, Mapping)]
        if kind == "files":
            return [f.get("name") for f in value or [] if isinstance(f, Mapping)]
        return value
    return None


def as_text(value: Any) -> str:
    """A property value as one line of text (lists joined with ``, ``)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value if v not in (None, ""))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def prop(page: Mapping[str, Any], name: str | None) -> Any:
    """The value of the property called ``name`` (None when unmapped or absent)."""
    if not name:
        return None
    return property_value((page.get("properties") or {}).get(name))


def page_title(page: Mapping[str, Any], fallback: str = "Untitled") -> str:
    """The text of the page's ``title`` property (a database row's too), else ``fallback``."""
    for value in (page.get("properties") or {}).values():
        if isinstance(value, Mapping) and value.get("type") == "title":
            return plain_text(value.get("title")).strip() or fallback
    return fallback


def database_title(database: Mapping[str, Any], fallback: str = "Untitled") -> str:
    """A database's title text."""
    return plain_text(database.get("title")).strip() or fallback


def mapped(raw: Any, value_map: Mapping[str, str], valid: tuple[str, ...], default: str) -> str:
    """A value through its map (which must give a valid hissuno value), else the raw value lower-cased
    with spaces as underscores when that is valid, else ``default``."""
    text = as_text(raw).strip()
    if not text:
        return default
    hit = value_map.get(text)
    if hit in valid:
        return str(hit)
    guess = text.lower().replace(" ", "_")
    return guess if guess in valid else default


def custom_key(name: str) -> str:
    """A property name as a custom-field key."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def issue_fields(page: Mapping[str, Any], mapping: FieldMapping, database_id: str, description: str) -> dict[str, Any]:
    """A database row as ``ctx.ingest.issue`` fields; ``description`` is the page content (used when no
    property is mapped to it, or the mapped one is empty)."""
    custom: dict[str, Any] = {"notion_page_id": page["id"], "notion_url": page.get("url") or page_url(str(page["id"])),
                              "notion_database_id": database_id}
    for name in mapping.customFields:
        value = prop(page, name)
        if value not in (None, "", []):
            custom[custom_key(name)] = value
    name = as_text(prop(page, mapping.title)).strip() or page_title(page)
    return {
        "external_id": str(page["id"]),
        "name": name,
        "description": as_text(prop(page, mapping.description)).strip() or description,
        "type": mapped(prop(page, mapping.type), mapping.typeValueMap, ISSUE_TYPES, DEFAULTS["type"]),
        "priority": mapped(prop(page, mapping.priority), mapping.priorityValueMap, ISSUE_PRIORITIES,
                           DEFAULTS["priority"]),
        "status": mapped(prop(page, mapping.status), mapping.statusValueMap, ISSUE_STATUSES, DEFAULTS["status"]),
        "custom_fields": custom,
        "updated_at": page.get("last_edited_time"),
    }


def knowledge_fields(page: Mapping[str, Any], content: str, parent_id: str | None) -> dict[str, Any]:
    """A page as ``ctx.ingest.knowledge`` fields: content embedded inline (the reference left it pending)."""
    page_id = str(page["id"])
    return {
        "external_id": page_id,
        "type": "notion",
        "name": page_title(page),
        "url": page.get("url") or page_url(page_id),
        "content": content,
        "origin": "notion_sync",
        "parent_external_id": parent_id,
        "custom_fields": {"notion_page_id": page_id},
        "updated_at": page.get("last_edited_time"),
    }


def trashed(obj: Mapping[str, Any]) -> bool:
    """Whether Notion reports the page or block in the trash (``in_trash``, or the older ``archived``)."""
    return bool(obj.get("in_trash") or obj.get("archived") or obj.get("is_archived"))
