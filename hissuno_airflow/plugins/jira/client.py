"""Jira Cloud's REST v3 through the Atlassian API gateway, as named methods.

A 3LO token works only against ``https://api.atlassian.com/ex/jira/{cloudId}`` (not the site's own
host), so every call names its site's cloud id; the client composes the runtime's ``ProviderClient``
(bearer token from the live credentials, refresh on a 401, 429 + Retry-After, redacted logs).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from hissuno_airflow.kit import InputError, ProviderResponseError
from hissuno_airflow.kit.http import ProviderClient

from .mapping import FIELDS

PAGE_SIZE = 100
"""Issues per search page (the enhanced search allows up to 5000 with ``fields`` limited; 100 keeps pages small)."""
PROJECT_PAGE_SIZE = 50
_CLOUD_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def site_of(resource: dict[str, Any]) -> dict[str, Any]:
    """An accessible resource as hissuno keeps a site: ``{cloud_id, url, name}``."""
    return {"cloud_id": str(resource.get("id") or ""), "url": str(resource.get("url") or ""),
            "name": str(resource.get("name") or resource.get("url") or resource.get("id") or "")}


def is_jira_site(resource: dict[str, Any]) -> bool:
    """Whether a resource is a Jira site (a grant also lists Confluence sites, with only Confluence scopes)."""
    scopes = resource.get("scopes")
    return isinstance(scopes, list) and any("jira" in str(s) for s in scopes) and bool(resource.get("id"))


class JiraClient:
    """The Jira endpoints the plugin uses; ``http`` is a client on the ``API`` base (the gateway)."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http

    def __enter__(self) -> JiraClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def sites(self) -> list[dict[str, Any]]:
        """Every Jira site the token reaches, in the order Atlassian lists them."""
        body = self.http.get_json("/oauth/token/accessible-resources")
        resources = body if isinstance(body, list) else []
        return [site_of(r) for r in resources if isinstance(r, dict) and is_jira_site(r)]

    @staticmethod
    def _base(cloud_id: str) -> str:
        if not _CLOUD_ID.fullmatch(cloud_id):
            raise InputError(f"cloud_id: expected an Atlassian cloud id; got {cloud_id[:70]!r}", field="cloud_id")
        return f"/ex/jira/{cloud_id}/rest/api/3"

    def myself(self, cloud_id: str) -> dict[str, Any]:
        """The user the token acts for (``accountId``, ``displayName``, ``timeZone``)."""
        body: dict[str, Any] = self.http.get_json(f"{self._base(cloud_id)}/myself")
        return body

    def projects(self, cloud_id: str) -> Iterator[dict[str, Any]]:
        """Every project of the site, page by page (the reference read only the first 50)."""
        start = 0
        while True:
            page = self.http.get_json(f"{self._base(cloud_id)}/project/search",
                                      params={"startAt": start, "maxResults": PROJECT_PAGE_SIZE, "orderBy": "key"})
            values = page.get("values") if isinstance(page, dict) else None
            values = values if isinstance(values, list) else []
            yield from values
            if not values or page.get("isLast", True):
                return
            start += len(values)

    def search(self, cloud_id: str, jql: str) -> Iterator[dict[str, Any]]:
        """Issues matching ``jql`` from ``/search/jql``, following ``nextPageToken`` to the last page."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"jql": jql, "maxResults": PAGE_SIZE, "fields": ",".join(FIELDS)}
            if token:
                params["nextPageToken"] = token
            page = self.http.get_json(f"{self._base(cloud_id)}/search/jql", params=params)
            if not isinstance(page, dict) or not isinstance(page.get("issues"), list):
                raise ProviderResponseError("jira GET /search/jql: expected an object with issues",
                                            provider="jira")
            yield from page["issues"]
            nxt = page.get("nextPageToken")
            if page.get("isLast") is True or not nxt:
                return
            if nxt == token:
                raise ProviderResponseError("jira GET /search/jql: nextPageToken did not advance", provider="jira")
            token = str(nxt)

    def issue(self, cloud_id: str, issue_id: str) -> dict[str, Any] | None:
        """One issue with the fields search reads, or None when it is gone (404)."""
        response = self.http.get(f"{self._base(cloud_id)}/issue/{_segment(issue_id)}",
                                 params={"fields": ",".join(FIELDS)}, allow_statuses={404})
        if response.status_code == 404:
            return None
        body: dict[str, Any] = self.http.parse_json(response)
        return body

    def issue_types(self, cloud_id: str, project_key: str) -> list[dict[str, Any]]:
        """The issue types a project offers (``createmeta``), every page."""
        out: list[dict[str, Any]] = []
        start = 0
        while True:
            page = self.http.get_json(
                f"{self._base(cloud_id)}/issue/createmeta/{_segment(project_key)}/issuetypes",
                params={"startAt": start, "maxResults": 50})
            values = page.get("issueTypes") or page.get("values") or [] if isinstance(page, dict) else []
            out += [v for v in values if isinstance(v, dict)]
            total = page.get("total") if isinstance(page, dict) else None
            if not values or not isinstance(total, int) or start + len(values) >= total:
                return out
            start += len(values)


def _segment(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", value):
        raise InputError(f"expected a Jira id or key; got {value[:70]!r}", field="id")
    return value
