"""HubSpot's CRM v3 API (and the v4 associations it needs) as named methods.

Composition, not inheritance: the runtime builds the ``ProviderClient`` (base URL, the live OAuth token
with refresh on a 401, retries, 429 and Retry-After, the connection's rate budget, the cancel signal,
redacted logs) and ``HubSpotClient`` adds the endpoints the plugin reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from hissuno_airflow.kit import ProviderAuthError, ProviderError, ProviderResponseError
from hissuno_airflow.kit.http import CursorPaginator, ProviderClient, windowed_search

SEARCH_CAP = 10_000
"""HubSpot answers at most this many results per search query, however it is paged."""
SEARCH_PAGE = 200
"""Results per search page: HubSpot's maximum."""
LIST_PAGE = 100
"""Records per page of the (archived) object list: HubSpot's maximum."""
BATCH = 100
"""Ids per batch read."""
RATE_LIMIT_WAIT = 10.0
"""A 429 without Retry-After waits for the next 10-second window (HubSpot counts per 10 s)."""
MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
"""The last-modified property each object type is searched, sorted and windowed on."""
COMPANY_PROPERTIES = ("name", "domain", "industry", "country", "numberofemployees", "annualrevenue",
                      "hs_object_id", "notes_last_updated", "description", "phone", "website",
                      "hs_lastmodifieddate")
CONTACT_PROPERTIES = ("firstname", "lastname", "email", "phone", "jobtitle", "company", "hs_object_id",
                      "notes_last_updated", "lifecyclestage", "lastmodifieddate")
PROPERTIES = {"contacts": CONTACT_PROPERTIES, "companies": COMPANY_PROPERTIES}
PRIMARY_CONTACT_TO_COMPANY = 1
"""``associationTypeId`` of a contact's primary company (HUBSPOT_DEFINED)."""


def parse_time(value: Any) -> datetime | None:
    """A HubSpot time: ISO 8601 (``2024-01-02T03:04:05.678Z``) or epoch milliseconds, as an aware datetime."""
    if value in (None, ""):
        return None
    text = str(value)
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def modified_at(obj: dict[str, Any], object_type: str) -> datetime:
    """When the object last changed: its last-modified property, else ``updatedAt``."""
    props = obj.get("properties") or {}
    at = parse_time(props.get(MODIFIED[object_type])) or parse_time(obj.get("updatedAt"))
    if at is None:
        msg = f"hubspot: {object_type} {obj.get('id')!r} carries no {MODIFIED[object_type]} or updatedAt"
        raise ProviderResponseError(msg, provider="hubspot")
    return at


