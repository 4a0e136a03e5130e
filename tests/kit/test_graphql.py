"""GraphQL over ProviderClient against a fake on 127.0.0.1: errors in a 200, rate limits, Relay paging."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hissuno_airflow.kit.errors import (
    ProviderAuthError,
    ProviderResponseError,
    ProviderUnavailable,
    RateLimited,
)
from hissuno_airflow.kit.http import GraphQL, ProviderClient, operation_label
from tests.fakes.graphql_api import RATE_LIMITED, GraphQLApi, gql_error
from tests.fakes.server import FakeClock, FakeRequest
from tests.kit.conftest import TOKEN, RecordingLogger

Make = Callable[..., ProviderClient]

ISSUES = """
query Issues($first: Int!, $after: String) {
  issues(first: $first, after: $after, orderBy: updatedAt) {
    nodes { id title }
    pageInfo { hasNextPage endCursor }
  }
}
"""
VIEWER = "query Me { viewer { id name } }"


@pytest.fixture
def linear(serve_fake: Callable[[GraphQLApi], GraphQLApi], fake_clock: FakeClock) -> GraphQLApi:
    fake = serve_fake(GraphQLApi(7, clock=fake_clock.time))
    fake.issue_token(TOKEN)
    return fake


@pytest.fixture
def gql(linear: GraphQLApi, make_client: Make) -> GraphQL:
    return GraphQL(make_client(linear.url, provider="linear"))


def after_is(cursor: str | None) -> Callable[[FakeRequest], bool]:
    return lambda req: (req.json().get("variables") or {}).get("after") == cursor


def test_query_posts_query_and_variables_and_returns_data(gql: GraphQL, linear: GraphQLApi) -> None:
    assert gql.query(VIEWER, {"x": 1}) == {"viewer": {"id": "u-1", "name": "Ada"}}
    assert linear.bodies() == [{"query": VIEWER, "variables": {"x": 1}}]


def test_errors_in_a_200_raise_a_response_error_naming_the_operation_and_first_message(
    gql: GraphQL, linear: GraphQLApi
) -> None:
    body = gql_error(f"Entity not found (token {TOKEN})", "INVALID_INPUT", "invalid input")
    body["errors"].append({"message": "second", "extensions": {}})
    linear.inject("/graphql", 200, json=body)
    with pytest.raises(ProviderResponseError) as info:
        gql.query(VIEWER)
    assert type(info.value) is ProviderResponseError
    assert str(info.value) == "linear POST /graphql: query Me failed: Entity not found (token ***) (+1 more) (INVALID_INPUT)"
    assert TOKEN not in str(info.value)
    assert linear.count("/graphql") == 1  # not retried


def test_a_rejected_document_in_a_400_names_status_operation_and_message(gql: GraphQL) -> None:
    with pytest.raises(ProviderResponseError) as info:
        gql.query("query Nope { nope }")
    assert str(info.value) == (
        "linear POST /graphql: 400 Bad Request: query Nope failed: Cannot query field on type Query"
        " (GRAPHQL_VALIDATION_FAILED)"
    )


def test_auth_error_code_in_a_200_is_an_auth_error(gql: GraphQL, linear: GraphQLApi) -> None:
    linear.inject("/graphql", 200, json=gql_error("Authentication required", type_="authentication error"))
    with pytest.raises(ProviderAuthError, match="query Me failed: Authentication required"):
        gql.query(VIEWER)
    assert linear.count("/graphql") == 1


def test_ratelimited_in_a_200_is_retried_with_backoff_then_succeeds(
    gql: GraphQL, linear: GraphQLApi, fake_clock: FakeClock, log: RecordingLogger
) -> None:
    linear.inject("/graphql", 200, json=RATE_LIMITED, times=2)
    assert gql.query(VIEWER)["viewer"]["id"] == "u-1"
    assert linear.count("/graphql") == 3
    assert fake_clock.sleeps == [0.5, 1.0]  # RetryPolicy's exponential backoff (jitter pinned to 1)
    assert log.warnings()[0] == "linear POST /graphql: 200 OK (RATELIMITED); attempt 1/5, waiting 0.5 s for linear's rate limit"


def test_ratelimited_waits_for_linears_reset_header(gql: GraphQL, linear: GraphQLApi, fake_clock: FakeClock) -> None:
    reset = str(int(fake_clock.time()) + 20)
    linear.inject("/graphql", 400, json=RATE_LIMITED, headers={"x-ratelimit-requests-reset": reset})
    assert gql.query(VIEWER)["viewer"]["name"] == "Ada"
    assert fake_clock.sleeps == [pytest.approx(20.0)]


def test_ratelimited_until_retries_run_out_raises_rate_limited(gql: GraphQL, linear: GraphQLApi) -> None:
    linear.inject("/graphql", 200, json=RATE_LIMITED, times=10)
    with pytest.raises(RateLimited) as info:
        gql.query(VIEWER)
    assert str(info.value) == "linear POST /graphql: query Me failed: Rate limit exceeded (RATELIMITED) after 5 attempts"
    assert linear.count("/graphql") == 5


def test_transient_error_code_is_retried_like_a_503(gql: GraphQL, linear: GraphQLApi) -> None:
    linear.inject("/graphql", 200, json=gql_error("boom", "INTERNAL_SERVER_ERROR"), times=5)
    with pytest.raises(ProviderUnavailable):
        gql.query(VIEWER)
    assert linear.count("/graphql") == 5


def test_nodes_follow_page_info_over_three_pages(gql: GraphQL, linear: GraphQLApi) -> None:
    got = list(gql.nodes(ISSUES, "issues", {"first": 3}))
    assert [i["id"] for i in got] == [f"iss-{n}" for n in range(1, 8)]
    assert [b["variables"] for b in linear.bodies()] == [
        {"first": 3},
        {"first": 3, "after": "c3"},
        {"first": 3, "after": "c6"},
    ]


def test_ratelimited_on_page_two_is_retried_and_paging_continues(
    gql: GraphQL, linear: GraphQLApi, fake_clock: FakeClock
) -> None:
    linear.inject("/graphql", 200, json=RATE_LIMITED, when=after_is("c3"))
    got = list(gql.nodes(ISSUES, "issues", {"first": 3}))
    assert len(got) == 7 and len({i["id"] for i in got}) == 7
    assert [b["variables"].get("after") for b in linear.bodies()] == [None, "c3", "c3", "c6"]
    assert fake_clock.sleeps == [0.5]


def test_an_error_on_page_three_stops_paging_with_the_error(gql: GraphQL, linear: GraphQLApi) -> None:
    linear.inject("/graphql", 200, json=gql_error("cursor expired", "INVALID_CURSOR"), when=after_is("c6"))
    seen: list[str] = []
    with pytest.raises(ProviderResponseError, match="query Issues failed: cursor expired"):
        for issue in gql.nodes(ISSUES, "issues", {"first": 3}):
            seen.append(issue["id"])
    assert len(seen) == 6


def test_a_query_without_page_info_is_refused_instead_of_reading_one_page(gql: GraphQL, linear: GraphQLApi) -> None:
    linear.with_page_info = False
    with pytest.raises(ProviderResponseError, match=r"query Issues selects no pageInfo \{ hasNextPage endCursor \} on 'issues'"):
        list(gql.nodes(ISSUES, "issues", {"first": 3}))


def test_operation_label() -> None:
    assert operation_label(ISSUES) == "query Issues"
    assert operation_label("# comment\nmutation Save($x: Int) { save }") == "mutation Save"
    assert operation_label("{ viewer { id } }") == "query"
    assert operation_label("subscription { x }") == "subscription"
