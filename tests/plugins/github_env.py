"""Shared set-up of the ``github`` plugin tests: the fake GitHub on 127.0.0.1, its clock, an installed app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hissuno_airflow.runtime.streams import enable_stream
from tests.fakes import github as fakes
from tests.fakes.github import FakeGitHub
from tests.fakes.server import FakeClock
from tests.fixtures.fakes import retries_on

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake's clock at ``T0``; every HTTP client's retries wait on it instead of sleeping."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def gh(store: Any, serve_fake: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> FakeGitHub:
    """The fake GitHub with the app's environment set; nothing seeded."""
    return fakes.serve(monkeypatch, serve_fake, clock.time)


@pytest.fixture
def app(store: Any, gh: FakeGitHub) -> str:
    """An installation of the app on ``acme``, connected through the install flow; its connection id."""
    return fakes.install(store)


def one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return next(iter(row.values()))


def rows(store: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    with store.connection() as c:
        return list(c.execute(sql, args).fetchall())


def enable(store: Any, cid: str, stream_id: str, **config: Any) -> None:
    enable_stream(store, cid, stream_id, **config)