def _ms(at: datetime) -> str:
    return str(int(at.timestamp() * 1000))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class HubSpotClient:
    """The HubSpot endpoints the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http
        http.retry = http.retry.replace(
            rate_limit_min_wait=max(http.retry.rate_limit_min_wait, RATE_LIMIT_WAIT),
            # A spent 10-second budget (remaining 0) waits for the next window instead of drawing a 429.
            remaining_header="X-HubSpot-RateLimit-Remaining",
            window_ms_header="X-HubSpot-RateLimit-Interval-Milliseconds",
        )

    def token_info(self, token: str) -> dict[str, Any]:
        """``GET /oauth/v1/access-tokens/{token}``: the portal (``hub_id``, ``hub_domain``) a token acts for.

        The token is in the path, so a refusal is reported without the URL (it would repeat the token).
        """
        try:
            resp = self.http.request("GET", f"/oauth/v1/access-tokens/{token}", allow_statuses=(400, 401, 404))
        except ProviderError as exc:
            msg = f"hubspot: the access-token check failed ({type(exc).__name__}); try connecting again"
            raise ProviderAuthError(msg, provider="hubspot", status=getattr(exc, "status", None)) from None
        body = resp.json() if resp.status_code == 200 else None
        if not isinstance(body, dict) or not body.get("hub_id"):
            msg = (f"hubspot: the access token was refused by GET /oauth/v1/access-tokens ({resp.status_code}); "
                   "it names no portal (hub_id)")
            raise ProviderAuthError(msg, provider="hubspot", status=resp.status_code)
        return body

    def _search_window(self, object_type: str, since: datetime | None,
                       until: datetime | None) -> Iterator[dict[str, Any]]:
        prop = MODIFIED[object_type]
        filters: list[dict[str, Any]] = []
        if since is not None:
            filters.append({"propertyName": prop, "operator": "GTE", "value": _ms(since)})
        if until is not None:
            filters.append({"propertyName": prop, "operator": "LT", "value": _ms(until)})
        body: dict[str, Any] = {
            "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
            "properties": list(PROPERTIES[object_type]), "limit": SEARCH_PAGE,
        }
        if filters:
            body["filterGroups"] = [{"filters": filters}]
        return self.http.paginate("POST", f"/crm/v3/objects/{object_type}/search",
                                  CursorPaginator("paging.next.after", "after", cursor_location="json"),
                                  json=body, data_path="results")

    def modified(self, object_type: str, since: datetime | None,
                 until: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every object modified at or after ``since`` (and before ``until``), oldest first: each page is a
        new window at the last modification time seen, so neither the search's result cap nor an object
        modified mid-sync (which would shift the search's offsets) makes it skip one."""
        return windowed_search(lambda bound: self._search_window(object_type, bound, until), cap=SEARCH_CAP,
                               key=lambda o: modified_at(o, object_type), record_id=lambda o: str(o["id"]),
                               since=since, provider="hubspot", page=SEARCH_PAGE)

    def archived(self, object_type: str) -> Iterator[dict[str, Any]]:
        """Archived (deleted) objects: ``GET /crm/v3/objects/{type}?archived=true``."""
        return self.http.paginate("GET", f"/crm/v3/objects/{object_type}", CursorPaginator("paging.next.after", "after"),
                                  params={"archived": "true", "limit": LIST_PAGE, "properties": "hs_object_id"},
                                  data_path="results")

    def get(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        """One live object with the plugin's properties; None when it is gone or archived (404)."""
        resp = self.http.request("GET", f"/crm/v3/objects/{object_type}/{int(object_id)}",
                                 params={"properties": ",".join(PROPERTIES[object_type])}, allow_statuses=(404,))
        if resp.status_code == 404:
            return None
        body: dict[str, Any] = resp.json()
        return None if body.get("archived") else body

    def company_ids(self, contact_ids: Iterable[str]) -> dict[str, list[str]]:
        """Contact id -> ids of its associated companies, the primary one first (v4 batch read)."""
        out: dict[str, list[str]] = {}
        for chunk in _chunks([str(i) for i in contact_ids], BATCH):
            body = self.http.post_json("/crm/v4/associations/contacts/companies/batch/read",
                                       json={"inputs": [{"id": i} for i in chunk]})
            for row in body.get("results") or []:
                source = str((row.get("from") or {}).get("id") or "")
                targets = row.get("to") or []
                primary = [t for t in targets if any(a.get("typeId") == PRIMARY_CONTACT_TO_COMPANY
                                                     for a in t.get("associationTypes") or [])]
                ordered = primary + [t for t in targets if t not in primary]
                out[source] = [str(t["toObjectId"]) for t in ordered if t.get("toObjectId") is not None]
        return out

    def companies(self, company_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Company id -> company (live ones only), by batch read."""
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(sorted({str(i) for i in company_ids}), BATCH):
            body = self.http.post_json("/crm/v3/objects/companies/batch/read",
                                       json={"inputs": [{"id": i} for i in chunk], "properties": ["domain", "name"]})
            for company in body.get("results") or []:
                out[str(company["id"])] = company
        return out


class CompanyDomains:
    """The domain of each contact's primary company with one, cached across pages of a run."""

    def __init__(self, api: HubSpotClient) -> None:
        self.api = api
        self.domains: dict[str, str | None] = {}

    def for_contacts(self, contact_ids: list[str]) -> dict[str, str | None]:
        """Contact id -> the domain of its first associated company that has one (primary first)."""
        links = self.api.company_ids(contact_ids)
        unknown = {c for ids in links.values() for c in ids if c not in self.domains}
        if unknown:
            found = self.api.companies(unknown)
            for cid in unknown:
                domain = ((found.get(cid) or {}).get("properties") or {}).get("domain")
                self.domains[cid] = str(domain).strip() if domain else None
        out: dict[str, str | None] = {}
        for contact in contact_ids:
            out[contact] = next((d for c in links.get(contact, []) if (d := self.domains.get(c))), None)
        return out
