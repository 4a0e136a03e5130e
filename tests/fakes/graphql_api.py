"""A small Linear-shaped GraphQL API: ``viewer``, and ``issues`` as a Relay connection.

It does not parse GraphQL; it answers by which root field the document mentions, which is enough to
exercise a client. Errors come back the way GraphQL servers send them: HTTP 200 (or 400 for a document
the server rejects) with an ``errors`` array. Faults are injected with ``inject(..., 200, json=...)``.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.server import FakeProvider, FakeRequest, Reply, post


def gql_error(message: str, code: str | None = None, type_: str | None = None) -> dict[str, Any]:
    """A GraphQL error body as Linear sends it."""
    extensions = {k: v for k, v in (("code", code), ("type", type_)) if v is not None}
    return {"errors": [{"message": message, "extensions": extensions}], "data": None}


RATE_LIMITED = gql_error("Rate limit exceeded", "RATELIMITED", "ratelimited")


class GraphQLApi(FakeProvider):
    """``POST /graphql``; ``issues(first, after)`` pages with ``pageInfo { hasNextPage endCursor }``."""

    name = "linear"
    require_auth = True

    def __init__(self, count: int = 7, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.issues = [{"id": f"iss-{i}", "title": f"issue {i}"} for i in range(1, count + 1)]
        self.with_page_info = True

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of every request to ``/graphql`` seen so far (faulted ones included)."""
        return [r.json() for r in self.requests_to("/graphql")]

    @post("/graphql")
    def graphql(self, req: FakeRequest) -> Reply:
        body = req.json() or {}
        query = str(body.get("query", ""))
        variables = body.get("variables") or {}
        if "viewer" in query:
            return {"data": {"viewer": {"id": "u-1", "name": "Ada"}}}
        if "issues" in query:
            first = int(variables.get("first", 50))
            after = variables.get("after")
            start = int(after.removeprefix("c")) if after else 0
            page = self.issues[start : start + first]
            end = start + len(page)
            connection: dict[str, Any] = {"nodes": page}
            if self.with_page_info:
                connection["pageInfo"] = {"hasNextPage": end < len(self.issues), "endCursor": f"c{end}" if page else None}
            return {"data": {"issues": connection}}
        return 400, gql_error("Cannot query field on type Query", "GRAPHQL_VALIDATION_FAILED")
