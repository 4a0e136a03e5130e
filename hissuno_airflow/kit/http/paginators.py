"""Paginators: small strategy objects that turn one page's response into the next page's request.

The protocol follows dlt's ``rest_api``: ``ProviderClient.pages`` calls ``init_request`` once, then per
page ``update_state(response, data)`` and, while ``has_next_page``, ``update_request``. Each paginator
is typed by its token (a cursor string, a next URL, a page number or an offset), as in singer_sdk's
``BaseAPIPaginator[TToken]``. ``init_request`` resets the state, so one instance can be reused.

=========================  =========================================================================
``CursorPaginator``        Slack ``response_metadata.next_cursor``, Notion ``next_cursor``/``has_more``,
                           Linear ``pageInfo``, HubSpot ``paging.next.after``, Zendesk ``after_cursor``
``LinkHeaderPaginator``    GitHub ``Link: <...>; rel="next"``
``NextUrlPaginator``       PostHog ``next``, Zendesk ``next_page``
``PageNumberPaginator``    ``?page=N`` APIs
``OffsetPaginator``        ``offset/limit`` and Jira's ``startAt/maxResults/total``
``SinglePagePaginator``    one request, no paging
=========================  =========================================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import httpx

TToken = TypeVar("TToken")


@dataclass
class PageRequest:
    """The mutable description of the next request a paginator may change."""

    url: str
    """A path relative to the client's base URL, or an absolute URL (a next link)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Query parameters."""
    json: Any = None
    """JSON body, for APIs that page through POST (Notion, Intercom search, GraphQL)."""

    def snapshot(self) -> tuple[str, str, str]:
        """A comparable copy, used to detect a paginator that does not advance."""
        return (self.url, repr(sorted(self.params.items())), repr(self.json))


def find_path(data: Any, path: str | None, default: Any = None) -> Any:
    """Follow a dotted path (``"response_metadata.next_cursor"``, ``"errors.0.code"``) into JSON.

    Args:
        data: Parsed JSON.
        path: Dotted keys; integer segments index lists. ``None`` or ``""`` returns ``data``.
        default: Returned when a segment is missing.

    Returns:
        The value found, or ``default``.
    """
    if not path:
        return data
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping):
            if part not in node:
                return default
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)) and _is_index(part):
            index = int(part)
            if not -len(node) <= index < len(node):
                return default
            node = node[index]
        else:
            return default
    return node


def extract_items(body: Any, data_path: str | None) -> list[Any]:
    """Return the list of records of one page.

    Args:
        body: Parsed JSON of the page.
        data_path: Dotted path to the records; ``None`` means the body itself is the list.

    Returns:
        The records; a missing or ``null`` value counts as an empty page.

    Raises:
        TypeError: The value found is not a list.
    """
    items = find_path(body, data_path, default=None)
    if items is None:
        return []
    if not isinstance(items, list):
        where = repr(data_path) if data_path else "the body"
        msg = f"expected a list at {where}; got {type(items).__name__}"
        raise TypeError(msg)
    return items


