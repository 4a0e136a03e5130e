"""Notion's REST API (``Notion-Version: 2022-06-28``) as named methods.

Composition, not inheritance: the runtime builds the ``ProviderClient`` (base URL, retries, 429 with
``Retry-After``, the connection's rate budget of about three requests a second, the cancel signal,
redacted logs) and ``NotionClient`` adds the endpoints the plugin reads. Every list is Notion's envelope
``{results, next_cursor, has_more}``: ``start_cursor`` goes back in the query (GET) or the body (POST).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from hissuno_airflow.kit import ProviderResponseError
from hissuno_airflow.kit.http import BearerAuth, CursorPaginator, ProviderClient

NOTION_VERSION = "2022-06-28"
"""Sent as ``Notion-Version`` on every call: the shapes below (``databases/{id}/query``, ``type:
"database"`` in search) are this version's; Notion refuses a request without the header."""
PAGE_SIZE = 100
"""Notion's maximum ``page_size``."""
MAX_DEPTH = 20
"""Nested blocks deeper than this are not fetched (Notion's own UI stops far earlier)."""


def client_options(token: str) -> dict[str, Any]:
    """Keyword options of ``ctx.http_client`` for Notion: bearer token, version header, error codes."""
    return {"auth": BearerAuth(token), "error_code": error_code,
            "headers": {"Notion-Version": NOTION_VERSION, "Accept": "application/json"}}


def error_code(response: httpx.Response) -> str | None:
    """Notion's error ``code`` (``unauthorized``, ``rate_limited``, ``object_not_found``...)."""
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, Mapping) else None
    return str(code) if code else None


def iso(value: datetime) -> str:
    """A cursor as Notion's timestamp filters take it (UTC, milliseconds, ``Z``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _pager(location: str = "query") -> CursorPaginator:
    return CursorPaginator("next_cursor", "start_cursor", cursor_location=location,  # type: ignore[arg-type]
                           has_more_path="has_more", stop_on_empty=False)


class NotionClient:
    """The Notion endpoints the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http

    def me(self) -> dict[str, Any]:
        """The integration's bot user (``GET /users/me``)."""
        me = self.http.get_json("/users/me")
        if not isinstance(me, dict) or me.get("object") != "user":
            raise ProviderResponseError("notion GET /users/me: the answer is not a user object", provider="notion")
        return me

    def search(self, kind: str, *, query: str | None = None, start_cursor: str | None = None,
               page_size: int = PAGE_SIZE) -> dict[str, Any]:
        """One page of ``POST /search`` for ``kind`` (``page`` or ``database``), newest edit first."""
        body: dict[str, Any] = {"filter": {"property": "object", "value": kind}, "page_size": page_size,
                                "sort": {"timestamp": "last_edited_time", "direction": "descending"}}
        if query:
            body["query"] = query
        if start_cursor:
            body["start_cursor"] = start_cursor
        out: dict[str, Any] = self.http.post_json("/search", json=body)
        return out

    def search_all(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every ``kind`` object shared with the integration, across all pages."""
        body = {"filter": {"property": "object", "value": kind}, "page_size": PAGE_SIZE}
        return self.http.paginate("POST", "/search", _pager("json"), json=body, data_path="results")

    def query_database(self, database_id: str, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Rows of a database edited at or after ``since`` (all rows when None), oldest edit first.

        ``on_or_after`` keeps the boundary minute (``last_edited_time`` is rounded to the minute, so a
        row edited later in the cursor's minute carries the cursor's stamp and must be read again).
        """
        body: dict[str, Any] = {"page_size": PAGE_SIZE,
                                "sorts": [{"timestamp": "last_edited_time", "direction": "ascending"}]}
        if since is not None:
            body["filter"] = {"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": iso(since)}}
        return self.http.paginate("POST", f"/databases/{database_id}/query", _pager("json"), json=body,
                                  data_path="results")

    def database(self, database_id: str) -> dict[str, Any]:
        """A database object with its property schema."""
        out: dict[str, Any] = self.http.get_json(f"/databases/{database_id}")
        return out

    def page(self, page_id: str) -> dict[str, Any] | None:
        """A page, or None when Notion answers 404 (deleted for good, or no longer shared)."""
        response = self.http.request("GET", f"/pages/{page_id}", allow_statuses={404})
        if response.status_code == 404:
            return None
        out: dict[str, Any] = self.http.parse_json(response)
        return out

    def children(self, block_id: str, *, max_blocks: int | None = None) -> list[dict[str, Any]]:
        """The direct children of a block or page, across every page of ``/blocks/{id}/children``."""
        out: list[dict[str, Any]] = []
        for block in self.http.paginate("GET", f"/blocks/{block_id}/children", _pager(),
                                        params={"page_size": PAGE_SIZE}, data_path="results"):
            out.append(block)
            if max_blocks is not None and len(out) >= max_blocks:
                break
        return out

    def block_tree(self, block_id: str, *, max_blocks: int | None = None, depth: int = 0) -> list[dict[str, Any]]:
        """The children of ``block_id`` with their nested children under ``children`` (fetched for every
        block with ``has_children``, except child pages and databases, which are documents of their own)."""
        blocks = self.children(block_id, max_blocks=max_blocks)
        for block in blocks:
            if (block.get("has_children") and depth < MAX_DEPTH
                    and block.get("type") not in ("child_page", "child_database")):
                block["children"] = self.block_tree(str(block["id"]), depth=depth + 1)
        return blocks
