"""Shared helpers of the Airflow-layer tests: the probe plugin registered, connections and streams."""

from __future__ import annotations

from typing import Any

import pytest

from hissuno_airflow import registry
from hissuno_airflow.settings import default_project_id
from hissuno_airflow.store import connections as repo

from . import probe_plugin


@pytest.fixture(autouse=True)
def airflow_host(airflow_host: Any) -> Any:
    """Every Airflow-layer test runs on the Airflow host (``tests.fixtures.airflow.airflow_host``)."""
    return airflow_host


@pytest.fixture
def probe() -> Any:
    """The ``afprobe`` plugin, registered for the duration of a test."""
    registry.unregister(probe_plugin.plugin.id)
    registry.register(probe_plugin.plugin, source="tests")
    yield probe_plugin
    registry.unregister(probe_plugin.plugin.id)


def make_connection(store: Any, plugin_id: str, account: str = "acct-1", backend: str = "db") -> Any:
    """A connection row (credentials are saved separately)."""
    row, _ = repo.upsert_connection(
        store, project_id=default_project_id(), plugin_id=plugin_id, external_account_id=account,
        account_label=f"{plugin_id} {account}", settings={}, credentials_backend=backend,
    )
    return row


def enable(store: Any, conn: Any, stream_id: str, frequency: str, enabled: bool = True, kind: str = "contacts") -> Any:
    """A stream row."""
    return repo.upsert_stream(
        store, connection_id=conn.id, plugin_id=conn.plugin_id, stream_id=stream_id, stream_kind=kind,
        enabled=enabled, frequency=frequency,
    )


def pytest_configure(config: Any) -> None:
    """Register the ``e2e`` marker (real Airflow servers; still runs by default)."""
    config.addinivalue_line("markers", "e2e: runs a real Airflow api-server and scheduler on 127.0.0.1")
