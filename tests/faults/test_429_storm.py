"""Fault: a 429 storm and a 5xx burst while a sync runs.

The fake rate-limits a third of all requests, each in its provider's own way, and fails a tenth of the
rest with a server error. The sync still completes with every record, and the run's log (what the
Airflow task log shows) has one line per refusal: for a rate limit, "waiting N s for <Provider>'s rate
limit" with N what the provider asked for, and the fake sees the same request again exactly N seconds
later on its clock; for a server error, "retrying in ...".

Rate-limit styles (providers.md): Zendesk 429 + ``Retry-After``; HubSpot 429 without ``Retry-After``
(the ten-secondly policy: wait for the next 10 s window); Linear HTTP 400 with a ``RATELIMITED`` GraphQL
error and a spent complexity budget (wait for ``X-RateLimit-Complexity-Reset``); GitHub's secondary
limit, a 403 whose message says so, with ``retry-after`` or without (then at least a minute).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, FakeResponse
from tests.faults.providers import CASES, T0, held
from tests.fixtures.fakes import retries_on

LIMITED_SHARE = 1 / 3
FAILED_SHARE = 1 / 10
RECORDS = 60


@dataclass(frozen=True)
class Style:
    """How one provider says "too many requests", and the wait it asks for."""

    provider: str
    name: str
    """The provider's display name as the log line says it."""
    status: int
    wait: float
    answer: Callable[[FakeRequest], FakeResponse]


def _zendesk(req: FakeRequest) -> FakeResponse:
    return FakeResponse(429, {"error": "APIRateLimitExceeded", "description": "Number of allowed API requests"
                                                                             " per minute exceeded"},
                        {"Retry-After": "7"})


def _hubspot(req: FakeRequest) -> FakeResponse:
    return FakeResponse(429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                              "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"},
                        {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000", "X-HubSpot-RateLimit-Max": "110",
                         "X-HubSpot-RateLimit-Remaining": "0"})


def _linear(req: FakeRequest) -> FakeResponse:
    from tests.fakes.linear import RATE_LIMITED

    reset = str(int((req.at + 9) * 1000))  # epoch milliseconds, nine seconds from now
    return FakeResponse(400, RATE_LIMITED, {
        "X-RateLimit-Requests-Limit": "5000", "X-RateLimit-Requests-Remaining": "4000",
        "X-RateLimit-Requests-Reset": reset, "X-RateLimit-Complexity-Limit": "250000",
        "X-RateLimit-Complexity-Remaining": "0", "X-RateLimit-Complexity-Reset": reset})


def _github(req: FakeRequest, retry_after: str | None = "5") -> FakeResponse:
    return FakeResponse(403, {"message": "You have exceeded a secondary rate limit. Please wait a few minutes"
                                         " before you try again.",
                              "documentation_url": "https://docs.github.com/rest/overview/rate-limits"},
                        {"retry-after": retry_after} if retry_after else {})


STYLES = {
    "zendesk": Style("zendesk", "Zendesk", 429, 7.0, _zendesk),
    "hubspot": Style("hubspot", "HubSpot", 429, 10.0, _hubspot),
    "linear": Style("linear", "Linear", 400, 9.0, _linear),
    "github": Style("github", "GitHub", 403, 5.0, _github),
    # The secondary limit without retry-after: GitHub asks for at least a minute.
    "github-no-retry-after": Style("github", "GitHub", 403, 60.0, lambda req: _github(req, None)),
}


def _storm(fake: FakeProvider, style: Style) -> tuple[Any, Any]:
    """A third of every request refused in the provider's style, then a tenth of the rest failed with 502."""
    limited = fake.inject("^/", style.status, times=None, fraction=LIMITED_SHARE)

    def answer(req: FakeRequest) -> bool:
        limited.response = style.answer(req)  # headers computed at the request's time (Linear's reset)
        return True

    limited.when = answer
    failed = fake.inject_5xx("^/", status=502, times=None, fraction=FAILED_SHARE)
    return limited, failed


def _record_outcomes(fake: FakeProvider) -> list[tuple[FakeRequest, int]]:
    """Every request the fake answers, with its status, in order."""
    outcomes: list[tuple[FakeRequest, int]] = []
    handle = fake.handle

    def recording(req: FakeRequest) -> FakeResponse:
        resp = handle(req)
        outcomes.append((req, resp.status))
        return resp

    fake.handle = recording  # type: ignore[method-assign]
    return outcomes


def _key(req: FakeRequest) -> tuple[Any, ...]:
    return req.method, req.path, tuple(req.query_list), req.body


@pytest.mark.parametrize("provider", sorted(STYLES))
def test_a_sync_through_a_429_storm_and_5xx_burst_gets_every_record_and_waits_as_told(
    provider: str, store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    style = STYLES[provider]
    case = CASES[style.provider](store, monkeypatch, serve_fake, clock, count=RECORDS)
    enable_stream(store, case.cid, case.stream, filters=case.filters)
    limited, failed = _storm(case.fake, style)
    outcomes = _record_outcomes(case.fake)
    caplog.set_level(logging.INFO)

    result = run_stream_sync(case.cid, case.stream, store=store)

    assert result.status == "success", result.error
    assert set(held(store, case)) == case.expected() and result.counts["failed"] == 0
    # The storm was what it says: a third refused, a tenth of the rest failed.
    seen = len(outcomes)
    assert seen >= 20 and limited.hits == seen // 3 and failed.hits == (seen - limited.hits) // 10
    assert failed.hits >= 1

    # Every refused request was sent again exactly as long after as the provider asked (on its clock).
    for i, (req, status) in enumerate(outcomes):
        if status not in (style.status, 502):
            continue
        again = next(r for r, _ in outcomes[i + 1:] if _key(r) == _key(req))
        if status == style.status:
            assert again.at - req.at == pytest.approx(style.wait), (req.path, again.at - req.at)
        else:
            assert 0 < again.at - req.at < style.wait

    # The run's log says so: one warning per refusal, with the wait the provider asked for.
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    waits = [m for m in lines if re.search(rf"waiting .+ for {style.name}'s rate limit$", m)]
    assert len(waits) == limited.hits, lines
    said = f"{style.wait:g} s" if style.wait < 60 else f"{style.wait / 60:g} min"
    assert all(f"waiting {said} for {style.name}'s rate limit" in m for m in waits), waits
    assert len([m for m in lines if "502 Bad Gateway" in m and "retrying in" in m]) == failed.hits, lines
