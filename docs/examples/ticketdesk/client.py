"""TicketDesk's API as named methods, and the mapping of its records to hissuno's.

Composition, not inheritance: the runtime builds the ``ProviderClient`` (``ctx.http_client("API", ...)``:
base URL, retries with backoff, 429 and Retry-After, the connection's rate budget, the cancel signal,
redacted logs) and ``TicketDeskClient`` wraps it. No retry, sleep or logging code belongs here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from hissuno_airflow.kit.http import CursorPaginator, ProviderClient

PAGE_SIZE = 5
"""Tickets per page; small so the example pages. A real client asks for the provider's maximum."""


class TicketDeskClient:
    """The TicketDesk endpoints the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http

    def account(self) -> dict[str, Any]:
        """The account the token belongs to."""
        account: dict[str, Any] = self.http.get_json("/api/me")["account"]
        return account

    def tickets(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Tickets updated after ``since`` (every ticket when None), oldest first, across all pages."""
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        if since is not None:
            params["updated_since"] = since.isoformat()
        return self.http.paginate("GET", "/api/tickets", CursorPaginator("next_cursor", "cursor"),
                                  params=params, data_path="tickets")


def issue_fields(ticket: dict[str, Any]) -> dict[str, Any]:
    """A TicketDesk ticket as ``ctx.ingest.issue`` fields."""
    return {
        "external_id": ticket["id"],
        "name": ticket["title"],
        "description": ticket["body"],
        "type": "bug",
        "updated_at": ticket["updated_at"],
    }
