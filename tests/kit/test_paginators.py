"""Paginators against a stateful fake over real HTTP (and once in-process through MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hissuno_airflow.kit.errors import ProviderResponseError
from hissuno_airflow.kit.http import (
    CursorPaginator,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    ProviderClient,
    SinglePagePaginator,
    extract_items,
    find_path,
)
from tests.fakes.paged_api import PagedApi
from tests.fakes.server import FakeProvider, FakeRequest, Reply, post

ALL_IDS = list(range(1, 26))
Make = Callable[..., ProviderClient]


def ids(items: list[Any]) -> list[int]:
    return [t["id"] for t in items]


# --- helpers --------------------------------------------------------------------------------------


def test_find_path_walks_dicts_and_list_indexes() -> None:
    body = {"a": {"b": [{"c": 1}, {"c": 2}]}, "n": None}
    assert find_path(body, "a.b.1.c") == 2
    assert find_path(body, "a.b.-1.c") == 2
    assert find_path(body, "a.b.5.c", default="x") == "x"
    assert find_path(body, "a.missing") is None
    assert find_path(body, "a.b.c") is None  # a name segment on a list
    assert find_path(body, None) is body


def test_extract_items() -> None:
    assert extract_items({"data": {"items": [1, 2]}}, "data.items") == [1, 2]
    assert extract_items([3], None) == [3]
    assert extract_items({"items": None}, "items") == []
    assert extract_items({}, "items") == []
    with pytest.raises(TypeError, match="expected a list at 'items'; got dict"):
        extract_items({"items": {"id": 1}}, "items")


# --- each style over 127.0.0.1 ---------------------------------------------------------------------


def test_page_number_with_total_pages(api: PagedApi, make_client: Make) -> None:
    client = make_client(api.url)
    pag = PageNumberPaginator(total_pages_path="page_count")
    items = list(client.paginate("GET", "/api/v2/tickets", pag, params={"per_page": 10}, data_path="tickets"))
    assert ids(items) == ALL_IDS
    assert [r.query["page"] for r in api.requests_to("/api/v2/tickets")] == ["1", "2", "3"]


def test_page_number_stops_on_short_page(api: PagedApi, make_client: Make) -> None:
    pag = PageNumberPaginator(page_size=10)
    items = list(make_client(api.url).paginate("GET", "/api/v2/tickets", pag, params={"per_page": 10}, data_path="tickets"))
    assert ids(items) == ALL_IDS
    assert api.count("/api/v2/tickets") == 3


def test_page_number_stops_on_empty_page_without_hints(api: PagedApi, make_client: Make) -> None:
    api.tickets = api.tickets[:20]
    items = list(make_client(api.url).paginate("GET", "/api/v2/tickets", PageNumberPaginator(), params={"per_page": 10}, data_path="tickets"))
    assert ids(items) == list(range(1, 21))
    assert api.count("/api/v2/tickets") == 3  # the third, empty page is how it knows


def test_slack_cursor_ends_on_empty_string(api: PagedApi, make_client: Make) -> None:
    client = make_client(api.url)
    pages = list(client.pages("GET", "/slack/tickets.list", CursorPaginator(), params={"limit": 10}, data_path="tickets"))
    assert [len(p.items) for p in pages] == [10, 10, 5]
    assert ids([t for p in pages for t in p.items]) == ALL_IDS
    sent = [r.query.get("cursor") for r in api.requests_to("/slack/tickets.list")]
    assert sent == [None, "10", "20"]
    assert pages[-1].body["response_metadata"]["next_cursor"] == ""


def test_link_header_pagination(api: PagedApi, make_client: Make) -> None:
    items = list(make_client(api.url).paginate("GET", "/github/issues", LinkHeaderPaginator(), params={"per_page": 10}))
    assert ids(items) == ALL_IDS
    assert [r.query for r in api.requests_to("/github/issues")] == [
        {"per_page": "10"},
        {"page": "2", "per_page": "10"},
        {"page": "3", "per_page": "10"},
    ]


def test_offset_advances_by_records_received_when_the_server_caps_pages(api: PagedApi, make_client: Make) -> None:
    api.max_limit = 7  # Jira lowers maxResults silently
    pag = OffsetPaginator(10, offset_param="startAt", limit_param="maxResults", total_path="total")
    items = list(make_client(api.url).paginate("GET", "/jira/search", pag, data_path="issues"))
    assert ids(items) == ALL_IDS
    assert [r.query["startAt"] for r in api.requests_to("/jira/search")] == ["0", "7", "14", "21"]


def test_offset_without_total_stops_on_short_page(api: PagedApi, make_client: Make) -> None:
    pag = OffsetPaginator(10, offset_param="startAt", limit_param="maxResults")
    items = list(make_client(api.url).paginate("GET", "/jira/search", pag, data_path="issues"))
    assert ids(items) == ALL_IDS
    assert api.count("/jira/search") == 3


def test_next_url_pagination(api: PagedApi, make_client: Make) -> None:
    items = list(make_client(api.url).paginate("GET", "/posthog/events", NextUrlPaginator("next"), params={"limit": 10}, data_path="results"))
    assert ids(items) == ALL_IDS
    assert [r.query.get("offset") for r in api.requests_to("/posthog/events")] == [None, "10", "20"]


def test_zendesk_next_page_url(api: PagedApi, make_client: Make) -> None:
    pag = NextUrlPaginator("next_page")
    items = list(make_client(api.url).paginate("GET", "/api/v2/tickets", pag, params={"per_page": 12}, data_path="tickets"))
    assert ids(items) == ALL_IDS
    assert api.count("/api/v2/tickets") == 3


def test_body_cursor_with_has_more_does_not_mutate_the_callers_body(api: PagedApi, make_client: Make) -> None:
    body = {"page_size": 10, "filter": {"value": "page"}}
    pag = CursorPaginator("next_cursor", "start_cursor", cursor_location="json", has_more_path="has_more")
    items = list(make_client(api.url).paginate("POST", "/notion/search", pag, json=body, data_path="results"))
    assert ids(items) == ALL_IDS
    sent = [r.json() for r in api.requests_to("/notion/search")]
    assert [s.get("start_cursor") for s in sent] == [None, "10", "20"]
    assert all(s["filter"] == {"value": "page"} for s in sent)
    assert body == {"page_size": 10, "filter": {"value": "page"}}


def test_paginator_instances_are_reusable(api: PagedApi, make_client: Make) -> None:
    client = make_client(api.url)
    pag = CursorPaginator(cursor_path="response_metadata.next_cursor")
    first = list(client.paginate("GET", "/slack/tickets.list", pag, params={"limit": 10}, data_path="tickets"))
    second = list(client.paginate("GET", "/slack/tickets.list", pag, params={"limit": 10}, data_path="tickets"))
    assert ids(first) == ids(second) == ALL_IDS


def test_max_pages_and_single_page(api: PagedApi, make_client: Make) -> None:
    client = make_client(api.url)
    two = list(client.paginate("GET", "/slack/tickets.list", CursorPaginator(), params={"limit": 10}, data_path="tickets", max_pages=2))
    assert ids(two) == list(range(1, 21))
    one = list(client.paginate("GET", "/slack/tickets.list", SinglePagePaginator(), params={"limit": 10}, data_path="tickets"))
    assert ids(one) == list(range(1, 11))


# --- nested GraphQL-style cursors, served in-process ---------------------------------------------------


class GraphQLish(FakeProvider):
    """Linear-like ``pageInfo`` nested in ``data``; the cursor rides in ``variables.after``."""

    def __init__(self, total: int, *, stale_cursor: bool = False) -> None:
        super().__init__()
        self.total = total
        self.stale_cursor = stale_cursor

    @post("/graphql")
    def handle_post(self, req: FakeRequest) -> Reply:
        after = int(((req.json() or {}).get("variables") or {}).get("after") or 0)
        nodes = [{"id": i} for i in range(after + 1, min(after + 4, self.total) + 1)]
        end = "0" if self.stale_cursor else str(after + len(nodes))
        more = after + len(nodes) < self.total
        return {"data": {"issues": {"nodes": nodes, "pageInfo": {"hasNextPage": more, "endCursor": end}}}}


def _graphql_client(fake: GraphQLish) -> ProviderClient:
    return ProviderClient("linear", "https://api.linear.invalid", transport=fake.transport())


def test_nested_cursor_with_has_next_page_in_process() -> None:
    fake = GraphQLish(10)
    pag = CursorPaginator(
        "data.issues.pageInfo.endCursor",
        "variables.after",
        cursor_location="json",
        has_more_path="data.issues.pageInfo.hasNextPage",
    )
    with _graphql_client(fake) as client:
        items = list(client.paginate("POST", "/graphql", pag, json={"query": "{...}"}, data_path="data.issues.nodes"))
    assert ids(items) == list(range(1, 11))
    assert [r.json()["variables"]["after"] if "variables" in r.json() else None for r in fake.requests] == [None, "4", "8"]
    assert fake.errors == []


def test_a_cursor_that_does_not_advance_is_an_error_not_a_loop() -> None:
    fake = GraphQLish(10, stale_cursor=True)
    pag = CursorPaginator("data.issues.pageInfo.endCursor", "variables.after", cursor_location="json",
                          has_more_path="data.issues.pageInfo.hasNextPage")
    with _graphql_client(fake) as client, pytest.raises(ProviderResponseError, match="did not advance"):
        list(client.paginate("POST", "/graphql", pag, json={"variables": {"after": "0"}}, data_path="data.issues.nodes"))
    assert len(fake.requests) == 1


def test_cursor_stops_on_empty_page_even_with_a_cursor(make_client: Make) -> None:
    fake = FakeProvider()
    fake.router.add("GET", "/items", lambda req: {"items": [], "response_metadata": {"next_cursor": "more"}})
    client = ProviderClient("x", "http://fake.invalid", transport=fake.transport())
    assert list(client.paginate("GET", "/items", CursorPaginator(), data_path="items")) == []
    assert len(fake.requests) == 1


def test_end_path_stops_zendesk_incremental(make_client: Make) -> None:
    fake = FakeProvider()
    fake.router.add("GET", "/inc", lambda req: {"tickets": [{"id": 1}], "after_cursor": "abc", "end_of_stream": True})
    client = ProviderClient("zendesk", "http://fake.invalid", transport=fake.transport())
    pag = CursorPaginator("after_cursor", "cursor", end_path="end_of_stream")
    assert ids(list(client.paginate("GET", "/inc", pag, data_path="tickets"))) == [1]
    assert len(fake.requests) == 1


def test_next_link_to_another_origin_is_refused(serve_fake: Callable[[FakeProvider], FakeProvider], make_client: Make) -> None:
    elsewhere = serve_fake(FakeProvider())
    home = serve_fake(FakeProvider())
    home.router.add("GET", "/list", lambda req: {"items": [1], "next": f"{elsewhere.url}/steal"})
    client = make_client(home.url)
    with pytest.raises(ProviderResponseError, match="another origin"):
        list(client.paginate("GET", "/list", NextUrlPaginator(), data_path="items"))
    assert elsewhere.requests == []


def test_a_non_list_at_data_path_is_a_response_error(api: PagedApi, make_client: Make) -> None:
    with pytest.raises(ProviderResponseError) as info:
        list(make_client(api.url).paginate("GET", "/api/v2/me", SinglePagePaginator(), data_path="user"))
    assert str(info.value) == "paged GET /api/v2/me: expected a list at 'user'; got dict"
