"""Gong's API v2 as named methods (providers.md section 9), composing the runtime's ``ProviderClient``.

Every list answer carries ``records: {totalRecords, currentPageSize, currentPageNumber, cursor}`` and
``cursor`` is there only while more pages exist: it is read from ``records.cursor`` (the reference read a
top-level ``cursor`` that Gong never sends, so it stopped after the first page) and sent back as the
query parameter ``cursor`` (GET) or the body field ``cursor`` (POST). Retries, 429 with ``Retry-After``,
the 3-per-second budget and redaction are the runtime's; nothing here sleeps or retries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from hissuno_airflow.kit import ProviderResponseError
from hissuno_airflow.kit.http import CursorPaginator, ProviderClient

BATCH_SIZE = 100
"""Call ids per ``calls/extensive`` and ``calls/transcript`` request: Gong's page size (providers.md 9.2)."""

NO_CALLS = "No calls found"
"""Gong answers a listing with no calls in its window with a 404 carrying this error text."""


def gong_time(value: datetime) -> str:
    """A datetime as Gong's filters take it (ISO 8601 with offset, UTC)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


class GongClient:
    """The Gong endpoints the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http
        # The stored base is the customer's host; an operator's override may already end in /v2.
        self.prefix = "" if http.base_url.rstrip("/").endswith("/v2") else "/v2"

    def workspaces(self) -> list[dict[str, Any]]:
        """``GET /v2/workspaces``: the company's workspaces (the credential test and the account's id)."""
        body = self.http.get_json(f"{self.prefix}/workspaces") or {}
        found = body.get("workspaces") if isinstance(body, dict) else None
        return [w for w in found or [] if isinstance(w, dict)]

    def calls(self, since: datetime | None, until: datetime | None) -> Iterator[dict[str, Any]]:
        """``GET /v2/calls``: calls started in ``[since, until)`` (either bound optional), every page."""
        params: dict[str, Any] = {}
        if since is not None:
            params["fromDateTime"] = gong_time(since)
        if until is not None:
            params["toDateTime"] = gong_time(until)
        path = f"{self.prefix}/calls"
        first = self.http.get(path, params=params, allow_statuses={404})
        if first.status_code == 404:
            # An empty window is a 404 at Gong; any other 404 (a wrong base URL) is a failure.
            body = self.http.parse_json(first) if first.content.strip() else None
            errors = body.get("errors") if isinstance(body, dict) else None
            if any(NO_CALLS.lower() in str(e).lower() for e in errors or []):
                return
            raise ProviderResponseError(f"gong GET {first.request.url.path}: 404 Not Found", provider="gong",
                                        status=404)
        body = self.http.parse_json(first)
        yield from _list(body, "calls")
        cursor = _cursor(body)
        if cursor is None:
            return
        yield from self.http.paginate("GET", path, CursorPaginator("records.cursor", "cursor"),
                                      params={**params, "cursor": cursor}, data_path="calls")

    def parties(self, call_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """``POST /v2/calls/extensive`` exposing parties, in batches: call id -> its parties."""
        found: dict[str, list[dict[str, Any]]] = {}
        for batch in _batches(call_ids):
            body = {"filter": {"callIds": batch}, "contentSelector": {"exposedFields": {"parties": True}}}
            for call in self._post_pages("calls/extensive", body, "calls"):
                meta = call.get("metaData") or {}
                if isinstance(meta, dict) and meta.get("id") is not None:
                    found[str(meta["id"])] = [p for p in call.get("parties") or [] if isinstance(p, dict)]
        return found

    def transcripts(self, call_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """``POST /v2/calls/transcript``, in batches: call id -> its monologues (calls without one are absent)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for batch in _batches(call_ids):
            for item in self._post_pages("calls/transcript", {"filter": {"callIds": batch}}, "callTranscripts"):
                if item.get("callId") is not None:
                    found[str(item["callId"])] = [m for m in item.get("transcript") or [] if isinstance(m, dict)]
        return found

    def _post_pages(self, path: str, body: dict[str, Any], data_path: str) -> Iterable[dict[str, Any]]:
        paginator = CursorPaginator("records.cursor", "cursor", cursor_location="json")
        for item in self.http.paginate("POST", f"{self.prefix}/{path}", paginator, json=body, data_path=data_path):
            if isinstance(item, dict):
                yield item


def _list(body: Any, key: str) -> list[dict[str, Any]]:
    items = body.get(key) if isinstance(body, dict) else None
    if items is not None and not isinstance(items, list):
        raise ProviderResponseError(f"gong: expected a list at {key!r}", provider="gong")
    return [i for i in items or [] if isinstance(i, dict)]


def _cursor(body: Any) -> str | None:
    records = body.get("records") if isinstance(body, dict) else None
    cursor = records.get("cursor") if isinstance(records, dict) else None
    return str(cursor) if cursor not in (None, "") else None


def _batches(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), BATCH_SIZE):
        yield list(ids[start : start + BATCH_SIZE])
