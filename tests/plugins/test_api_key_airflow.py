"""A revoked or rotated key of each API-key provider under Airflow: the stream's task fails once, is not
retried (``AirflowFailException``, try 1 of the stream's retries), and the stream and connection say to
reconnect. Each provider's own fake refuses the key with its own 401."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.store import connections as repo
from tests.fixtures.airflow import run_dag

Setup = Callable[[Any, pytest.MonkeyPatch, Any], tuple[str, str, Callable[[], None]]]


def _zendesk(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> tuple[str, str, Callable[[], None]]:
    from tests.fakes import zendesk as fakes

    fake, token = fakes.serve(monkeypatch, serve_fake, 3)
    return fakes.connect(store, token), "tickets", lambda: fake.revoke(token)


def _intercom(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> tuple[str, str, Callable[[], None]]:
    from tests.fakes import intercom as fakes

    fake, token = fakes.serve(monkeypatch, serve_fake, 3)
    return fakes.connect(store, token), "conversations", lambda: fake.revoke_token(token)


def _gong(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> tuple[str, str, Callable[[], None]]:
    from tests.fakes import gong as fakes

    fake = fakes._serve(monkeypatch, serve_fake, 3)
    return fakes._connect(store), "calls", lambda: fake.revoke_key(fakes.ACCESS_KEY)


def _fathom(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> tuple[str, str, Callable[[], None]]:
    from tests.fakes import fathom as fakes

    fake, key = fakes.serve(monkeypatch, serve_fake, 3)
    return fakes.connect(store, key), "meetings", lambda: fake.keys.discard(key)


def _posthog(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> tuple[str, str, Callable[[], None]]:
    from tests.fakes import posthog as fakes

    fake, key = fakes.serve(monkeypatch, serve_fake, 3, 2)
    return fakes.connect(store, key), "analytics", lambda: fake.revoke_token(key)


SETUPS: dict[str, Setup] = {"zendesk": _zendesk, "intercom": _intercom, "gong": _gong, "fathom": _fathom,
                            "posthog": _posthog}


@pytest.mark.parametrize("plugin_id", list(SETUPS))
def test_a_revoked_key_fails_the_task_once_and_asks_for_a_reconnect(
    plugin_id: str, store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch, airflow_clean: None,
    airflow_host: Any,
) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from hissuno_airflow.dag_factory import build_dag, load_manifest

    cid, stream_id, revoke = SETUPS[plugin_id](store, monkeypatch, serve_fake)
    enable_stream(store, cid, stream_id, frequency="24h")
    (row,) = [r for r in load_manifest() if r["connection_id"] == cid]
    revoke()
    run = run_dag(build_dag(row))

    assert run.state == "failed"
    with create_session() as s:
        (ti,) = s.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        assert ti.state == "failed" and ti.try_number == 1  # fatal: not up_for_retry
    stream = repo.get_stream(store, cid, stream_id)
    assert stream.last_sync_status == "error"
    assert f"reconnect needed: run `hissuno connect {plugin_id} --update {cid}`" in (stream.last_sync_error or "")
    assert repo.get_connection(store, cid).needs_reconnect
