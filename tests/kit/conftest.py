"""Shared set-up for the kit HTTP tests: a served paginated fake, a recording logger, a client builder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hissuno_airflow.kit.http import BearerAuth, ProviderClient, RetryPolicy
from tests.fakes.paged_api import PagedApi
from tests.fakes.server import FakeClock

TOKEN = "tok-live-4f9c2e1b7a6d5c3e"


class RecordingLogger:
    """Keeps every line logged, to assert on attempt counts and redaction."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def debug(self, message: str, /) -> None:
        self.lines.append(("debug", message))

    def warning(self, message: str, /) -> None:
        self.lines.append(("warning", message))

    def text(self) -> str:
        return "\n".join(m for _, m in self.lines)

    def warnings(self) -> list[str]:
        return [m for level, m in self.lines if level == "warning"]


@pytest.fixture
def log() -> RecordingLogger:
    return RecordingLogger()


@pytest.fixture
def api(serve_fake: Callable[[PagedApi], PagedApi], fake_clock: FakeClock) -> PagedApi:
    """A PagedApi with 25 tickets on 127.0.0.1 that accepts ``TOKEN``."""
    fake = serve_fake(PagedApi(25, clock=fake_clock.time))
    fake.issue_token(TOKEN)
    return fake


@pytest.fixture
def make_client(fake_clock: FakeClock, log: RecordingLogger) -> Iterator[Callable[..., ProviderClient]]:
    """Build a client whose retry policy sleeps on the fake clock with no jitter spread."""
    clients: list[ProviderClient] = []

    def make(base_url: str, **kwargs: Any) -> ProviderClient:
        kwargs.setdefault("auth", BearerAuth(TOKEN))
        kwargs.setdefault(
            "retry", RetryPolicy(sleep=fake_clock.sleep, clock=fake_clock.time, jitter=lambda: 1.0)
        )
        kwargs.setdefault("logger", log)
        client = ProviderClient(kwargs.pop("provider", "paged"), base_url, **kwargs)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()
