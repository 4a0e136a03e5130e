"""GitHub's REST API as named methods (providers.md §2): installations, repositories, issues, comments,
branches, git trees and blobs, all paged through the ``Link`` header.

Composition, not inheritance: the runtime builds the ``ProviderClient`` (base URL, retries, 429 and
``Retry-After``, GitHub's 403 with ``x-ratelimit-remaining: 0``, the connection's rate budget, the cancel
signal, redacted logs, and for app connections the live installation token) and ``GitHubClient`` wraps it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from hissuno_airflow.kit import ProviderResponseError
from hissuno_airflow.kit.http import LinkHeaderPaginator, ProviderClient, RetryPolicy, windowed_search

PER_PAGE = 100
"""Items per page: GitHub's maximum."""
NO_CAP = 2**62
"""The issues listing has no cap on results (only a page of one update time is read past ``PER_PAGE``)."""
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
           "User-Agent": "hissuno-airflow"}
"""What GitHub asks every client to send (the ``User-Agent`` is required)."""
SECONDARY_LIMIT_MIN_WAIT = 60.0
"""A secondary-limit answer without ``retry-after`` or a spent budget: wait at least a minute (GitHub's docs)."""


def secondary_limited(response: httpx.Response) -> bool:
    """GitHub's secondary rate limit: 403 (or 429) whose message says so, even without rate-limit headers."""
    if response.status_code not in (403, 429):
        return False
    try:
        message = str(response.json().get("message", ""))
    except (ValueError, AttributeError):
        return False
    return "secondary rate limit" in message.lower() or "abuse detection" in message.lower()


@dataclass(frozen=True)
class GitHubRetryPolicy(RetryPolicy):
    """GitHub's rules for a limited answer (providers.md §2.3): ``retry-after`` when present; else, when
    ``x-ratelimit-remaining`` is 0, until ``x-ratelimit-reset``; else (a secondary limit with budget left)
    at least a minute. The shared policy would wait for the reset of the hour window in that last case."""

    def announced_wait(self, response: httpx.Response, *, rate_limited: bool = False) -> float | None:
        """Seconds GitHub asks for; None when it asks for nothing (the minimum wait applies)."""
        remaining = response.headers.get("x-ratelimit-remaining")
        if response.headers.get("retry-after") is None and remaining is not None and remaining.strip() != "0":
            return None
        return super().announced_wait(response, rate_limited=rate_limited)


def retry_policy(base: RetryPolicy | None = None) -> RetryPolicy:
    """The runtime's policy (or ``base``: its sleeper and clock kept) with GitHub's rate-limit rules."""
    policy = base or RetryPolicy()
    kept = {f.name: getattr(policy, f.name) for f in fields(policy)}
    kept.update(rate_limited_when=secondary_limited, rate_limit_min_wait=SECONDARY_LIMIT_MIN_WAIT)
    return GitHubRetryPolicy(**kept)


