"""Read a time-ordered search past the provider's cap on total results, by moving the window.

Some search APIs stop after a fixed number of results per query however it is paged: HubSpot CRM
search after 10,000, Zendesk search after 1,000. Sorted ascending by update time and filtered with an
inclusive lower bound (``lastmodifieddate GTE t``, ``updated>=t``), such a search can still be read in
full: when a window reaches the cap, start a new one at the last update time seen. Records carrying
exactly that time come back at the top of the new window; those already yielded (same id, same time)
are skipped, while a record that changed since (same id, newer time) is yielded again, as the newer
version it is::

    def window(since: datetime | None) -> Iterator[dict[str, Any]]:
        body = {"sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], "limit": 200, ...}
        if since is not None:
            body["filterGroups"] = [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE",
                                                  "value": str(int(since.timestamp() * 1000))}]}]
        return client.paginate("POST", "/crm/v3/objects/contacts/search", paginator, json=body,
                               data_path="results")

    for contact in windowed_search(window, cap=10_000, key=updated_at, record_id=lambda r: r["id"],
                                   since=ctx.last_sync_at):
        ...

The helper stops pulling from a window once it has taken ``cap`` records (closing the window's
iterator), so a paginator that would otherwise ask for result 10,001, and get HubSpot's 400, never does.

When more than ``cap`` records share one update time no window can move past them. The helper then
raises ``SearchCapExceeded`` (a ``ProviderResponseError``) after yielding everything before that time;
it never loops. A caller that can read one instant another way (an id-ordered search filtered on the
exact time, say) can catch it and resume from ``error.at``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from ..errors import ProviderResponseError, SearchCapExceeded


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=_Ordered)
"""The update-time type: anything ordered (``datetime``, epoch numbers, uniform ISO strings)."""
R = TypeVar("R")
"""The record type."""


def windowed_search(
    search: Callable[[K | None], Iterable[R]],
    *,
    cap: int,
    key: Callable[[R], K],
    record_id: Callable[[R], Hashable],
    since: K | None = None,
    provider: str = "",
    page: int | None = None,
) -> Iterator[R]:
    """Yield every record of a capped, time-ordered search exactly once, in ascending update time.

    Args:
        search: Runs one window: given an inclusive lower bound on update time (``None`` for no bound),
            yields matching records sorted ascending by update time. It may yield more than ``cap``;
            the helper reads at most ``cap`` per window.
        cap: Most results the provider returns for one query (HubSpot 10,000, Zendesk 1,000).
        key: The record's update time (normalise it: compare datetimes or numbers, not mixed strings).
        record_id: The record's stable id.
        since: Lower bound of the first window (the last high-water mark), inclusive.
        provider: Plugin id, for error text.
        page: Read at most this many records per window (one page of the search), then start the next
            window at the last update time seen. A search paged by offset skips a record whenever one it
            has passed is updated meanwhile (that one jumps to the end, the rest shift back one place across
            the page boundary), and a cursor past the skipped record never comes back for it; a window per
            page cannot skip. A page whose records all share one update time is read again as a window of
            up to ``cap`` records (those already yielded are passed over), up to the first record past it.

    Yields:
        Records, each (id, update time) pair once.

    Raises:
        SearchCapExceeded: At least ``cap`` records share one update time.
        ProviderResponseError: A window's records are not sorted ascending by update time, or come
            before the window's lower bound.
        ValueError: ``cap`` is not positive.
    """
    if cap < 1:
        msg = f"cap: expected >= 1; got {cap!r}"
        raise ValueError(msg)
    prefix = f"{provider}: " if provider else ""
    bound = since
    # Ids already yielded at the newest update time seen; only they can come back in the next window.
    edge_time: K | None = None
    edge_ids: set[Hashable] = set()
    last: K | None = None  # the newest update time seen, across windows
    step = cap if page is None else max(1, min(page, cap))
    limit = step
    while True:
        taken = 0
        cut = False
        first: K | None = None
        window = iter(search(bound))
        try:
            for record in window:
                taken += 1
                at = key(record)
                if first is None:
                    first = at
                    if bound is not None and at < bound:
                        msg = f"{prefix}search window from {bound!r} returned a record updated at {at!r}"
                        raise ProviderResponseError(msg, provider=provider)
                if last is not None and at < last:
                    msg = f"{prefix}search results are not sorted by update time ({at!r} after {last!r})"
                    raise ProviderResponseError(msg, provider=provider)
                last = at
                ident = record_id(record)
                if edge_time is None or edge_time < at:
                    edge_time, edge_ids = at, {ident}
                    yield record
                elif ident not in edge_ids:
                    # ``at == edge_time``: the ordering checks above rule out anything older.
                    edge_ids.add(ident)
                    yield record
                # A window widened over one instant ends with the first record past it: paging on by offset
                # from there would be open to the shifts that windows of one page avoid.
                if taken >= limit or (limit > step and first < at):
                    cut = True
                    break
        finally:
            close = getattr(window, "close", None)
            if callable(close):
                close()
        if not cut or last is None or first is None:
            return
        if not (first < last):
            if limit < cap:
                # A page of one update time: read that instant in one wider window from the same bound.
                limit = cap
                continue
            msg = (
                f"{prefix}at least {cap} records share the update time {last!r}; "
                f"a search capped at {cap} results cannot read past it"
            )
            raise SearchCapExceeded(msg, provider=provider, at=last, cap=cap)
        bound = last
        limit = step
