"""``AirflowHost``: the runtime's host protocol on Airflow, and deciding whether Airflow is usable."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..runtime.host import Host, QueuedRun, current_host, install_host
from .names import dag_id_for

if TYPE_CHECKING:
    from ..runtime.host import CredentialStore
    from ..store.connections import ConnectionRow
    from ..store.db import Store


class AirflowHost(Host):
    """Credentials in Airflow Connections, syncs as DAG runs, one pool per provider account."""

    name = "airflow"
    queues_runs = True

    def credential_backends(self) -> dict[str, Callable[[Store], CredentialStore]]:
        """Adds ``airflow``: Airflow Connections plus the refreshed-token Variable overlay."""
        from .credentials import AirflowCredentialStore

        return {"airflow": AirflowCredentialStore}

    def default_credentials_backend(self) -> str:
        """New connections keep their credentials in Airflow Connections."""
        return "airflow"

    def wake_stream(self, connection_id: str, stream_id: str, *, conf: dict[str, Any], user: str,
                    coalesce: bool = False) -> QueuedRun:
        """Queue a manual run of the stream's DAG."""
        from .runs import trigger_stream_run

        dag_id, run_id = trigger_stream_run(connection_id, stream_id, conf=conf, user=user, coalesce=coalesce)
        return QueuedRun(dag_id, run_id)

    def run_state(self, ref: str, run_id: str) -> str | None:
        """The DAG run's state."""
        from .runs import dag_run_state

        return dag_run_state(ref, run_id)

    def stream_enabled(self, store: Store, connection: ConnectionRow) -> None:
        """Make sure the account's pool exists (the one place pools are created)."""
        from .pools import try_ensure_pool

        try_ensure_pool(store, connection)

    def stream_ref(self, connection_id: str, stream_id: str) -> str | None:
        """The stream's DAG id."""
        return dag_id_for(connection_id, stream_id)

    def next_sync_at(self, connection_id: str, stream_id: str, frequency: str, *, now: datetime,
                     first_run: bool = False) -> datetime | None:
        """When Airflow will run the stream's DAG next: right after it appears for a stream that never
        synced, else at its next spread slot (``schedule``, the same slot the DAG's timetable uses)."""
        from .schedule import first_run_at, next_run_after

        if first_run:
            return first_run_at(frequency, now)
        return next_run_after(frequency, dag_id_for(connection_id, stream_id), now)


def install() -> AirflowHost:
    """Install the Airflow host in this process (idempotent); returns it."""
    host = current_host()
    if isinstance(host, AirflowHost):
        return host
    host = AirflowHost()
    install_host(host)
    return host


@functools.cache
def airflow_usable() -> str | None:
    """None when this process can use an Airflow installation (importable, ``AIRFLOW_HOME`` set, metadata
    database initialised); else the reason, naming the fix. Used by the CLI, which also runs without one."""
    if importlib.util.find_spec("airflow") is None:
        return "Airflow is not installed"
    if not os.environ.get("AIRFLOW_HOME"):
        return "AIRFLOW_HOME is not set"
    try:
        from airflow import settings as af_settings
        from sqlalchemy import inspect as sa_inspect

        if af_settings.engine is None:
            af_settings.configure_orm()  # type: ignore[no-untyped-call]
        if not sa_inspect(af_settings.engine).has_table("connection"):
            return "Airflow's metadata database is not initialised (run 'airflow db migrate')"
    except Exception as exc:
        return f"Airflow's metadata database cannot be reached ({type(exc).__name__}); run 'airflow db migrate'"
    return None
