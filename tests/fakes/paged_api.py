"""A generic paginated ticket API exposing every pagination style the kit supports.

Used by the kit's HTTP tests; a template for provider fakes. Every route needs a bearer token.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.server import FakeProvider, FakeRequest, FakeResponse, Reply, get, post


class PagedApi(FakeProvider):
    """``tickets`` served by page number, cursor, Link header, offset, next URL and POST body cursor."""

    name = "paged"
    require_auth = True

    def __init__(self, count: int = 25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tickets = [{"id": i, "subject": f"ticket {i}"} for i in range(1, count + 1)]
        self.max_limit = 100
        """Server-side cap on page sizes (Jira caps ``maxResults``)."""

    def _slice(self, offset: int, limit: int) -> list[dict[str, Any]]:
        return self.tickets[offset : offset + min(limit, self.max_limit)]

    @get("/api/v2/me")
    def me(self, req: FakeRequest) -> Reply:
        return {"user": {"id": 7, "name": "Agent"}}

    @get("/api/v2/tickets")
    def page_numbers(self, req: FakeRequest) -> Reply:
        """Zendesk-like: ``?page=&per_page=``, ``next_page`` absolute URL, ``count``."""
        page = int(req.query.get("page", "1"))
        per_page = int(req.query.get("per_page", "10"))
        items = self._slice((page - 1) * per_page, per_page)
        more = page * per_page < len(self.tickets)
        pages = -(-len(self.tickets) // per_page)
        next_page = req.url_for("/api/v2/tickets", page=page + 1, per_page=per_page) if more else None
        return {"tickets": items, "next_page": next_page, "count": len(self.tickets), "page_count": pages}

    @get("/slack/tickets.list")
    def cursor(self, req: FakeRequest) -> Reply:
        """Slack-like: ``?cursor=&limit=``; the last page has ``next_cursor: ""``."""
        offset = int(req.query.get("cursor") or "0")
        limit = int(req.query.get("limit", "10"))
        items = self._slice(offset, limit)
        nxt = offset + len(items)
        cursor = str(nxt) if nxt < len(self.tickets) else ""
        return {"ok": True, "tickets": items, "response_metadata": {"next_cursor": cursor}}

    @get("/github/issues")
    def link_header(self, req: FakeRequest) -> Reply:
        """GitHub-like: list body, ``Link`` header with ``next`` and ``last``."""
        page = int(req.query.get("page", "1"))
        per_page = int(req.query.get("per_page", "10"))
        items = self._slice((page - 1) * per_page, per_page)
        last = max(1, -(-len(self.tickets) // per_page))
        links = []
        if page < last:
            links.append(f'<{req.url_for("/github/issues", page=page + 1, per_page=per_page)}>; rel="next"')
        links.append(f'<{req.url_for("/github/issues", page=last, per_page=per_page)}>; rel="last"')
        return FakeResponse(200, items, {"Link": ", ".join(links)})

    @get("/jira/search")
    def offset(self, req: FakeRequest) -> Reply:
        """Jira-like: ``startAt``/``maxResults``, ``total``, and a server-side cap on the page size."""
        start = int(req.query.get("startAt", "0"))
        limit = int(req.query.get("maxResults", "50"))
        items = self._slice(start, limit)
        return {"issues": items, "startAt": start, "maxResults": min(limit, self.max_limit), "total": len(self.tickets)}

    @get("/posthog/events")
    def next_url(self, req: FakeRequest) -> Reply:
        """PostHog-like: ``limit``/``offset`` with a ``next`` absolute URL."""
        offset = int(req.query.get("offset", "0"))
        limit = int(req.query.get("limit", "10"))
        items = self._slice(offset, limit)
        more = offset + len(items) < len(self.tickets)
        nxt = req.url_for("/posthog/events", limit=limit, offset=offset + limit) if more else None
        return {"results": items, "next": nxt}

    @post("/notion/search")
    def body_cursor(self, req: FakeRequest) -> Reply:
        """Notion-like: POST body ``start_cursor``/``page_size``; ``next_cursor`` + ``has_more``."""
        body = req.json() or {}
        offset = int(body.get("start_cursor") or "0")
        limit = int(body.get("page_size", 10))
        items = self._slice(offset, limit)
        nxt = offset + len(items)
        more = nxt < len(self.tickets)
        return {"object": "list", "results": items, "next_cursor": str(nxt) if more else None, "has_more": more}

    @get("/html")
    def html(self, req: FakeRequest) -> Reply:
        """A maintenance page where JSON was expected."""
        return FakeResponse(200, body=b"<html>maintenance</html>", content_type="text/html")
