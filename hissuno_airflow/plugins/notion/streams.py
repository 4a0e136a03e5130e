"""The ``issues`` and ``knowledge`` streams: sync handlers and the webhook handler they share.

Fixes over the reference (5.7): rows and pages are keyed by page id, so a second run updates what the
first made (the reference inserted duplicates every run); both read incrementally by
``last_edited_time`` (``on_or_after`` the cursor: Notion rounds it to the minute, so the boundary minute
is read again and ingest's content hash makes the repeat free); every database row and every page of
a tree is read (no 2,000-row or first-100 caps); child databases in a page tree are traversed; nested
blocks are fetched; knowledge is embedded when ingested (not left ``pending``); trashed pages, pages gone
from a tree and ``page.deleted`` events go through ``ctx.ingest.delete``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from hissuno_airflow.kit import InputError, ListCtx, StreamInstance, SyncCtx, WebhookCtx
from hissuno_airflow.kit.http import ProviderClient

from .client import NotionClient, client_options
from .mapping import (
    FieldMapping,
    as_text,
    database_title,
    issue_fields,
    knowledge_fields,
    page_title,
    prop,
    trashed,
)
from .markdown import blocks_markdown, page_url

DESCRIPTION_BLOCKS = 500
"""Blocks read for a row's description when no property is mapped to it (the reference's 5 pages of 100)."""
MAX_PARENT_HOPS = 20
"""How far a webhook's page is walked up to find whether it lies in a knowledge tree."""
UPDATE_EVENTS = frozenset({"page.created", "page.content_updated", "page.properties_updated", "page.moved",
                           "page.undeleted", "page.locked", "page.unlocked"})


class IssuesSettings(BaseModel):
    """Settings of an ``issues`` instance (one per database)."""

    databaseId: str | None = None
    """The database, when the stream is not an instance."""
    fieldMapping: FieldMapping = Field(default_factory=FieldMapping)
    """Which properties fill which issue fields."""


class KnowledgeSettings(BaseModel):
    """Settings of a ``knowledge`` instance (one per root page)."""

    rootPageId: str | None = None
    """The root page, when the stream is not an instance."""
    includeChildren: bool = True
    """Follow child pages and child databases below the root."""


def http(ctx: Any) -> ProviderClient:
    """A client signed with the connection's token."""
    client: ProviderClient = ctx.http_client("API", **client_options(str(ctx.credentials["access_token"])))
    return client