def set_path(target: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path inside a dict, creating intermediate dicts (``"variables.after"``)."""
    *parents, last = path.split(".")
    node = target
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[last] = value


def _is_index(part: str) -> bool:
    return part.lstrip("-").isdigit()


def _truthy(value: Any) -> bool:
    # Some APIs send booleans as strings ("true"/"false").
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


@runtime_checkable
class Paginator(Protocol):
    """What ``ProviderClient.pages`` needs from a paginator."""

    @property
    def has_next_page(self) -> bool: ...
    def init_request(self, request: PageRequest) -> None: ...
    def update_state(self, response: httpx.Response, data: list[Any] | None = None) -> None: ...
    def update_request(self, request: PageRequest) -> None: ...


class BasePaginator(ABC, Generic[TToken]):
    """Common state: whether a next page exists and the token that reaches it."""

    def __init__(self) -> None:
        self._has_next_page = True
        self._next: TToken | None = None

    @property
    def has_next_page(self) -> bool:
        """True while another page should be requested."""
        return self._has_next_page

    @property
    def next_token(self) -> TToken | None:
        """The token of the next page (cursor, URL, page number or offset)."""
        return self._next

    def init_request(self, request: PageRequest) -> None:
        """Reset state before the first page; subclasses may also set first-page parameters."""
        self._has_next_page = True
        self._next = None

    @abstractmethod
    def update_state(self, response: httpx.Response, data: list[Any] | None = None) -> None:
        """Read the next token from a page (its parsed ``response.json()`` and extracted ``data``)."""

    @abstractmethod
    def update_request(self, request: PageRequest) -> None:
        """Apply the next token to the request."""

    @staticmethod
    def _body(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None


class SinglePagePaginator(BasePaginator[None]):
    """One request; for endpoints that do not page."""

    def update_state(self, response: httpx.Response, data: list[Any] | None = None) -> None:
        """Stop after the first page."""
        self._has_next_page = False

    def update_request(self, request: PageRequest) -> None:
        """Never called: there is no next page."""


class CursorPaginator(BasePaginator[str]):
    """An opaque cursor read from the response body and sent back as a query or body parameter.

    Stops when the cursor is missing, ``null`` or ``""`` (Slack ends with an empty string), when
    ``has_more_path`` is false (Notion ``has_more``, Linear ``pageInfo.hasNextPage``), when
    ``end_path`` is true (Zendesk ``end_of_stream``, Jira ``isLast``), or on an empty page.
    """

    def __init__(
        self,
        cursor_path: str = "response_metadata.next_cursor",
        cursor_param: str = "cursor",
        *,
        cursor_location: Literal["query", "json"] = "query",
        has_more_path: str | None = None,
        end_path: str | None = None,
        stop_on_empty: bool = True,
    ) -> None:
        """Configure where the cursor is read and where it is sent.

        Args:
            cursor_path: Dotted path of the next cursor in the response body.
            cursor_param: Query parameter, or with ``cursor_location="json"`` a dotted path inside the
                JSON body (``"start_cursor"``, ``"variables.after"``, ``"pagination.starting_after"``).
            cursor_location: Send the cursor in the query string or in the JSON body.
            has_more_path: Dotted path of a boolean that is false on the last page.
            end_path: Dotted path of a boolean that is true on the last page.
            stop_on_empty: Stop on a page without records even if a cursor came back.
        """
        super().__init__()
        self.cursor_path = cursor_path
        self.cursor_param = cursor_param
        self.cursor_location = cursor_location
        self.has_more_path = has_more_path
        self.end_path = end_path
        self.stop_on_empty = stop_on_empty

    def update_state(self, response: httpx.Response, data: list[Any] | None = None) -> None:
        """Read the cursor and the stop signals."""
        body = self._body(response)
        cursor = find_path(body, self.cursor_path)
        self._next = str(cursor) if cursor not in (None, "") else None
        more = self._next is not None
        if more and self.has_more_path is not None:
            more = _truthy(find_path(body, self.has_more_path, default=False))
        if more and self.end_path is not None:
            more = not _truthy(find_path(body, self.end_path, default=False))
        if more and self.stop_on_empty and data is not None and not data:
            more = False
        self._has_next_page = more

    def update_request(self, request: PageRequest) -> None:
        """Send the cursor."""
        if self.cursor_location == "json":
            body = dict(request.json) if isinstance(request.json, Mapping) else {}
            # Copy nested dicts on the way down so the caller's original body is never mutated.
            request.json = _deep_copy_dicts(body)
            set_path(request.json, self.cursor_param, self._next)
        else:
            request.params[self.cursor_param] = self._next


def _deep_copy_dicts(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy_dicts(v) for k, v in value.items()}
    return value


class LinkHeaderPaginator(BasePaginator[str]):
    """RFC 8288 (ex-5988) ``Link`` header; follows ``rel="next"`` (GitHub)."""

    def __init__(self, rel: str = "next") -> None:
        """Follow the link with relation ``rel``."""
        super().__init__()
        self.rel = rel

    def update_state(self, response: httpx.Response, data: list[Any] | None = None) -> None:
        """Read the next link."""
        link = response.links.get(self.rel, {}).get("url")
        self._next = link or None
        self._has_next_page = self._next is not None

    def update_request(self, request: PageRequest) -> None:
        """Request the linked URL; it carries its own query string."""
        if self._next is None:
            return
        request.url = self._next
        request.params = {}


class NextUrlPaginator(BasePaginator[str]):
    """A next-page URL in the body (PostHog ``next``, Zendesk ``next_page``), absolute or relative."""

    def __init__(self, next_path: str = "next", *, stop_on_empty: bool = False) -> None:
        """Read the next URL at dotted path ``next_path``."""
        super().__init__()
        self.next_path = next_path
        self.stop_on_empty = stop_on_empty

    def update_state(self, response: httpx.Response, data: list[Any] | None = None) -> None:
        """Read the next URL."""
        value = find_path(self._body(response), self.next_path)
        self._next = str(value) if value not in (None, "") else None
        more = self._next is not None
        if more and self.stop_on_empty and data is not None and not data:
            more = False
        self._has_next_page = more

    def update_request(self, request: PageRequest) -> None:
        """Request the next URL; it carries its own query string."""
        if self._next is None:
            return
        request.url = self._next
        request.params = {}


class PageNumberPaginator(BasePaginator[int]):
    """``?page=N``; stops on an empty page, a short page, or past ``total_pages_path``."""

    def __init__(
        self,
        page_param: str = "page",
        start: int = 1,
        *,
        total_pages_path: str | None = None,
        page_size: int | None = None,
        max_pages: int | None = None,
    ) -> None:
        """Configure page numbering.

        Args:
            page_param: Query parameter of the page number.
            start: Number of the first page (0 or 1).
            total_pages_path: Dotted path of the total page count in the body.
            page_size: The page size requested; a page with fewer records is the last.
            max_pages: Stop after this many pages (some APIs cap page depth).
        """
        super().__init__()
        self.page_param = page_param
        self.start = start
        self.total_pages_path = total_pages_path
        self.page_size = page_size
        self.max_pages = max_pages
        self._page = start

    def init_request(self, request: PageRequest) -> None:
        """Ask for the first page."""
        super().init_request(request)
        self._page = self.start
        request.params[self.page_param] = self._page

    def update_state(self, response: httpx.Response, data: list[Any] | None = None) -> None:
        """Decide whether the page after this one exists."""
        more = not (data is not None and not data)
        if more and self.page_size is not None and data is not None and len(data) < self.page_size:
            more = False
        if more and self.total_pages_path is not None:
            total = find_path(self._body(response), self.total_pages_path)
            if isinstance(total, (int, float)) and not isinstance(total, bool):
                # Page numbers past the total: ``start`` may be 0 or 1.
                more = self._page - self.start + 1 < total
        if more and self.max_pages is not None:
            more = self._page - self.start + 1 < self.max_pages
        self._next = self._page + 1 if more else None
        self._has_next_page = more

    def update_request(self, request: PageRequest) -> None:
        """Ask for the next page number."""
        if self._next is None:
            return
        self._page = self._next
        request.params[self.page_param] = self._page


class OffsetPaginator(BasePaginator[int]):
    """``offset``/``limit`` (or Jira's ``startAt``/``maxResults``).

    The offset advances by the number of records received, not by ``limit``, because servers may
    cap the page size below what was asked (Jira does) and advancing by ``limit`` would skip records.
    Stops on an empty page, at ``total_path``, when ``end_path`` is true, or, when no total is
    known, on a page shorter than ``limit``.
    """

    def __init__(
        self,
        limit: int,
        *,
        offset: int = 0,
        offset_param: str = "offset",
        limit_param: str = "limit",
        total_path: str | None = None,
        end_path: str | None = None,
    ) -> None:
        """Configure offset paging.

        Args:
            limit: Records per page to request.
            offset: First offset.
            offset_param: Query parameter of the offset.
            limit_param: Query parameter of the page size.
            total_path: Dotted path of the total record count in the body.
            end_path: Dotted path of a boolean that is true on the last page (Jira ``isLast``).

        Raises:
            ValueError: ``limit`` is not positive.
        """
        super().__init__()
        if limit < 1:
            msg = f"limit: expected >= 1; got {limit!r}"
            raise ValueError(msg)
        self.limit = limit
        self.initial_offset = offset
        self.offset_param = offset_param
        self.limit_param = limit_param
        self.total_path = total_path
        self.end_path = end_path
        self._offset = offset

    def init_request(self, request: PageRequest) -> None:
        """Ask for the first page."""
        super().init_request(request)
        self._offset = self.initial_offset
        request.params[self.offset_param] = self._offset
        request.params[self.limit_param] = self.limit

    def update_state(self, response: httpx.Response, data: list[Any] | None = None) -> None:
        """Advance the offset by the records received and decide whether more exist."""
        received = len(data) if data is not None else self.limit
        body = self._body(response)
        more = received > 0
        nxt = self._offset + received
        total = find_path(body, self.total_path) if self.total_path else None
        if more and isinstance(total, (int, float)) and not isinstance(total, bool):
            more = nxt < total
        elif more and self.end_path is None and received < self.limit:
            more = False
        if more and self.end_path is not None:
            more = not _truthy(find_path(body, self.end_path, default=False))
        self._next = nxt if more else None
        self._has_next_page = more

    def update_request(self, request: PageRequest) -> None:
        """Ask for the next offset."""
        if self._next is None:
            return
        self._offset = self._next
        request.params[self.offset_param] = self._offset
        request.params[self.limit_param] = self.limit

