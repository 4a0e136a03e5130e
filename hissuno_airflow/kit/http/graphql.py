"""GraphQL over a ``ProviderClient``: ``errors`` become kit errors, Relay connections become iterators.

A GraphQL server answers most failures with HTTP 200 and an ``errors`` array, so status codes alone
cannot drive the retry policy. ``GraphQL`` hands every request a ``ResponseCheck`` (``graphql_check``)
that reads the errors and names what they stand for; ``RetryPolicy.execute`` then treats the answer
like the status it stands for, so a rate limit in a 200 is retried with the same backoff, Retry-After and
reset-header handling as a 429. There is no retry loop in this module::

    gql = GraphQL(client)                     # POST <base>/graphql
    org = gql.query("query Org { organization { id name } }")["organization"]
    for issue in gql.nodes(ISSUES_QUERY, "issues", {"since": since}):
        ...                                   # follows pageInfo.endCursor through $after

Error codes are read from ``extensions.code``, ``extensions.type`` and a top-level ``type`` (GitHub),
compared case-, space-, dash- and underscore-insensitively, so Linear's ``RATELIMITED`` code, its
``"ratelimited"`` type and GitHub's ``RATE_LIMITED`` all count as a rate limit:

- a rate-limit code -> retried like a 429, ``RateLimited`` when retries run out;
- an auth code (``UNAUTHENTICATED``, ``FORBIDDEN``, Linear's ``authentication error``) -> ``ProviderAuthError``;
- a transient code (``INTERNAL_SERVER_ERROR``, ``LOCK_TIMEOUT``) -> retried like a 503;
- anything else -> ``ProviderResponseError`` naming the operation and the first error's message
  (redacted with the client's secrets, one line, at most 200 characters).

A response with both ``data`` and ``errors`` (a partial result) counts as failed: a sync must not
silently miss fields.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import httpx

from ..errors import ProviderResponseError
from .client import ProviderClient
from .paginators import CursorPaginator, find_path
from .retry import FaultKind, ResponseCheck, ResponseFault

DEFAULT_RATE_LIMIT_CODES: frozenset[str] = frozenset({"ratelimited", "ratelimit", "ratelimitexceeded", "throttled"})
"""Normalised codes that mean "slow down" (Linear ``RATELIMITED``, GitHub ``RATE_LIMITED``, Shopify ``THROTTLED``)."""
DEFAULT_AUTH_CODES: frozenset[str] = frozenset(
    {"unauthenticated", "unauthorized", "authenticationerror", "forbidden", "invalidtoken"}
)
"""Normalised codes that mean the credentials are refused (Apollo ``UNAUTHENTICATED``/``FORBIDDEN``)."""
DEFAULT_UNAVAILABLE_CODES: frozenset[str] = frozenset(
    {"internalservererror", "internalerror", "serviceunavailable", "locktimeout", "timeout"}
)
"""Normalised codes of transient server trouble, retried like a 503."""

_OPERATION_RE = re.compile(r"^\s*(?:#[^\n]*\n\s*)*(query|mutation|subscription)\b\s*([_A-Za-z][_0-9A-Za-z]*)?")


def normalize_code(value: object) -> str:
    """``"RATE_LIMITED"``, ``"rate-limited"`` and ``"Rate limited"`` all become ``"ratelimited"``."""
    return re.sub(r"[^0-9a-z]", "", str(value).lower())


def operation_label(query: str) -> str:
    """Name a GraphQL document for error text: ``"query Issues"``, ``"mutation"``, or ``"query"``."""
    match = _OPERATION_RE.match(query)
    if match is None:
        return "query"  # the shorthand ``{ viewer { id } }`` is an anonymous query
    kind, name = match.group(1), match.group(2)
    return f"{kind} {name}" if name else kind


def graphql_check(
    operation: str,
    *,
    rate_limit_codes: Collection[str] = DEFAULT_RATE_LIMIT_CODES,
    auth_codes: Collection[str] = DEFAULT_AUTH_CODES,
    unavailable_codes: Collection[str] = DEFAULT_UNAVAILABLE_CODES,
) -> ResponseCheck:
    """Build the ``ResponseCheck`` that turns a GraphQL ``errors`` array into a ``ResponseFault``.

    It applies to any status, so Linear's HTTP 400 carrying ``RATELIMITED`` is a rate limit too; a body
    that is not JSON, or has no ``errors``, yields ``None`` and the status decides.

    Args:
        operation: Names the call in error text (``"query Issues"``).
        rate_limit_codes: Normalised codes (see ``normalize_code``) meaning "rate limited".
        auth_codes: Normalised codes meaning "credentials refused".
        unavailable_codes: Normalised codes meaning "transient server trouble".

    Returns:
        The check, for ``ProviderClient.request(check=...)``.
    """
    rate = {normalize_code(c) for c in rate_limit_codes}
    auth = {normalize_code(c) for c in auth_codes}
    unavailable = {normalize_code(c) for c in unavailable_codes}

    def check(response: httpx.Response) -> ResponseFault | None:
        try:
            body = response.json()
        except ValueError:
            return None
        if not isinstance(body, Mapping):
            return None
        errors = body.get("errors")
        if not errors:
            return None
        entries = [e for e in (errors if isinstance(errors, list) else [errors]) if isinstance(e, Mapping)]
        if not entries:
            return ResponseFault("client_error", f"{operation} failed: malformed 'errors'")
        # The most actionable error decides: a rate limit anywhere means "wait", whatever else failed.
        ranked: list[tuple[FaultKind, set[str]]] = [
            ("rate_limited", rate),
            ("auth", auth),
            ("unavailable", unavailable),
        ]
        kind: FaultKind = "client_error"
        code = _codes(entries[0])[0] if _codes(entries[0]) else None
        found = False
        for candidate, names in ranked:
            for entry in entries:
                hit = next((c for c in _codes(entry) if normalize_code(c) in names), None)
                if hit is not None:
                    kind, code, found = candidate, hit, True
                    break
            if found:
                break
        message = entries[0].get("message")
        text = str(message) if message not in (None, "") else "no message"
        more = f" (+{len(entries) - 1} more)" if len(entries) > 1 else ""
        return ResponseFault(kind, f"{operation} failed: {text}{more}", code=code)

    return check


def _codes(entry: Mapping[str, Any]) -> list[str]:
    extensions = entry.get("extensions")
    ext = extensions if isinstance(extensions, Mapping) else {}
    values = (ext.get("code"), ext.get("type"), entry.get("type"))
    return [str(v) for v in values if isinstance(v, str) and v]


class GraphQL:
    """A GraphQL endpoint reached through a ``ProviderClient`` (its auth, retries, budget and redaction)."""

    def __init__(
        self,
        client: ProviderClient,
        path: str = "/graphql",
        *,
        rate_limit_codes: Collection[str] = DEFAULT_RATE_LIMIT_CODES,
        auth_codes: Collection[str] = DEFAULT_AUTH_CODES,
        unavailable_codes: Collection[str] = DEFAULT_UNAVAILABLE_CODES,
    ) -> None:
        """Bind an endpoint.

        Args:
            client: The provider client every request goes through.
            path: Endpoint path relative to the client's base URL (or an absolute URL).
            rate_limit_codes: Error codes retried like a 429 (compared normalised).
            auth_codes: Error codes raised as ``ProviderAuthError``.
            unavailable_codes: Error codes retried like a 503.
        """
        self.client = client
        self.path = path
        self._codes = {
            "rate_limit_codes": frozenset(rate_limit_codes),
            "auth_codes": frozenset(auth_codes),
            "unavailable_codes": frozenset(unavailable_codes),
        }

    def __repr__(self) -> str:
        return f"GraphQL({self.client!r}, path={self.path!r})"

    def check(self, operation: str) -> ResponseCheck:
        """The ``ResponseCheck`` this endpoint applies to requests of ``operation``."""
        return graphql_check(operation, **self._codes)

    def query(self, query: str, variables: Mapping[str, Any] | None = None, *, operation: str | None = None) -> Any:
        """POST ``{"query", "variables"}`` and return ``data``.

        Args:
            query: The GraphQL document (query or mutation).
            variables: Its variables.
            operation: Name for error text; defaults to ``operation_label(query)``.

        Returns:
            The ``data`` object of the response.

        Raises:
            RateLimited: A rate-limit error (or 429) persisted through the retry policy.
            ProviderAuthError: An auth error code, or 401/403.
            ProviderUnavailable: A transient error code or 5xx persisted through retries.
            ProviderResponseError: Any other GraphQL error, or a body without ``data``.
        """
        op = operation or operation_label(query)
        body = self.client.post_json(self.path, json=_payload(query, variables), check=self.check(op))
        data = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(data, Mapping):
            raise self._malformed(op, "returned no 'data'")
        return data

    def connections(
        self,
        query: str,
        connection: str,
        variables: Mapping[str, Any] | None = None,
        *,
        cursor_variable: str = "after",
        max_pages: int | None = None,
        operation: str | None = None,
    ) -> Iterator[Mapping[str, Any]]:
        """Yield each page's connection object (``{nodes|edges, pageInfo, ...}``) of a Relay connection.

        The query must declare the cursor variable (``$after: String``) and select
        ``pageInfo { hasNextPage endCursor }`` on the connection. Paging runs through
        ``ProviderClient.pages`` and a ``CursorPaginator`` that writes ``endCursor`` into
        ``variables.<cursor_variable>``; it stops when ``hasNextPage`` is false and raises if a cursor
        repeats.

        Args:
            query: The GraphQL document.
            connection: Dotted path of the connection under ``data`` (``"issues"``, ``"team.issues"``).
            variables: First-page variables (a cursor here resumes from it).
            cursor_variable: The variable that takes ``endCursor``.
            max_pages: Stop after this many pages.
            operation: Name for error text; defaults to ``operation_label(query)``.

        Yields:
            The connection object of each page.

        Raises:
            ProviderResponseError: The connection or its ``pageInfo`` is missing, a cursor repeats, or a
                GraphQL error (see ``query`` for the other errors).
        """
        op = operation or operation_label(query)
        where = f"data.{connection}"
        paginator = CursorPaginator(
            cursor_path=f"{where}.pageInfo.endCursor",
            cursor_param=f"variables.{cursor_variable}",
            cursor_location="json",
            has_more_path=f"{where}.pageInfo.hasNextPage",
            # ``hasNextPage`` is authoritative; an empty page with more after it is legal in Relay.
            stop_on_empty=False,
        )
        for page in self.client.pages(
            "POST",
            self.path,
            paginator,
            json=_payload(query, variables),
            data_path=f"{where}.nodes",
            max_pages=max_pages,
            check=self.check(op),
        ):
            found = find_path(page.body, where)
            if not isinstance(found, Mapping):
                raise self._malformed(op, f"returned no connection at {where!r}")
            info = found.get("pageInfo")
            if not isinstance(info, Mapping) or "hasNextPage" not in info:
                raise self._malformed(op, f"selects no pageInfo {{ hasNextPage endCursor }} on {connection!r}")
            yield found

    def nodes(
        self,
        query: str,
        connection: str,
        variables: Mapping[str, Any] | None = None,
        *,
        cursor_variable: str = "after",
        max_pages: int | None = None,
        operation: str | None = None,
    ) -> Iterator[Any]:
        """Yield the nodes of every page of a Relay connection (``nodes``, else ``edges[].node``).

        Arguments as for ``connections``.
        """
        for found in self.connections(
            query, connection, variables, cursor_variable=cursor_variable, max_pages=max_pages, operation=operation
        ):
            nodes = found.get("nodes")
            if isinstance(nodes, list):
                yield from nodes
                continue
            edges = found.get("edges")
            if isinstance(edges, list):
                yield from (e.get("node") for e in edges if isinstance(e, Mapping))
                continue
            op = operation or operation_label(query)
            raise self._malformed(op, f"selects neither nodes nor edges on {connection!r}")

    def _malformed(self, operation: str, what: str) -> ProviderResponseError:
        path = httpx.URL(self.path).path or self.path
        msg = self.client.redact(f"{self.client.provider} POST {path}: {operation} {what}")
        return ProviderResponseError(msg, provider=self.client.provider, status=200)


def _payload(query: str, variables: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"query": query, "variables": dict(variables or {})}
