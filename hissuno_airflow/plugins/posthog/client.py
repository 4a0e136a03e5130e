"""PostHog's private API (``/api/projects/{project_id}/...``) as named methods.

Composition: the runtime's ``ProviderClient`` (retries, 429 and Retry-After, the connection's rate
budget, redacted logs) signs with the personal API key as a bearer token; this class names endpoints.

Which host: ``host`` blank or ``us`` is US Cloud (base ``US``), ``eu`` EU Cloud (base ``EU``), anything
else a self-hosted instance through the ``{host}`` template of base ``API`` (validated by ``kit.urls``:
an http(s) URL whose host is public).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from hissuno_airflow.kit import InputError, ProviderResponseError
from hissuno_airflow.kit.http import NextUrlPaginator, ProviderClient

US_CLOUD = "https://us.posthog.com"
EU_CLOUD = "https://eu.posthog.com"
_CLOUD_ALIASES = {"": "us", "us": "us", US_CLOUD: "us", "https://app.posthog.com": "us",
                  "eu": "eu", EU_CLOUD: "eu"}

PAGE_SIZE = 100
"""Persons and definitions per page (PostHog's maximum for persons)."""

QUERY_PAGE_ROWS = 10_000
"""Rows per HogQL page; PostHog returns at most 50,000 per query."""

MAX_QUERY_PAGES = 10
"""HogQL queries per run. A personal key may run 120 HogQL queries an hour (providers.md 11.3), so one
run never spends more than a twelfth of that."""


def normalize_host(raw: Any) -> str:
    """``us``, ``eu`` or a self-hosted base URL without a trailing slash (validated later, by kit.urls)."""
    text = str(raw or "").strip().rstrip("/")
    return _CLOUD_ALIASES.get(text.lower(), text)


def base_name(host: str) -> str:
    """The declared base URL name the host selects."""
    return {"us": "US", "eu": "EU"}.get(host, "API")


def host_label(host: str) -> str:
    """The host name of the instance, for the account id (``us.posthog.com``)."""
    if host in ("us", "eu"):
        return f"{host}.posthog.com"
    parts = urlsplit(host)
    # The port is part of the instance: two self-hosted PostHogs on one machine are two accounts.
    return f"{parts.hostname}:{parts.port}" if parts.hostname and parts.port else (parts.hostname or host).lower()


def check_project_id(raw: Any) -> str:
    """A numeric project id, or an ``InputError`` naming ``project_id``."""
    text = str(raw or "").strip()
    if not text.isdigit():
        msg = f"project_id: expected the numeric project id from Project settings (like 12345); got {text!r}"
        raise InputError(msg, field="project_id")
    return text


def check_key(raw: Any) -> str:
    """A personal API key; a project token (``phc_``) only works for capture, so it is refused by name."""
    key = str(raw or "").strip()
    if key.startswith("phc_"):
        msg = ("api_key: this is a project API key (phc_...), which only sends events; create a personal"
               " API key (phx_...) in Account settings → Personal API keys")
        raise InputError(msg, field="api_key")
    return key


class PostHogClient:
    """The PostHog endpoints the plugin uses, for one project."""

    def __init__(self, http: ProviderClient, project_id: str) -> None:
        self.http = http
        self.project = f"/api/projects/{project_id}"

    def project_info(self) -> dict[str, Any] | None:
        """The project (``{id, name, ...}``); None when this key cannot see it (404)."""
        resp = self.http.get(f"{self.project}/", allow_statuses={404})
        if resp.status_code == 404:
            return None
        body = self.http.parse_json(resp)
        return body if isinstance(body, dict) else None

    def _list(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        # First page by limit/offset, then PostHog's absolute ``next`` links (same origin, checked).
        first = {"limit": PAGE_SIZE, "offset": 0, **(params or {})}
        return self.http.paginate("GET", f"{self.project}/{path}", NextUrlPaginator("next"), params=first,
                                  data_path="results")

    def persons(self) -> Iterator[dict[str, Any]]:
        """Every person of the project, in PostHog's order."""
        return self._list("persons/")

    def event_definitions(self) -> Iterator[dict[str, Any]]:
        """Every event definition."""
        return self._list("event_definitions/")

    def property_definitions(self, type: str) -> Iterator[dict[str, Any]]:
        """Every property definition of ``type`` (``event`` or ``person``)."""
        return self._list("property_definitions/", {"type": type})

    def hogql(self, query: str, values: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Rows of a HogQL query (``{limit}``/``{offset}`` in its text), page by page, as ``{column: value}``.

        Blocking mode, so PostHog answers with the rows (200) rather than a query id to poll.

        Raises:
            ProviderResponseError: PostHog answered without rows (a query still running, or an error),
                or more than ``MAX_QUERY_PAGES`` pages would be needed.
        """
        offset = 0
        for _page in range(MAX_QUERY_PAGES):
            body = self.http.post_json(f"{self.project}/query/", json={
                "query": {"kind": "HogQLQuery", "query": query.format(limit=QUERY_PAGE_ROWS, offset=offset),
                          "values": dict(values)},
                "refresh": "blocking", "name": "hissuno behavioral sync",
            })
            rows = body.get("results") if isinstance(body, dict) else None
            if not isinstance(rows, list) or body.get("error"):
                status = (body or {}).get("query_status") if isinstance(body, dict) else None
                msg = (f"posthog POST {self.project}/query/: no rows"
                       f" ({'query still running' if status else (body or {}).get('error') or 'unexpected body'})")
                raise ProviderResponseError(msg, provider="posthog", status=200)
            columns = [str(c) for c in body.get("columns") or []]
            yield from (dict(zip(columns, row, strict=False)) for row in rows)
            if not body.get("hasMore"):
                return
            offset += len(rows)
        msg = (f"posthog HogQL: more than {MAX_QUERY_PAGES * QUERY_PAGE_ROWS} (person, event) rows in the window;"
               " narrow it with the from_date filter")
        raise ProviderResponseError(msg, provider="posthog", status=200)


def hogql_time(ts: datetime) -> str:
    """A time as HogQL's ``toDateTime`` reads it."""
    return ts.strftime("%Y-%m-%d %H:%M:%S")

