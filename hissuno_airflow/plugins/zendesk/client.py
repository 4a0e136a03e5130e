"""Zendesk Support's API as named methods: who-am-I, the incremental ticket export, one ticket, its
comments, users and organizations (providers.md §6).

Composition, not inheritance: the runtime builds each ``ProviderClient`` (base URL from
``https://{subdomain}.zendesk.com``, retries, 429 and Retry-After, the connection's rate budget, the cancel
signal, redacted logs) and ``ZendeskClient`` wraps it. No retry, sleep or logging code belongs here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from hissuno_airflow.kit import ProviderResponseError
from hissuno_airflow.kit.http import BasicAuth, CursorPaginator, NamedBudget, ProviderClient

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
EXPORT_PAGE_SIZE = 1000
"""Tickets per export page: the endpoint's maximum."""
EXPORT_PER_MINUTE = 10
"""The incremental export endpoints allow 10 requests a minute (30 with the High Volume add-on)."""
COMMENT_PAGE_SIZE = 100
"""Comments per page: the endpoint's maximum."""
MAX_COMMENT_PAGES = 50
"""Zendesk keeps at most 5000 comments per ticket: 50 pages of 100."""

EXPORT_BUDGET = NamedBudget("export", EXPORT_PER_MINUTE, burst=1)
"""The incremental export's own budget of the account, beside the general one.

The export is the only endpoint with its own, much lower limit; pacing it (one request every six
seconds, no burst, so no sliding minute ever holds more than ten) keeps a run with many export pages
from discovering the limit through 429s, which it would still survive. The runtime shares it between
every process calling the account, like the account's general budget, and each export request waits
for both (``ctx.http_client(budget=...)``)."""


def basic_auth(credentials: Mapping[str, Any]) -> BasicAuth:
    """API-token auth: Basic ``{email}/token:{api_token}``."""
    return BasicAuth(f"{credentials['email']}/token", str(credentials["api_token"]))


def export_budget() -> Any:
    """The budget export clients are built with (a seam: tests pace it on a fake clock)."""
    return EXPORT_BUDGET


class ZendeskClient:
    """The Zendesk endpoints the plugin uses.

    ``export`` is a client for the incremental export (the export's own budget, then the account's);
    every other endpoint goes through ``http`` (the account's budget). Closing this closes both.
    """

    def __init__(self, http: ProviderClient, export: ProviderClient | None = None) -> None:
        self.http = http
        self.export = export if export is not None else http

    def __enter__(self) -> ZendeskClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()
        if self.export is not self.http:
            self.export.close()

    def me(self) -> dict[str, Any]:
        """The user the token authenticates (``id`` is null when Zendesk treats the caller as anonymous)."""
        body = self.http.get_json("/api/v2/users/me.json")
        user = body.get("user") if isinstance(body, Mapping) else None
        return dict(user) if isinstance(user, Mapping) else {}

    def ticket_export(self, start_time: int) -> Iterator[dict[str, Any]]:
        """Every ticket whose ``generated_timestamp`` is at or after ``start_time`` (unix seconds), in
        export order, deleted ones included (``status: "deleted"``).

        The first page asks by ``start_time``; each later page only by the previous ``after_cursor``,
        until ``end_of_stream``.
        """
        params: dict[str, Any] = {"start_time": start_time, "per_page": EXPORT_PAGE_SIZE}
        while True:
            body = self.export.get_json(EXPORT_PATH, params=params)
            tickets = body.get("tickets") if isinstance(body, Mapping) else None
            if not isinstance(tickets, list):
                msg = f"zendesk GET {EXPORT_PATH}: expected a 'tickets' list in the export page"
                raise ProviderResponseError(msg, provider="zendesk")
            yield from tickets
            cursor = body.get("after_cursor")
            if body.get("end_of_stream") or not cursor:
                return
            if cursor == params.get("cursor"):
                msg = f"zendesk GET {EXPORT_PATH}: the export cursor did not advance"
                raise ProviderResponseError(msg, provider="zendesk")
            params = {"cursor": cursor, "per_page": EXPORT_PAGE_SIZE}

    def ticket(self, ticket_id: str) -> dict[str, Any] | None:
        """One ticket, or None when Zendesk no longer has it (404)."""
        response = self.http.get(f"/api/v2/tickets/{ticket_id}.json", allow_statuses={404})
        if response.status_code == 404:
            return None
        ticket = self.http.parse_json(response).get("ticket")
        return dict(ticket) if isinstance(ticket, Mapping) else None

    def comments(self, ticket_id: str) -> Iterator[dict[str, Any]]:
        """A ticket's comments, oldest first, across cursor-paginated pages (public and internal)."""
        return self.http.paginate(
            "GET", f"/api/v2/tickets/{ticket_id}/comments.json",
            CursorPaginator("meta.after_cursor", "page[after]", has_more_path="meta.has_more"),
            params={"page[size]": COMMENT_PAGE_SIZE, "sort_order": "asc"}, data_path="comments",
            max_pages=MAX_COMMENT_PAGES,
        )

    def user(self, user_id: str) -> dict[str, Any] | None:
        """A user, or None when deleted (404)."""
        return self._one(f"/api/v2/users/{user_id}.json", "user")

    def organization(self, org_id: str) -> dict[str, Any] | None:
        """An organization, or None when deleted (404)."""
        return self._one(f"/api/v2/organizations/{org_id}.json", "organization")

    def _one(self, path: str, key: str) -> dict[str, Any] | None:
        response = self.http.get(path, allow_statuses={404})
        if response.status_code == 404:
            return None
        found = self.http.parse_json(response)
        item = found.get(key) if isinstance(found, Mapping) else None
        return dict(item) if isinstance(item, Mapping) else None


class Lookups:
    """Users and organizations of one run, each fetched at most once (a miss is remembered too)."""

    def __init__(self, client: ZendeskClient) -> None:
        self.client = client
        self._users: dict[str, dict[str, Any] | None] = {}
        self._orgs: dict[str, dict[str, Any] | None] = {}
        self._seen: set[Hashable] = set()

    def first(self, key: Hashable) -> bool:
        """True the first time ``key`` is asked about in this run (a record ingested once a run)."""
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def user(self, user_id: Any) -> dict[str, Any] | None:
        """The user with ``user_id`` (None for no id or a deleted user)."""
        if user_id in (None, ""):
            return None
        key = str(user_id)
        if key not in self._users:
            self._users[key] = self.client.user(key)
        return self._users[key]

    def organization(self, org_id: Any) -> dict[str, Any] | None:
        """The organization with ``org_id`` (None for no id or a deleted organization)."""
        if org_id in (None, ""):
            return None
        key = str(org_id)
        if key not in self._orgs:
            self._orgs[key] = self.client.organization(key)
        return self._orgs[key]
