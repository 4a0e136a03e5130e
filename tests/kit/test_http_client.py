"""ProviderClient over real HTTP on 127.0.0.1: retries mid-pagination, error mapping, redaction, hooks."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from hissuno_airflow.kit import CancelSignal
from hissuno_airflow.kit.errors import (
    ProviderAuthError,
    ProviderResponseError,
    RateLimited,
    SyncCancelled,
)
from hissuno_airflow.kit.http import (
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    NextUrlPaginator,
    PageNumberPaginator,
    ProviderClient,
    RateBudget,
    RetryPolicy,
    client_factory,
)
from tests.fakes.paged_api import PagedApi
from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, FakeResponse
from tests.kit.conftest import TOKEN, RecordingLogger

Make = Callable[..., ProviderClient]
ALL_IDS = list(range(1, 26))


def second_page(req: FakeRequest) -> bool:
    return req.query.get("page") == "2"


def test_429_on_second_page_is_retried_after_retry_after(
    api: PagedApi, make_client: Make, fake_clock: FakeClock, log: RecordingLogger
) -> None:
    api.inject_429("/api/v2/tickets", retry_after=30, when=second_page)
    client = make_client(api.url)
    items = list(client.paginate("GET", "/api/v2/tickets", PageNumberPaginator(total_pages_path="page_count"), params={"per_page": 10}, data_path="tickets"))
    assert [t["id"] for t in items] == ALL_IDS
    assert [r.query["page"] for r in api.requests_to("/api/v2/tickets")] == ["1", "2", "2", "3"]
    assert fake_clock.sleeps == [30.0]
    # The retried request went out only after the announced wait had passed on the server's clock.
    assert api.requests[2].at - api.requests[1].at == pytest.approx(30.0)
    assert log.warnings() == ["paged GET /api/v2/tickets: 429 Too Many Requests; attempt 1/5, waiting 30 s for paged's rate limit"]


def test_503_once_mid_pagination_recovers(api: PagedApi, make_client: Make, fake_clock: FakeClock) -> None:
    api.inject_5xx("/posthog/events", status=503, when=lambda r: r.query.get("offset") == "20")
    items = list(make_client(api.url).paginate("GET", "/posthog/events", NextUrlPaginator(), params={"limit": 10}, data_path="results"))
    assert [t["id"] for t in items] == ALL_IDS
    assert api.count("/posthog/events") == 4
    assert fake_clock.sleeps == [0.5]


def test_auth_error_names_the_call_but_never_the_token(api: PagedApi, make_client: Make, log: RecordingLogger) -> None:
    bad = "tok-revoked-0123456789abcdef"
    with pytest.raises(ProviderAuthError) as info:
        make_client(api.url, auth=BearerAuth(bad)).get_json("/api/v2/me", params={"access_token": bad, "x": 1})
    err = info.value
    assert str(err) == "paged GET /api/v2/me: 401 Unauthorized"
    assert (err.status, err.provider, err.code) == (401, "paged", "provider_auth")
    assert bad not in log.text()
    assert "access_token=%2A%2A%2A" in log.text() or "access_token=***" in log.text()


def test_expired_token_is_refused(api: PagedApi, make_client: Make, fake_clock: FakeClock) -> None:
    short = api.issue_token("tok-short-lived-123456", expires_in=60)
    client = make_client(api.url, auth=BearerAuth(short))
    assert client.get("/api/v2/me").status_code == 200
    fake_clock.advance(61)
    with pytest.raises(ProviderAuthError):
        client.get("/api/v2/me")


def test_error_text_has_no_query_string_no_body_and_no_secret_in_path(api: PagedApi, make_client: Make) -> None:
    hook_secret = "hooksecret-9f8e7d6c"
    client = make_client(api.url, secrets=[hook_secret])
    with pytest.raises(ProviderResponseError) as info:
        client.get(f"/hooks/{hook_secret}", params={"api_key": "k-abcdef123456", "page": 2})
    text = str(info.value)
    assert text == "paged GET /hooks/***: 404 Not Found"
    assert "?" not in text and "k-abcdef" not in text and "not_found" not in text


def test_allow_statuses_returns_the_response(api: PagedApi, make_client: Make) -> None:
    response = make_client(api.url).get("/api/v2/tickets/999", allow_statuses={404})
    assert response.status_code == 404


def test_non_json_body_is_a_response_error_without_the_body(api: PagedApi, make_client: Make) -> None:
    with pytest.raises(ProviderResponseError) as info:
        make_client(api.url).get_json("/html", params={"token": TOKEN})
    assert str(info.value) == "paged GET /html: 200 OK, expected a JSON body"


def test_error_code_hook_adds_only_identifier_like_codes(api: PagedApi, make_client: Make) -> None:
    def code(r: httpx.Response) -> str | None:
        return str(r.json()["error"])

    api.inject("/api/v2/me", 400, json={"error": "invalid_cursor"})
    api.inject("/api/v2/me", 400, json={"error": f"bad token {TOKEN} given"})
    client = make_client(api.url, error_code=code)
    with pytest.raises(ProviderResponseError, match=r"^paged GET /api/v2/me: 400 Bad Request \(invalid_cursor\)$"):
        client.get("/api/v2/me")
    with pytest.raises(ProviderResponseError) as info:
        client.get("/api/v2/me")
    assert str(info.value) == "paged GET /api/v2/me: 400 Bad Request"


def test_on_request_sees_every_attempt_with_sanitized_urls(api: PagedApi, make_client: Make) -> None:
    seen: list[tuple[str, str]] = []
    api.inject_429("/api/v2/me", retry_after=1)
    make_client(api.url, on_request=lambda m, u: seen.append((m, u))).get("/api/v2/me", params={"api_key": "k-123456789"})
    assert len(seen) == 2
    assert all(m == "GET" and "k-123456789" not in u and u.startswith(api.url + "/api/v2/me?api_key=") for m, u in seen)


def test_basic_and_header_auth_reach_the_server_and_hide_in_repr(make_client: Make) -> None:
    fake = FakeProvider()
    fake.router.add("GET", "/who", lambda req: {"basic": req.basic_auth, "key": req.header("x-api-key")})
    basic = BasicAuth("agent@example.com/token", "zd-secret-123456")
    client = ProviderClient("zendesk", "http://fake.invalid", auth=basic, transport=fake.transport(),
                            headers={"X-Api-Key": "fathom-key-987654"})
    assert client.get_json("/who") == {"basic": ["agent@example.com/token", "zd-secret-123456"], "key": "fathom-key-987654"}
    assert "zd-secret" not in repr(basic)
    assert "zd-secret-123456" in client.secrets and "fathom-key-987654" in client.secrets
    header = HeaderAuth("X-Api-Key", "hdr-secret-5555")
    assert "hdr-secret" not in repr(header) and "hdr-secret" not in repr(BearerAuth("hdr-secret-5555"))
    assert ProviderClient("x", "http://a.invalid", auth=header, transport=fake.transport()).get_json("/who")["key"] == "hdr-secret-5555"


def test_path_and_absolute_url_and_merged_query(api: PagedApi, make_client: Make) -> None:
    client = make_client(api.url + "/api")
    assert client.get_json("/v2/me")["user"]["id"] == 7
    body = client.get_json(f"{api.url}/api/v2/tickets?per_page=5", params={"page": 2})
    assert [t["id"] for t in body["tickets"]] == [6, 7, 8, 9, 10]
    body = client.get_json("/v2/tickets?per_page=5", params={"page": 3})  # a relative path's query merges too
    assert [t["id"] for t in body["tickets"]] == [11, 12, 13, 14, 15]


@pytest.mark.parametrize("base", ["http://127.0.0.1:8123", "http://127.0.0.1:8123/api/v2/", "https://ex.test/a b"])
@pytest.mark.parametrize(("path", "params"), [
    ("/tickets/12/comments.json", {"page[size]": 100, "sort_order": "asc"}),
    ("/search", {"query": "type:ticket status<solved ü&=/?#", "flag": True, "none": None, "ids": [1, 2]}),
    ("/ünï côde/%2F/x", None),
    ("/plain", {}),
    ("/v1/things/", {"a": ""}),
])
def test_a_path_and_params_reach_the_same_url_as_httpx_builds(base: str, path: str, params: dict[str, object] | None) -> None:
    # The client joins a plain path to its base as text and parses once; the URL must be exactly httpx's.
    client = ProviderClient("x", base, transport=httpx.MockTransport(lambda r: httpx.Response(200, text=str(r.url))))
    want = httpx.Client(base_url=base).build_request("GET", path, params=params).url
    assert client.get(path, params=params).text == str(want)


def test_cookies_a_provider_sets_are_neither_kept_nor_sent(make_client: Make, serve_fake: Callable[[FakeProvider], FakeProvider]) -> None:
    fake = serve_fake(FakeProvider())
    fake.router.add("GET", "/login", lambda req: FakeResponse(200, {"ok": True}, [("Set-Cookie", "sid=abc123; Path=/"),
                                                                                 ("Set-Cookie", "lb=node-2; Path=/")]))
    fake.router.add("GET", "/echo", lambda req: {"cookie": req.header("cookie")})
    client = make_client(fake.url)
    assert client.get("/login").headers.get_list("set-cookie") == ["sid=abc123; Path=/", "lb=node-2; Path=/"]
    assert client.get_json("/echo") == {"cookie": None}
    with pytest.raises(TypeError, match="keeps no cookies"):
        client._http.cookies = {"sid": "x"}


def test_cancel_signal_stops_before_sending(api: PagedApi, make_client: Make) -> None:
    signal = CancelSignal()
    client = make_client(api.url, signal=signal)
    assert client.get("/api/v2/me").status_code == 200
    signal.cancel("user asked")
    with pytest.raises(SyncCancelled):
        client.get("/api/v2/me")
    assert api.count("/api/v2/me") == 1


def test_rate_budget_throttles_a_client(api: PagedApi, make_client: Make, fake_clock: FakeClock) -> None:
    budget = RateBudget(60, burst=2, clock=fake_clock.time, sleep=fake_clock.sleep)
    client = make_client(api.url, rate_limiter=budget)
    for _ in range(4):
        client.get("/api/v2/me")
    assert fake_clock.sleeps == [pytest.approx(1.0), pytest.approx(1.0)]
    times = [r.at for r in api.requests]
    assert times[3] - times[0] == pytest.approx(2.0)


def test_rate_budget_ends_on_a_large_clock_with_a_float_residue() -> None:
    """Three a second on an epoch-seconds clock leaves token residues like 0.9999999: the wait for the
    rest must still move the clock (it did not: acquire looped for ever)."""
    clock = FakeClock(1_772_442_000.0)
    budget = RateBudget(180, burst=3, clock=clock.time, sleep=clock.sleep)
    done = threading.Event()

    def spend() -> None:
        for _ in range(60):
            budget.acquire()
        done.set()

    threading.Thread(target=spend, daemon=True).start()
    assert done.wait(10), "acquire never returned"
    assert clock.now - 1_772_442_000.0 == pytest.approx(19.0, abs=0.1)  # 57 paced at 1/3 s after the burst


def test_rate_budget_is_thread_safe() -> None:
    clock = FakeClock()
    budget = RateBudget(600, burst=50, clock=clock.time, sleep=clock.sleep)
    won: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            ok = budget.try_acquire()
            with lock:
                won.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(won) == 50  # the frozen clock never refills the bucket
    with pytest.raises(ValueError, match="per_minute"):
        RateBudget(0)


def test_client_factory_resolves_named_bases_and_merges_secrets(api: PagedApi) -> None:
    make = client_factory("paged", {"API": api.url}, auth=BearerAuth(TOKEN), secrets=["runtime-secret-1"])
    with make("API", secrets=["call-secret-22"]) as client:
        assert client.get_json("/api/v2/me")["user"]["id"] == 7
        assert {"runtime-secret-1", "call-secret-22", TOKEN} <= set(client.secrets)
    with pytest.raises(ValueError, match="unknown base URL 'AUTH'; expected one of API"):
        make("AUTH")


def test_same_fake_in_process_and_on_a_socket(serve_fake: Callable[[PagedApi], PagedApi]) -> None:
    fake = PagedApi(5)
    token = fake.issue_token()
    in_process = ProviderClient("paged", "http://paged.invalid", auth=BearerAuth(token), transport=fake.transport())
    served = serve_fake(fake)
    over_socket = ProviderClient("paged", served.url, auth=BearerAuth(token))
    pag = NextUrlPaginator("next_page")
    a = list(in_process.paginate("GET", "/api/v2/tickets", pag, params={"per_page": 2}, data_path="tickets"))
    b = list(over_socket.paginate("GET", "/api/v2/tickets", pag, params={"per_page": 2}, data_path="tickets"))
    assert a == b and len(a) == 5
    assert {r.base_url for r in fake.requests} == {"http://paged.invalid", served.url}
    over_socket.close()


def test_fake_router_answers_405_and_records_handler_crashes(make_client: Make, serve_fake: Callable[[FakeProvider], FakeProvider]) -> None:
    fake = serve_fake(FakeProvider())
    fake.router.add("POST", "/only-post", lambda req: FakeResponse(201, {"ok": True}))
    def boom(req: FakeRequest) -> FakeResponse:
        raise ZeroDivisionError

    fake.router.add("GET", "/boom", boom)
    client = make_client(fake.url, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ProviderResponseError, match="405 Method Not Allowed"):
        client.get("/only-post")
    assert client.post("/only-post", json={}).status_code == 201
    with pytest.raises(Exception, match="500 Internal Server Error"):
        client.get("/boom")
    assert [type(e) for e in fake.errors] == [ZeroDivisionError]


def test_rate_limited_is_retriable_for_the_scheduler(api: PagedApi, make_client: Make) -> None:
    api.inject_429("/api/v2/me", retry_after=600)
    with pytest.raises(RateLimited) as info:
        make_client(api.url).get("/api/v2/me")
    assert info.value.retriable and info.value.retry_after == 600.0


class _LevelLogger(RecordingLogger):
    """A recording logger that says whether debug lines are wanted, as a stdlib logger does."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.wants_debug = debug

    def isEnabledFor(self, level: int) -> bool:  # the stdlib name the client probes
        return self.wants_debug or level > 10


