"""RetryPolicy: classification of responses, waits from headers, backoff, and the retry loop over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from hissuno_airflow.kit.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderResponseError,
    ProviderUnavailable,
    RateLimited,
)
from hissuno_airflow.kit.http import ProviderClient, RetryPolicy
from tests.fakes.paged_api import PagedApi
from tests.fakes.server import FakeClock
from tests.kit.conftest import TOKEN, RecordingLogger

NOW = 1_700_000_000.0


def policy(**kw: object) -> RetryPolicy:
    kw.setdefault("clock", lambda: NOW)
    kw.setdefault("jitter", lambda: 1.0)
    return RetryPolicy(**kw)  # type: ignore[arg-type]


def resp(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {})


# --- classify: pure decisions -------------------------------------------------------------------


def test_retry_after_seconds_is_the_delay() -> None:
    d = policy().classify(1, resp(429, {"Retry-After": "30"}))
    assert (d.action, d.kind, d.delay, d.retry_after) == ("retry", "rate_limited", 30.0, 30.0)


def test_retry_after_http_date_is_relative_to_the_clock() -> None:
    when = datetime.fromtimestamp(NOW + 45, tz=UTC)
    d = policy().classify(1, resp(429, {"Retry-After": format_datetime(when, usegmt=True)}))
    assert d.action == "retry"
    assert d.delay == pytest.approx(45.0)


def test_epoch_reset_header_is_used_without_retry_after() -> None:
    # Intercom and GitHub send the reset as epoch seconds.
    d = policy().classify(1, resp(429, {"X-RateLimit-Reset": str(int(NOW + 12))}))
    assert d.delay == pytest.approx(12.0)


def test_iso_reset_header_as_jira_sends_it() -> None:
    reset = datetime.fromtimestamp(NOW + 120, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")
    expected = datetime.strptime(reset, "%Y-%m-%dT%H:%M%z").timestamp() - NOW
    d = policy(max_retry_after=300).classify(1, resp(429, {"X-RateLimit-Reset": reset}))
    assert d.action == "retry"
    assert d.delay == pytest.approx(expected)
    assert 60 <= d.delay <= 120


def test_github_403_with_spent_budget_is_a_rate_limit_not_an_auth_error() -> None:
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW + 5))}
    d = policy().classify(1, resp(403, headers))
    assert (d.action, d.kind) == ("retry", "rate_limited")
    assert d.delay == pytest.approx(5.0)
    assert policy().classify(1, resp(403)).kind == "auth"
    assert policy().classify(1, resp(401)).action == "raise"


def test_a_providers_own_remaining_header_at_zero_cools_down_for_one_window() -> None:
    hubspot = policy(remaining_header="X-HubSpot-RateLimit-Remaining",
                     window_ms_header="X-HubSpot-RateLimit-Interval-Milliseconds")
    spent = {"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    assert hubspot.classify(1, resp(200, spent)).cooldown_until == pytest.approx(NOW + 10)
    left = {**spent, "X-HubSpot-RateLimit-Remaining": "3"}
    assert hubspot.classify(1, resp(200, left)).cooldown_until is None
    assert policy().classify(1, resp(200, spent)).cooldown_until is None  # not declared: not read


def test_retry_after_beyond_the_cap_raises_at_once() -> None:
    d = policy(max_retry_after=60).classify(1, resp(429, {"Retry-After": "3600"}))
    assert (d.action, d.kind, d.retry_after) == ("raise", "rate_limited", 3600.0)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    full = policy(backoff_base=0.5, backoff_max=3)
    assert [full.classify(n, resp(503)).delay for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    half = policy(backoff_base=0.5, jitter=lambda: 0.0)
    assert [half.classify(n, resp(502)).delay for n in (1, 2, 3)] == [0.25, 0.5, 1.0]


def test_429_without_headers_backs_off_and_last_attempt_raises() -> None:
    p = policy(max_attempts=3)
    assert p.classify(1, resp(429)).delay == 0.5
    last = p.classify(3, resp(429))
    assert (last.action, last.kind) == ("raise", "rate_limited")


def test_fatal_statuses_and_success() -> None:
    p = policy()
    assert p.classify(1, resp(404)).kind == "client_error"
    assert p.classify(1, resp(501)).action == "raise"  # not in retry_statuses
    assert p.classify(1, resp(200)).action == "return"
    assert policy(retry_statuses={409, 503}).classify(1, resp(409)).action == "retry"
    assert policy(retry_statuses={503}).classify(1, resp(500)).action == "raise"


def test_transport_errors_are_retried_but_not_forever() -> None:
    p = policy(max_attempts=2)
    err = httpx.ConnectError("refused")
    assert p.classify(1, error=err).action == "retry"
    assert p.classify(2, error=err).action == "raise"
    assert p.classify(1, error=httpx.UnsupportedProtocol("ftp")).action == "raise"


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# --- the loop, over real HTTP ------------------------------------------------------------------


def test_429s_with_retry_after_are_slept_through(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock, log: RecordingLogger
) -> None:
    api.inject_429("/api/v2/me", times=2, retry_after=7)
    client = make_client(api.url)
    assert client.get_json("/api/v2/me") == {"user": {"id": 7, "name": "Agent"}}
    assert api.count("/api/v2/me") == 3
    assert fake_clock.sleeps == [7.0, 7.0]
    warnings = log.warnings()
    assert [w.split("; ")[1].split(",")[0] for w in warnings] == ["attempt 1/5", "attempt 2/5"]
    assert all(w.startswith("paged GET /api/v2/me: 429 Too Many Requests") for w in warnings)


def test_rate_limit_exhaustion_raises_rate_limited(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    api.inject_429("/api/v2/me", times=10, retry_after=30)
    client = make_client(api.url, retry=RetryPolicy(max_attempts=3, sleep=fake_clock.sleep, clock=fake_clock.time))
    with pytest.raises(RateLimited) as info:
        client.get("/api/v2/me", params={"token": TOKEN, "page": 3})
    err = info.value
    assert str(err) == "paged GET /api/v2/me: 429 Too Many Requests (retry after 30s) after 3 attempts"
    assert (err.retry_after, err.status, err.provider) == (30.0, 429, "paged")
    assert api.count("/api/v2/me") == 3
    assert fake_clock.sleeps == [30.0, 30.0]


def test_long_retry_after_defers_to_the_scheduler(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    api.inject_429("/api/v2/me", times=1, retry_after=3600)
    with pytest.raises(RateLimited) as info:
        make_client(api.url).get("/api/v2/me")
    assert info.value.retry_after == 3600.0
    assert str(info.value) == "paged GET /api/v2/me: 429 Too Many Requests (retry after 3600s)"
    assert api.count("/api/v2/me") == 1
    assert fake_clock.sleeps == []


def test_5xx_exhaustion_raises_unavailable_with_backoff(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    api.inject_5xx("/api/v2/me", status=502, times=10)
    with pytest.raises(ProviderUnavailable) as info:
        make_client(api.url).get("/api/v2/me")
    assert str(info.value) == "paged GET /api/v2/me: 502 Bad Gateway after 5 attempts"
    assert fake_clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert api.count("/api/v2/me") == 5


def test_503_with_retry_after_honours_it(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    api.inject_5xx("/api/v2/me", status=503, headers={"Retry-After": "3"})
    assert make_client(api.url).get("/api/v2/me").status_code == 200
    assert fake_clock.sleeps == [3.0]


def test_github_style_403_rate_limit_waits_until_reset(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    reset = int(fake_clock.time()) + 40
    api.inject("/api/v2/me", 403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    assert make_client(api.url).get("/api/v2/me").status_code == 200
    assert fake_clock.sleeps == [pytest.approx(40.0)]


def _linear_rate_limited(response: httpx.Response) -> bool:
    """What a Linear plugin declares: a GraphQL error of type/code ``ratelimited`` under any status."""
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return False
    return any(str((e.get("extensions") or {}).get("code", "")).upper() == "RATELIMITED" for e in errors)


def test_a_plugin_declared_rate_limit_signal_waits_for_the_reset(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    reset = int(fake_clock.time()) + 25
    body = {"errors": [{"message": "Rate limit exceeded", "extensions": {"type": "ratelimited", "code": "RATELIMITED"}}]}
    api.inject("/api/v2/me", 400, json=body, headers={"x-ratelimit-requests-reset": str(reset)})
    limited = RetryPolicy(sleep=fake_clock.sleep, clock=fake_clock.time, jitter=lambda: 1.0,
                          rate_limited_when=_linear_rate_limited)
    assert make_client(api.url, retry=limited).get("/api/v2/me").status_code == 200
    assert fake_clock.sleeps == [pytest.approx(25.0)]
    # Without the declaration the same answer is an ordinary client error, not retried.
    api.inject("/api/v2/me", 400, json=body)
    with pytest.raises(ProviderResponseError):
        make_client(api.url).get("/api/v2/me")
    # Other 400s stay client errors even with it.
    api.inject("/api/v2/me", 400, json={"errors": [{"message": "bad query", "extensions": {"code": "BAD"}}]})
    with pytest.raises(ProviderResponseError):
        make_client(api.url, retry=limited).get("/api/v2/me")


def test_rate_limited_without_an_announced_wait_honours_the_minimum() -> None:
    secondary = policy(rate_limited_when=lambda r: b"secondary rate limit" in r.content, rate_limit_min_wait=60)
    hit = httpx.Response(403, json={"message": "You have exceeded a secondary rate limit."})
    d = secondary.classify(1, hit)
    assert (d.action, d.kind, d.delay) == ("retry", "rate_limited", 60.0)
    assert secondary.classify(5, hit).action == "raise"
    assert secondary.classify(1, httpx.Response(403, json={"message": "Bad credentials"})).kind == "auth"
    # A predicate never turns a success into a rate limit.
    assert policy(rate_limited_when=lambda r: True).classify(1, resp(200)).action == "return"


def test_spent_budget_on_success_delays_the_next_request(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    # The fake answers the first call normally but says the window is spent for 9 more seconds.
    reset = str(int(fake_clock.time()) + 9)
    client = make_client(api.url)
    api.inject("/api/v2/me", 200, json={"ok": 1}, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})
    assert client.get_json("/api/v2/me") == {"ok": 1}
    assert fake_clock.sleeps == []
    client.get_json("/api/v2/me")
    assert fake_clock.sleeps == [pytest.approx(9.0)]
    assert api.requests[1].at >= float(reset)


def test_connection_refused_is_unavailable_after_retries(
    make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", retry=RetryPolicy(max_attempts=3, sleep=fake_clock.sleep, jitter=lambda: 1.0))
    with pytest.raises(ProviderUnavailable) as info:
        client.get("/api/v2/me", params={"api_key": "k-123456789"})
    assert str(info.value) == "paged GET /api/v2/me: ConnectError after 3 attempts"
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert fake_clock.sleeps == [0.5, 1.0]


def test_unsupported_scheme_fails_without_retry(make_client: Callable[..., ProviderClient], fake_clock: FakeClock) -> None:
    with pytest.raises(ProviderError) as info:
        make_client("ftp://127.0.0.1:9").get("/x")
    assert not isinstance(info.value, ProviderUnavailable)
    assert fake_clock.sleeps == []


def test_auth_and_client_errors_are_not_retried(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    with pytest.raises(ProviderAuthError):
        make_client(api.url, auth=None).get("/api/v2/me")
    with pytest.raises(ProviderResponseError) as info:
        make_client(api.url).get("/nope")
    assert info.value.status == 404
    assert api.count("/api/v2/me") == 1
    assert api.count("/nope") == 1
    assert fake_clock.sleeps == []


def test_a_spent_complexity_budget_delays_the_next_request_until_its_reset(
    api: PagedApi, make_client: Callable[..., ProviderClient], fake_clock: FakeClock
) -> None:
    # Linear reports two budgets: requests (plenty left) and query complexity (spent), resets in epoch ms.
    now = fake_clock.time()
    headers = {"X-RateLimit-Requests-Remaining": "4990", "X-RateLimit-Requests-Reset": str(int((now + 3) * 1000)),
               "X-RateLimit-Complexity-Remaining": "0", "X-RateLimit-Complexity-Reset": str(int((now + 40) * 1000))}
    client = make_client(api.url)
    api.inject("/api/v2/me", 200, json={"ok": 1}, headers=headers)
    assert client.get_json("/api/v2/me") == {"ok": 1}
    client.get_json("/api/v2/me")
    assert fake_clock.sleeps == [pytest.approx(40.0, abs=0.01)]


def test_a_rate_limited_answer_waits_for_the_reset_of_the_spent_budget() -> None:
    headers = {"x-ratelimit-requests-remaining": "12", "x-ratelimit-requests-reset": str(int(NOW + 5)),
               "x-ratelimit-complexity-remaining": "0", "x-ratelimit-complexity-reset": str(int((NOW + 30) * 1000))}
    d = policy().classify(1, resp(429, headers))
    assert (d.action, d.kind) == ("retry", "rate_limited") and d.delay == pytest.approx(30.0)
