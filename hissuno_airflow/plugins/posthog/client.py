"""PostHog's private API (``/api/projects/{project_id}/...``) as named methods.

Composition: the runtime's ``ProviderClient`` (retries, 429 and Retry-After, the connection's rate
budget, redacted logs) signs with the personal API key as a bearer token; this class names endpoints.

Which host: ``host`` blank or ``us`` is US Cloud (base ``US``), ``eu`` EU Cloud (base ``EU``), anything
else a self-hosted instance through the ``{host}`` template of base ``API`` (validated by ``kit.urls``:
an http(s) URL whose host is public).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from hissuno_airflow.kit import InputError, ProviderResponseError, ProviderUnavailable
from hissuno_airflow.kit.http import NextUrlPaginator, ProviderClient

US_CLOUD = "https://us.posthog.com"
EU_CLOUD = "https://eu.posthog.com"
_CLOUD_ALIASES = {"": "us", "us": "us", US_CLOUD: "us", "https://app.posthog.com": "us",
                  "eu": "eu", EU_CLOUD: "eu"}

PAGE_SIZE = 100
"""Persons and definitions per page (PostHog's maximum for persons)."""

LISTING_PASSES = 3
"""Passes over a definitions listing before a run settles for one that changed while it was paged."""

QUERY_PAGE_ROWS = 10_000
"""Rows per HogQL page; PostHog returns at most 50,000 per query."""

MAX_QUERY_PAGES = 10
"""HogQL queries per run. A personal key may run 120 HogQL queries an hour (providers.md 11.3), so one
run never spends more than a twelfth of that."""

POLL_FIRST_SECONDS = 1.0
"""First wait before polling an asynchronous query; doubles per poll up to ``POLL_MAX_SECONDS``."""
POLL_MAX_SECONDS = 10.0
POLL_LIMIT_SECONDS = 600.0
"""How long a run waits for one asynchronous query before failing (retriable)."""


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


@dataclass(frozen=True)
class Snapshot:
    """A whole listing, each record once (by id), and whether it is known to be the whole of it."""

    rows: list[dict[str, Any]]
    complete: bool
    """One pass read exactly the ``count`` every page reported (with no ``count``: two passes read the
    same ids). False when the listing kept changing: a record may be missing, so nothing may be
    concluded from its absence."""


def _record_key(item: Any) -> str:
    if not isinstance(item, dict):
        return repr(item)
    return str(item.get("id") or item.get("uuid") or item.get("name") or repr(sorted(item.items())))


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

    def _pages(self, path: str, params: Mapping[str, Any] | None) -> Iterator[tuple[Any, list[Any]]]:
        # First page by limit/offset, then PostHog's absolute ``next`` links (same origin, checked).
        first = {"limit": PAGE_SIZE, "offset": 0, **(params or {})}
        for page in self.http.pages("GET", f"{self.project}/{path}", NextUrlPaginator("next"), params=first,
                                    data_path="results"):
            count = page.body.get("count") if isinstance(page.body, dict) else None
            yield (count if isinstance(count, int) else None), list(page.items)

    def _list(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every record of a listing once. Offsets over a listing that changes while it is paged (a record
        created or changed lands on a page already read) serve the record at each later page's boundary
        twice: the second copy is the same record and is dropped."""
        seen: set[str] = set()
        for _count, items in self._pages(path, params):
            for item in items:
                key = _record_key(item)
                if key not in seen:
                    seen.add(key)
                    yield item

    def _snapshot(self, path: str, params: Mapping[str, Any] | None = None) -> Snapshot:
        """The whole listing, read again while it changes under the pages (up to ``LISTING_PASSES``).

        A record that moves to a page already read is missed by that pass, and the count PostHog reports
        on each page then disagrees with what was read; the next pass, if the listing held still, reads
        it. Records read by earlier passes are kept when no pass is complete (they existed during the run).
        """
        union: dict[str, dict[str, Any]] = {}
        previous: set[str] | None = None
        for _pass in range(LISTING_PASSES):
            rows: dict[str, dict[str, Any]] = {}
            counts: set[int | None] = set()
            for count, items in self._pages(path, params):
                counts.add(count)
                rows.update((_record_key(item), item) for item in items)
            union.update(rows)
            if counts == {len(rows)} or (counts == {None} and previous == set(rows)):
                return Snapshot(list(rows.values()), complete=True)
            previous = set(rows)
        return Snapshot(list(union.values()), complete=False)

    def persons(self) -> Iterator[dict[str, Any]]:
        """Every person of the project, in PostHog's order, each once. One pass: a person a change moves
        past this pass is read by the next run (every run reads all persons)."""
        return self._list("persons/")

    def event_definitions(self) -> Snapshot:
        """Every event definition."""
        return self._snapshot("event_definitions/")

    def property_definitions(self, type: str) -> Snapshot:
        """Every property definition of ``type`` (``event`` or ``person``)."""
        return self._snapshot("property_definitions/", {"type": type})

    def hogql(self, query: str, values: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Rows of a HogQL query (``{limit}``/``{offset}`` in its text), page by page, as ``{column: value}``.

        Pages by ``LIMIT``/``OFFSET`` while PostHog says ``hasMore`` or a page comes back full (a full page
        without ``hasMore`` may still be followed by rows: asking once more costs one query, dropping them
        would lose data). Blocking mode, so PostHog normally answers with the rows (200); a 202 (the
        query ran asynchronously) is polled to completion (``_await``).

        Raises:
            ProviderResponseError: PostHog answered without rows (an error), or more than
                ``MAX_QUERY_PAGES`` pages would be needed: a run never silently drops rows past the cap.
            ProviderUnavailable: An asynchronous query did not finish within ``POLL_LIMIT_SECONDS``.
        """
        offset = 0
        for _page in range(MAX_QUERY_PAGES):
            body = self._query({
                "query": {"kind": "HogQLQuery", "query": query.format(limit=QUERY_PAGE_ROWS, offset=offset),
                          "values": dict(values)},
                "refresh": "blocking", "name": "hissuno behavioral sync",
            })
            rows = body.get("results")
            if not isinstance(rows, list) or body.get("error"):
                msg = f"posthog POST {self.project}/query/: no rows ({body.get('error') or 'unexpected body'})"
                raise ProviderResponseError(msg, provider="posthog", status=200)
            columns = [str(c) for c in body.get("columns") or []]
            yield from (dict(zip(columns, row, strict=False)) for row in rows)
            if not body.get("hasMore") and len(rows) < QUERY_PAGE_ROWS:
                return
            if not rows:
                return  # hasMore with an empty page: nothing further to read at this offset
            offset += len(rows)
        msg = (f"posthog HogQL: more than {MAX_QUERY_PAGES * QUERY_PAGE_ROWS} (person, event) rows in the window;"
               " narrow it with the from_date filter")
        raise ProviderResponseError(msg, provider="posthog", status=200)

    def _query(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /query/``: the query response, waiting for it when PostHog ran the query asynchronously."""
        resp = self.http.post(f"{self.project}/query/", json=dict(payload))
        body = self.http.parse_json(resp)
        if not isinstance(body, dict):
            msg = f"posthog POST {self.project}/query/: expected a JSON object"
            raise ProviderResponseError(msg, provider="posthog", status=resp.status_code)
        status = body.get("query_status")
        if resp.status_code == 202 or (isinstance(status, dict) and status.get("complete") is False):
            return self._await(status if isinstance(status, dict) else {})
        return body

    def _await(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """Poll ``GET /query/{id}/`` (202 while running, 200 when done) until the query completes.

        Waits go through the client's retry sleeper (the one Retry-After waits use), doubling from
        ``POLL_FIRST_SECONDS`` to ``POLL_MAX_SECONDS``; every poll is a request within the rate budget.
        """
        query_id = str(status.get("id") or "")
        if not query_id:
            msg = f"posthog POST {self.project}/query/: an asynchronous answer without query_status.id"
            raise ProviderResponseError(msg, provider="posthog", status=202)
        delay, waited = POLL_FIRST_SECONDS, 0.0
        while waited < POLL_LIMIT_SECONDS:
            self.http.retry.sleep(delay)
            waited += delay
            delay = min(delay * 2, POLL_MAX_SECONDS)
            body = self.http.get_json(f"{self.project}/query/{query_id}/")
            current = body.get("query_status") if isinstance(body, dict) else None
            if not isinstance(current, dict) or not current.get("complete"):
                continue
            if current.get("error"):
                detail = str(current.get("error_message") or "failed")[:200]
                msg = f"posthog HogQL query {query_id}: {detail}"
                raise ProviderResponseError(msg, provider="posthog", status=200)
            results = current.get("results")
            if not isinstance(results, dict):
                msg = f"posthog GET {self.project}/query/{query_id}/: expected the query response in query_status.results"
                raise ProviderResponseError(msg, provider="posthog", status=200)
            return results
        msg = f"posthog HogQL query {query_id}: still running after {POLL_LIMIT_SECONDS:g} s; the next run asks again"
        raise ProviderUnavailable(msg, provider="posthog", status=202)


def hogql_time(ts: datetime) -> str:
    """A time as HogQL's ``toDateTime`` reads it."""
    return ts.strftime("%Y-%m-%d %H:%M:%S")