@pytest.mark.parametrize("debug", [True, False])
def test_request_lines_are_built_only_for_a_logger_that_writes_them(api: PagedApi, make_client: Make,
                                                                   debug: bool) -> None:
    # A sync of many thousand requests with debug off should not sanitize, redact and format a line for
    # each; with debug on, each request's line is there, secrets masked.
    log = _LevelLogger(debug)
    make_client(api.url, logger=log).get("/api/v2/me", params={"api_key": "k-123456789"})
    lines = [m for level, m in log.lines if level == "debug"]
    if debug:
        assert len(lines) == 1 and lines[0].startswith(f"GET {api.url}/api/v2/me?api_key=") and "k-1234" not in lines[0]
    else:
        assert lines == []


def test_plugin_logger_reports_debug_only_with_the_debug_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from hissuno_airflow.runtime.logging import PluginLogger

    quiet, chatty = logging.getLogger("tests.quiet"), logging.getLogger("tests.chatty")
    monkeypatch.setattr(quiet, "level", logging.WARNING)
    monkeypatch.setattr(chatty, "level", logging.INFO)
    monkeypatch.delenv("HISSUNO_DEBUG_INTEGRATIONS", raising=False)
    assert not PluginLogger("x", logger=chatty).isEnabledFor(logging.DEBUG)
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    # Its debug lines are written at INFO: wanted when the switch is on and the logger takes INFO.
    assert PluginLogger("x", logger=chatty).isEnabledFor(logging.DEBUG)
    assert not PluginLogger("x", logger=quiet).isEnabledFor(logging.DEBUG)
