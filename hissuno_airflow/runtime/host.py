"""What the runtime needs from the program it runs in: the host protocol.

The runtime (sync, connect, refresh, webhooks) knows nothing of Airflow. Where behaviour depends on the
host, it asks the installed ``Host``: which credential backends exist and which one new connections use,
how a stream's run is woken (a DAG run under Airflow; nothing to wake standalone), what to do once a
stream is enabled (an Airflow pool per provider account), and what links a run has.

The default host is ``StandaloneHost`` (``hissuno serve``, the CLI without Airflow, tests). Entry points
that run under Airflow (the DAG file, ``SyncOperator``, the API-server app, the CLI when an Airflow
installation is configured) install the Airflow host once, from the Airflow-facing package.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..store.connections import ConnectionRow
    from ..store.db import Store


class CredentialStore(Protocol):
    """Reads and writes one backend's credentials (the store's ``db``, or one a host adds)."""

    backend: str

    def load(self, connection: ConnectionRow) -> dict[str, Any]: ...
    def save(self, connection: ConnectionRow, credentials: dict[str, Any]) -> None: ...
    def delete(self, connection: ConnectionRow) -> None: ...


@dataclass(frozen=True)
class QueuedRun:
    """A run the host queued: its reference (an Airflow DAG id) and run id (None when coalesced)."""

    ref: str
    run_id: str | None


class Host:
    """The standalone host: credentials in the store, syncs run in the calling process."""

    name = "standalone"
    queues_runs = False
    """True when a sync-now is a queued run executed elsewhere (the page then follows its run row)."""

    def credential_backends(self) -> dict[str, Callable[[Store], CredentialStore]]:
        """Credential backends this host adds to the store's own ``db`` backend, by name."""
        return {}

    def default_credentials_backend(self) -> str:
        """The backend ``HISSUNO_CREDENTIALS_BACKEND=auto`` picks for new connections."""
        return "db"

    def wake_stream(self, connection_id: str, stream_id: str, *, conf: dict[str, Any], user: str,
                    coalesce: bool = False) -> QueuedRun:
        """Queue a run of the stream (webhook wake-ups, sync-now). Standalone hosts have no queue."""
        msg = f"the {self.name} host runs syncs in-process; there is no run queue"
        raise NotImplementedError(msg)

    def run_state(self, ref: str, run_id: str) -> str | None:
        """State of a queued run (``queued``, ``running``, ``success``, ``failed``), None when unknown."""
        return None

    def stream_enabled(self, store: Store, connection: ConnectionRow) -> None:
        """Called after a stream of ``connection`` was enabled or reconfigured."""

    def stream_ref(self, connection_id: str, stream_id: str) -> str | None:
        """The host's name for a stream's scheduled job (an Airflow DAG id), for links."""
        return None

    def next_sync_at(self, connection_id: str, stream_id: str, frequency: str, *, now: datetime,
                     first_run: bool = False) -> datetime | None:
        """When the stream's next scheduled sync is due (None when it has no schedule).

        Called after each run (``first_run`` False) and, on hosts that schedule (``queues_runs``), when a
        stream is enabled or re-timed (``first_run`` True when it never synced). Standalone: one interval
        after the run, as before.
        """
        step = _INTERVALS.get(frequency)
        return None if step is None else now + step


_INTERVALS = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(days=1)}
_host: Host = Host()
_lock = threading.Lock()


def current_host() -> Host:
    """The installed host (``StandaloneHost`` until an entry point installs another)."""
    return _host


def install_host(host: Host) -> Host:
    """Install ``host`` for this process; returns the previous one (tests restore it)."""
    global _host
    with _lock:
        previous, _host = _host, host
    return previous


StandaloneHost = Host
