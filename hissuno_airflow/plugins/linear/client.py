"""Linear's GraphQL API as named methods over the runtime's ``ProviderClient``.

Every query goes through ``kit.http.graphql.GraphQL``: a ``RATELIMITED`` error (HTTP 400 or 429) is
retried like a 429 with the reset of the spent budget (Linear reports ``x-ratelimit-requests-*`` and
``x-ratelimit-complexity-*``; the shared retry policy reads both), an ``authentication error`` is a
``ProviderAuthError``, anything else a ``ProviderResponseError`` naming the query. Filters travel as
GraphQL variables (``IssueFilter``), never spliced into the document.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from hissuno_airflow.kit.http import ProviderClient
from hissuno_airflow.kit.http.graphql import GraphQL

PAGE_SIZE = 100
"""Issues per page: Linear's documented incremental example; small enough for its complexity budget."""

ISSUE_FIELDS = """
  id identifier number title description priority priorityLabel url
  createdAt updatedAt archivedAt completedAt canceledAt startedAt
  state { id name type }
  team { id key name }
  labels(first: 20) { nodes { id name } }
  assignee { id name }
  project { id name }
"""
"""One issue with its workflow state and labels: one query per page, never one per issue."""

VIEWER = "query Viewer { viewer { id name email } organization { id name urlKey } }"
TEAMS = """query Teams($after: String) {
  teams(first: 100, after: $after) { nodes { id key name } pageInfo { hasNextPage endCursor } }
}"""
TEAM = """query Team($filter: TeamFilter) {
  teams(first: 1, filter: $filter) { nodes { id key name } pageInfo { hasNextPage endCursor } }
}"""
ISSUES = f"""query Issues($filter: IssueFilter, $first: Int, $after: String) {{
  issues(filter: $filter, first: $first, after: $after, orderBy: updatedAt, includeArchived: true) {{
    nodes {{ {ISSUE_FIELDS} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""


def iso(value: datetime) -> str:
    """A DateTime literal Linear accepts: UTC, milliseconds, ``Z`` (a naive time is taken as UTC)."""
    v = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"


def issue_filter(
    team_id: str, *, updated_from: datetime | None = None, updated_before: datetime | None = None,
    created_from: datetime | None = None, created_to: datetime | None = None,
    state_types: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``IssueFilter`` of one team's sync.

    ``updatedAt >= cursor`` (inclusive: the boundary issue comes back unchanged and writes nothing, and an
    issue stamped in the cursor's millisecond is never missed); ``< until`` for backfill windows;
    ``createdAt`` between the user's ``from_date`` and ``to_date``; ``state.type in state_types``.
    """
    flt: dict[str, Any] = {"team": {"id": {"eq": team_id}}}
    updated: dict[str, str] = {}
    if updated_from is not None:
        updated["gte"] = iso(updated_from)
    if updated_before is not None:
        updated["lt"] = iso(updated_before)
    if updated:
        flt["updatedAt"] = updated
    created: dict[str, str] = {}
    if created_from is not None:
        created["gte"] = iso(created_from)
    if created_to is not None:
        created["lte"] = iso(created_to)
    if created:
        flt["createdAt"] = created
    if state_types:
        flt["state"] = {"type": {"in": list(state_types)}}
    return flt


class LinearClient:
    """The Linear queries the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http
        self.gql = GraphQL(http, "/graphql")

    def __enter__(self) -> LinearClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def viewer(self) -> dict[str, Any]:
        """``{viewer: {id, name, email}, organization: {id, name, urlKey}}`` of the token."""
        data: dict[str, Any] = dict(self.gql.query(VIEWER))
        return data

    def teams(self) -> Iterator[dict[str, Any]]:
        """Every team the token can read."""
        yield from self.gql.nodes(TEAMS, "teams")

    def team(self, team_id: str) -> dict[str, Any] | None:
        """One team by id, or None when it is gone (or not visible to the token)."""
        data = self.gql.query(TEAM, {"filter": {"id": {"eq": team_id}}})
        nodes = (data.get("teams") or {}).get("nodes") or []
        return dict(nodes[0]) if nodes else None

    def issues(self, flt: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Issues (archived ones included) matching ``flt``, oldest update first, across all pages."""
        yield from self.gql.nodes(ISSUES, "issues", {"filter": flt, "first": PAGE_SIZE})

    def issue(self, issue_id: str) -> dict[str, Any] | None:
        """One issue (archived included) by id, or None when Linear no longer has it."""
        for node in self.gql.nodes(ISSUES, "issues", {"filter": {"id": {"eq": issue_id}}, "first": 1}, max_pages=1):
            return dict(node)
        return None
