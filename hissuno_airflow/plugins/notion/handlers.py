"""Custom handlers of a Notion connection (``/api/plugins/notion/<connection>/<name>``), as the reference's
``databases``, ``databaseSchema``, ``pages`` and ``childPages`` (4.6), plus ``webhookVerification``."""

from __future__ import annotations

from typing import Any

from hissuno_airflow.kit import InputError, NotFoundError, Request, RouteCtx

from .client import NotionClient
from .mapping import database_title, page_title
from .streams import http

PAGES_PAGE_SIZE = 50


def _api_ctx(ctx: RouteCtx) -> RouteCtx:
    if not ctx.credentials or not ctx.credentials.get("access_token"):
        raise NotFoundError("Connection required.", field="connection_id")
    return ctx


def _required(request: Request, name: str) -> str:
    value = (request.query.get(name) or "").strip()
    if not value:
        raise InputError(f"{name}: required query parameter", field=name)
    return value


def databases(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """Every database shared with the integration: ``{databases: [{id, title, url}]}``."""
    with http(_api_ctx(ctx)) as h:
        return {"databases": [{"id": d["id"], "title": database_title(d), "url": d.get("url")}
                              for d in NotionClient(h).search_all("database")]}


def database_schema(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """``?databaseId=``: the Notion database object with its properties: ``{database}``."""
    database_id = _required(request, "databaseId")
    with http(_api_ctx(ctx)) as h:
        return {"database": NotionClient(h).database(database_id)}


def pages(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """``?query=&startCursor=``: one page of 50 shared pages: ``{pages, hasMore, nextCursor}``."""
    with http(_api_ctx(ctx)) as h:
        out = NotionClient(h).search("page", query=request.query.get("query") or None,
                                     start_cursor=request.query.get("startCursor") or None,
                                     page_size=PAGES_PAGE_SIZE)
    return {"pages": [{"id": p["id"], "title": page_title(p), "url": p.get("url"), "icon": p.get("icon")}
                      for p in out.get("results") or []],
            "hasMore": bool(out.get("has_more")), "nextCursor": out.get("next_cursor")}


def child_pages(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """``?pageId=``: the page's child pages (every block page read): ``{pages: [{id, title}]}``."""
    page_id = _required(request, "pageId")
    with http(_api_ctx(ctx)) as h:
        blocks = NotionClient(h).children(page_id)
    return {"pages": [{"id": b["id"], "title": (b.get("child_page") or {}).get("title") or "Untitled"}
                      for b in blocks if b.get("type") == "child_page"]}


def webhook_verification(request: Request, ctx: RouteCtx) -> dict[str, Any]:
    """The verification token Notion posted to this connection's webhook URL, to paste back into
    Notion's *Verify* dialog (only signed-in users reach this route)."""
    token = (ctx.settings or {}).get("webhook_secret")
    return {"received": bool(token), "verification_token": token or None}
