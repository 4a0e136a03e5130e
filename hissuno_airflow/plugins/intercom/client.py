"""Intercom's REST API (2.x) as named methods.

Composition, not inheritance: the runtime builds the ``ProviderClient`` (base URL, retries, 429 with
``X-RateLimit-Reset``, the connection's rate budget, the cancel signal, redacted logs) and
``IntercomClient`` adds the endpoints the plugin reads. Timestamps are UNIX seconds throughout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import httpx

from hissuno_airflow.kit import InputError
from hissuno_airflow.kit.http import BearerAuth, CursorPaginator, ProviderClient

API_VERSION = "2.13"
"""Sent as ``Intercom-Version`` on every call, so a workspace's default version cannot change the shapes."""
PAGE_SIZE = 150
"""Conversations per search page: Intercom's maximum."""
REGIONS = {"US": "API", "EU": "API_EU", "AU": "API_AU"}
"""Workspace region -> the named base URL of its API host."""


def region_of(value: Any) -> str:
    """A workspace region, upper-cased (``US`` when unset); InputError naming ``region`` otherwise."""
    region = "US" if value in (None, "") else str(value).strip().upper()
    if region not in REGIONS:
        msg = f"region: expected one of {', '.join(REGIONS)}; got {str(value)[:40]!r}"
        raise InputError(msg, field="region")
    return region


def base_for(region: Any) -> str:
    """The named base URL of a region's API host."""
    return REGIONS[region_of(region)]


def client_options(token: str) -> dict[str, Any]:
    """Keyword options of ``ctx.http_client`` for Intercom: bearer token, version header, error codes."""
    return {
        "auth": BearerAuth(token),
        "headers": {"Accept": "application/json", "Intercom-Version": API_VERSION},
        "error_code": error_code,
    }


def error_code(response: httpx.Response) -> str | None:
    """The first code of Intercom's ``error.list`` body (``unauthorized``, ``rate_limit_exceeded``...)."""
    try:
        body = response.json()
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        code = errors[0].get("code")
        return str(code) if code else None
    return None


def _epoch(value: datetime) -> int:
    return math.floor(value.timestamp())


def search_query(*, updated_from: datetime | None = None, updated_before: datetime | None = None,
                 created_from: datetime | None = None, created_to: datetime | None = None) -> dict[str, Any]:
    """A conversation search query; never empty (Intercom refuses a search without one).

    Intercom's ``>`` and ``<`` are inclusive (greater or equal, lower or equal) on whole seconds:
    the lower update bound starts one second early so the boundary second is read again even if the
    operator were strict (ingest is idempotent, so the overlap costs nothing); the exclusive upper bound
    ``updated_before`` becomes ``<= ceil(until) - 1``.
    """
    filters: list[dict[str, Any]] = []
    if updated_from is not None:
        filters.append({"field": "updated_at", "operator": ">", "value": max(0, _epoch(updated_from) - 1)})
    if updated_before is not None:
        filters.append({"field": "updated_at", "operator": "<",
                        "value": math.ceil(updated_before.timestamp()) - 1})
    if created_from is not None:
        filters.append({"field": "created_at", "operator": ">", "value": _epoch(created_from)})
    if created_to is not None:
        filters.append({"field": "created_at", "operator": "<", "value": _epoch(created_to)})
    if not filters:
        # Everything: every conversation was updated at or after the epoch.
        return {"field": "updated_at", "operator": ">", "value": 0}
    if len(filters) == 1:
        return filters[0]
    return {"operator": "AND", "value": filters}


class IntercomClient:
    """The Intercom endpoints the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http

    def me(self) -> dict[str, Any]:
        """The admin the token belongs to, with its workspace (``app``)."""
        me: dict[str, Any] = self.http.get_json("/me")
        return me

    def search_pages(self, query: Mapping[str, Any]) -> Iterator[tuple[list[dict[str, Any]], int | None]]:
        """Pages of ``POST /conversations/search`` oldest update first: (conversations, total_count).

        The cursor is ``pages.next.starting_after``, sent back as ``pagination.starting_after``.
        """
        body = {"query": dict(query), "pagination": {"per_page": PAGE_SIZE},
                "sort": {"field": "updated_at", "order": "ascending"}}
        paginator = CursorPaginator("pages.next.starting_after", "pagination.starting_after",
                                    cursor_location="json")
        for page in self.http.pages("POST", "/conversations/search", paginator, json=body,
                                    data_path="conversations"):
            total = page.body.get("total_count") if isinstance(page.body, Mapping) else None
            yield page.items, total if isinstance(total, int) else None

    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """One conversation with its parts (Intercom returns the 500 most recent), bodies as plain text;
        None when it no longer exists (404)."""
        response = self.http.get(f"/conversations/{conversation_id}", params={"display_as": "plaintext"},
                                 allow_statuses={404})
        if response.status_code == 404:
            return None
        conv: dict[str, Any] = self.http.parse_json(response)
        return conv

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        """One contact; None when it no longer exists (404)."""
        response = self.http.get(f"/contacts/{contact_id}", allow_statuses={404})
        if response.status_code == 404:
            return None
        contact: dict[str, Any] = self.http.parse_json(response)
        return contact


class ContactCache:
    """Each contact fetched at most once per run (many conversations share a customer)."""

    def __init__(self, api: IntercomClient) -> None:
        self.api = api
        self._seen: dict[str, dict[str, Any] | None] = {}

    def get(self, contact_id: str) -> dict[str, Any] | None:
        """The contact, from the API the first time."""
        if contact_id not in self._seen:
            self._seen[contact_id] = self.api.contact(contact_id)
        return self._seen[contact_id]