def _at(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- instances ---------------------------------------------------------------------------------------


def database_instances(ctx: ListCtx) -> list[StreamInstance]:
    """Every database shared with the integration (all pages of the search, not only the first)."""
    with http(ctx) as h:
        return [StreamInstance(id=str(d["id"]), label=database_title(d), metadata={"url": d.get("url")})
                for d in NotionClient(h).search_all("database")]


def page_instances(ctx: ListCtx) -> list[StreamInstance]:
    """Every page shared with the integration, as a possible root."""
    with http(ctx) as h:
        return [StreamInstance(id=str(p["id"]), label=page_title(p, "Untitled page"), metadata={"url": p.get("url")})
                for p in NotionClient(h).search_all("page") if not trashed(p)]


# -- issues ------------------------------------------------------------------------------------------


def _issue_target(ctx: SyncCtx | WebhookCtx) -> tuple[str, FieldMapping]:
    settings = ctx.settings
    database_id = ctx.instance_id or getattr(settings, "databaseId", None)
    if not database_id:
        raise InputError("databaseId: pick a database (the stream's instance) or set the databaseId setting",
                         field="databaseId")
    mapping = getattr(settings, "fieldMapping", None) or FieldMapping()
    if not mapping.title:
        raise InputError("fieldMapping.title: Field mapping requires at least a title mapping.",
                         field="fieldMapping.title")
    return str(database_id), mapping


def _ingest_row(ctx: SyncCtx | WebhookCtx, api: NotionClient, row: Mapping[str, Any], database_id: str,
                mapping: FieldMapping) -> None:
    if trashed(row):
        ctx.ingest.delete("issues", str(row["id"]))
        return
    description = ""
    if not as_text(prop(row, mapping.description)).strip():  # unmapped or empty: the page content
        description = blocks_markdown(api.block_tree(str(row["id"]), max_blocks=DESCRIPTION_BLOCKS))
    ctx.ingest.issue(**issue_fields(row, mapping, database_id, description))


def sync_issues(ctx: SyncCtx) -> None:
    """Rows of the database edited since the cursor, oldest edit first; a full run also deletes the
    issues of rows that left the database (trashed, deleted, moved)."""
    database_id, mapping = _issue_target(ctx)
    with http(ctx) as h:
        api = NotionClient(h)
        seen: set[str] = set()
        for row in api.query_database(database_id, since=ctx.since()):
            ctx.signal.raise_if_cancelled()
            seen.add(str(row["id"]))
            ctx.progress("found", external_id=str(row["id"]))
            _ingest_row(ctx, api, row, database_id, mapping)
        if ctx.sync_mode == "full":
            for gone in sorted(set(ctx.get_synced_ids()) - seen):
                page = api.page(gone)
                parent = (page or {}).get("parent") or {}
                if page is None or trashed(page) or str(parent.get("database_id")) != database_id:
                    ctx.ingest.delete("issues", gone)


# -- knowledge ---------------------------------------------------------------------------------------


def _knowledge_root(ctx: SyncCtx | WebhookCtx) -> str:
    root = ctx.instance_id or getattr(ctx.settings, "rootPageId", None)
    if not root:
        raise InputError("rootPageId: pick a root page (the stream's instance) or set the rootPageId setting",
                         field="rootPageId")
    return str(root)


def _page_markdown(api: NotionClient, blocks: list[dict[str, Any]]) -> str:
    for block in blocks:
        if block.get("has_children") and block.get("type") not in ("child_page", "child_database"):
            block["children"] = api.block_tree(str(block["id"]), depth=1)
    return blocks_markdown(blocks)


def sync_knowledge(ctx: SyncCtx) -> None:
    """The page tree below the root, breadth first: every page is visited (its top-level blocks name its
    child pages and databases), and a page edited since the cursor is converted and ingested. Pages this
    stream ingested before that are no longer in the tree are deleted."""
    root = _knowledge_root(ctx)
    include_children = bool(getattr(ctx.settings, "includeChildren", True))
    since = ctx.since()
    with http(ctx) as h:
        api = NotionClient(h)
        queue: deque[tuple[str, str | None, str, dict[str, Any] | None]] = deque([(root, None, "page", None)])
        visited: set[str] = set()
        while queue:
            ctx.signal.raise_if_cancelled()
            node_id, parent_id, kind, known = queue.popleft()
            if node_id in visited:
                continue
            visited.add(node_id)
            if kind == "database":
                for row in api.query_database(node_id):
                    queue.append((str(row["id"]), parent_id, "page", row))
                continue
            page = known or api.page(node_id)
            if page is None:
                ctx.logger.warning(f"notion page {node_id} is not readable (deleted or no longer shared); skipped")
                continue
            if trashed(page):
                ctx.ingest.delete("knowledge", node_id)
                continue
            blocks = api.children(node_id)
            if include_children:
                for block in blocks:
                    if block.get("type") == "child_page" and not trashed(block):
                        queue.append((str(block["id"]), node_id, "page", None))
                    elif block.get("type") == "child_database" and not trashed(block):
                        queue.append((str(block["id"]), node_id, "database", None))
            edited = _at(page.get("last_edited_time"))
            if since is not None and edited is not None and edited < since:
                continue
            ctx.progress("found", external_id=node_id, current=len(visited), total=len(visited) + len(queue))
            ctx.ingest.knowledge(**knowledge_fields(page, _page_markdown(api, blocks), parent_id))
        for gone in sorted(set(ctx.get_synced_ids()) - visited):
            ctx.ingest.delete("knowledge", gone)


def _tree_parent(api: NotionClient, page: Mapping[str, Any], root: str) -> tuple[bool, str | None]:
    """Whether ``page`` lies in the tree below ``root``, and the id of its parent page in that tree."""
    if str(page.get("id")) == root:
        return True, None
    parent: Mapping[str, Any] = page.get("parent") or {}
    direct: str | None = None
    for _ in range(MAX_PARENT_HOPS):
        kind = parent.get("type")
        if kind == "page_id":
            pid = str(parent.get("page_id"))
            direct = direct or pid
            if pid == root:
                return True, direct
            above = api.page(pid)
            if above is None:
                return False, None
            parent = above.get("parent") or {}
        elif kind == "database_id":
            database = api.database(str(parent.get("database_id")))
            parent = database.get("parent") or {}
        else:
            return False, None
    return False, None


# -- webhook -----------------------------------------------------------------------------------------


def on_event(ctx: WebhookCtx) -> None:
    """A Notion event is a signal: the page is read again and ingested as a sync would (so an old or
    replayed event never rolls anything back). ``page.deleted`` (and a page now in the trash) deletes.
    Every enabled instance sees every event and keeps only what lies in its database or tree."""
    event = ctx.payload if isinstance(ctx.payload, Mapping) else {}
    etype = str(event.get("type") or "")
    raw = event.get("entity")
    entity: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    kind: Literal["issues", "knowledge"] = "issues" if ctx.stream_key == "issues" else "knowledge"
    if entity.get("type") != "page" or not entity.get("id"):
        ctx.logger.info(f"notion event {etype or '(no type)'} on a {entity.get('type')}: ignored")
        return
    page_id = str(entity["id"])
    if etype == "page.deleted":
        ctx.ingest.delete(kind, page_id)
        return
    if etype not in UPDATE_EVENTS:
        ctx.logger.info(f"notion event {etype or '(no type)'} ignored")
        return
    with http(ctx) as h:
        api = NotionClient(h)
        page = api.page(page_id)
        if page is None or trashed(page):
            ctx.ingest.delete(kind, page_id)
            return
        if kind == "issues":
            database_id, mapping = _issue_target(ctx)
            if str((page.get("parent") or {}).get("database_id")) == database_id:
                _ingest_row(ctx, api, page, database_id, mapping)
            elif ctx.is_synced(page_id):
                ctx.ingest.delete("issues", page_id)  # moved out of this database
            return
        inside, parent_id = _tree_parent(api, page, _knowledge_root(ctx))
        if inside:
            ctx.ingest.knowledge(**knowledge_fields(page, _page_markdown(api, api.children(page_id)), parent_id))
        elif ctx.is_synced(page_id):
            ctx.ingest.delete("knowledge", page_id)  # moved out of this tree


__all__ = ["IssuesSettings", "KnowledgeSettings", "database_instances", "on_event", "page_instances",
           "page_url", "sync_issues", "sync_knowledge"]