def _updated(issue: Mapping[str, Any]) -> datetime:
    value = issue.get("updated_at")
    if not value:
        raise ProviderResponseError("github: an issue in the listing has no updated_at", provider="github")
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def iso_z(ts: datetime) -> str:
    """GitHub's ``since`` format: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


class GitHubClient:
    """The GitHub endpoints the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def _all(self, path: str, params: Mapping[str, Any] | None = None, data_path: str | None = None,
             ) -> Iterator[dict[str, Any]]:
        return self.http.paginate("GET", path, LinkHeaderPaginator(), params={"per_page": PER_PAGE, **(params or {})},
                                  data_path=data_path)

    # -- accounts ------------------------------------------------------------------------------------

    def installation(self, installation_id: int) -> dict[str, Any]:
        """``GET /app/installations/{id}`` (the client must sign with the app JWT); empty when this app has
        no such installation (404)."""
        response = self.http.get(f"/app/installations/{int(installation_id)}", allow_statuses={404})
        if response.status_code == 404:
            return {}
        body = self.http.parse_json(response)
        return dict(body) if isinstance(body, Mapping) else {}

    def user_installations(self) -> Iterator[dict[str, Any]]:
        """The app's installations a user (signed with their user-to-server token) can access."""
        return self._all("/user/installations", data_path="installations")

    def user(self) -> dict[str, Any]:
        """The user a personal access token belongs to."""
        body = self.http.get_json("/user")
        return dict(body) if isinstance(body, Mapping) else {}

    def repositories(self, *, app: bool) -> Iterator[dict[str, Any]]:
        """Every repository the connection reaches: the installation's, or the token user's."""
        if app:
            return self._all("/installation/repositories", data_path="repositories")
        return self._all("/user/repos", {"sort": "updated", "type": "all"})

    def repository(self, full_name: str) -> dict[str, Any]:
        """One repository (``default_branch`` included)."""
        body = self.http.get_json(f"/repos/{full_name}")
        return dict(body) if isinstance(body, Mapping) else {}

    def branch(self, full_name: str, name: str) -> dict[str, Any]:
        """One branch with its head commit (``commit.sha``, ``commit.commit.tree.sha``)."""
        response = self.http.get(f"/repos/{full_name}/branches/{quote(name, safe='')}", allow_statuses={404})
        if response.status_code == 404:
            msg = f"github: branch {name!r} of {full_name} not found; set the codebase stream's branch"
            raise ProviderResponseError(msg, provider="github", status=404)
        body = self.http.parse_json(response)
        if not isinstance(body, Mapping) or not isinstance(body.get("commit"), Mapping):
            msg = f"github GET /repos/{full_name}/branches: expected a branch with its commit"
            raise ProviderResponseError(msg, provider="github")
        return dict(body)

    def branches(self, full_name: str) -> Iterator[dict[str, Any]]:
        """The repository's branches."""
        return self._all(f"/repos/{full_name}/branches")

    # -- issues --------------------------------------------------------------------------------------

    def issues(self, full_name: str, *, since: datetime | None, state: str, labels: str | None,
               ) -> Iterator[dict[str, Any]]:
        """Issues (and pull requests, which the caller drops) updated at or after ``since``, oldest update
        first, with no cap. Each page is asked for as a new ``since`` window at the last update seen: page
        numbers shift when an issue already passed is updated mid-sync, and the issue that shifted across
        the page boundary would be skipped, behind a cursor that never comes back for it."""
        params: dict[str, Any] = {"state": state, "sort": "updated", "direction": "asc"}
        if labels:
            params["labels"] = labels

        def window(bound: datetime | None) -> Iterator[dict[str, Any]]:
            return self._all(f"/repos/{full_name}/issues", {**params, "since": iso_z(bound)} if bound else params)

        return windowed_search(window, cap=NO_CAP, page=PER_PAGE, key=_updated, record_id=lambda i: str(i["id"]),
                               since=since, provider="github")

    def issue(self, full_name: str, number: int) -> dict[str, Any] | None:
        """One issue, or None when it is gone (404, or 410 once deleted)."""
        response = self.http.get(f"/repos/{full_name}/issues/{int(number)}", allow_statuses={404, 410})
        if response.status_code in (404, 410):
            return None
        body = self.http.parse_json(response)
        return dict(body) if isinstance(body, Mapping) else None

    def comments(self, full_name: str, number: int) -> Iterator[dict[str, Any]]:
        """An issue's comments, oldest first, across every page."""
        return self._all(f"/repos/{full_name}/issues/{int(number)}/comments")

    # -- contents ------------------------------------------------------------------------------------

    def tree(self, full_name: str, ref: str) -> list[dict[str, Any]]:
        """Every entry of the tree at ``ref`` (a branch name or a tree SHA); walked directory by directory
        when GitHub truncates the recursive listing."""
        body = self.http.get_json(f"/repos/{full_name}/git/trees/{quote(ref, safe='')}", params={"recursive": "1"})
        if not isinstance(body, Mapping) or not isinstance(body.get("tree"), list):
            msg = f"github GET /repos/{full_name}/git/trees: expected a 'tree' list"
            raise ProviderResponseError(msg, provider="github")
        if not body.get("truncated"):
            return [dict(e) for e in body["tree"]]
        return list(self._walk(full_name, str(body.get("sha") or ref), ""))

    def _walk(self, full_name: str, sha: str, prefix: str) -> Iterator[dict[str, Any]]:
        body = self.http.get_json(f"/repos/{full_name}/git/trees/{quote(sha, safe='')}")
        for entry in body.get("tree", []) if isinstance(body, Mapping) else []:
            path = f"{prefix}{entry['path']}"
            yield {**entry, "path": path}
            if entry.get("type") == "tree":
                yield from self._walk(full_name, str(entry["sha"]), path + "/")

    def blob(self, full_name: str, sha: str) -> bytes:
        """A blob's bytes (``GET /git/blobs/{sha}``, base64 in JSON)."""
        body = self.http.get_json(f"/repos/{full_name}/git/blobs/{quote(sha, safe='')}")
        if not isinstance(body, Mapping) or body.get("encoding") != "base64":
            msg = f"github GET /repos/{full_name}/git/blobs: expected base64 content"
            raise ProviderResponseError(msg, provider="github")
        return base64.b64decode(str(body.get("content") or ""))
