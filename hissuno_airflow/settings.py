"""Environment-driven settings: database, home folder, provider base URLs, app secrets."""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path


def home() -> Path:
    """``HISSUNO_HOME`` (default ``~/.hissuno``), created on first use."""
    p = Path(os.environ.get("HISSUNO_HOME") or Path.home() / ".hissuno").expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def database_url() -> str | None:
    """``HISSUNO_DATABASE_URL`` when set; None selects the embedded PostgreSQL."""
    return os.environ.get("HISSUNO_DATABASE_URL") or None


def base_url_override(plugin_id: str, name: str) -> str | None:
    """``HISSUNO_<PLUGIN>_<NAME>_URL``: the operator's override of a plugin's named base URL, if set."""
    env = f"HISSUNO_{plugin_id.upper().replace('-', '_')}_{name.upper()}_URL"
    return os.environ.get(env) or None


def base_url(plugin_id: str, name: str, default: str) -> str:
    """A plugin's named base URL, overridable by ``HISSUNO_<PLUGIN>_<NAME>_URL``."""
    return (base_url_override(plugin_id, name) or default).rstrip("/")


def secret_key() -> bytes:
    """Key for signing OAuth state and encrypting stored credentials.

    ``HISSUNO_SECRET_KEY`` when set; otherwise a random key kept in ``$HISSUNO_HOME/secret.key`` (0600).
    """
    env = os.environ.get("HISSUNO_SECRET_KEY")
    if env:
        return env.encode()
    return _home_key(os.environ.get("HISSUNO_HOME", ""))


@functools.lru_cache(maxsize=8)
def _home_key(home_env: str) -> bytes:
    # Read once per HISSUNO_HOME: every sealed setting a request opens (webhook intake) needs the key.
    path = home() / "secret.key"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        os.replace(tmp, path)
    return path.read_text().strip().encode()


def default_project_id() -> str:
    """Id of the project used when a caller names none."""
    return os.environ.get("HISSUNO_PROJECT_ID", "00000000-0000-0000-0000-000000000001")


def ingest_worker_after() -> int | None:
    """``HISSUNO_INGEST_WORKER_AFTER`` (default 2000): ingest calls a sync run makes in its own process before the
    rest go to an ingest worker process (``runtime/ingest_worker.py``); ``off`` keeps every run in one process."""
    raw = (os.environ.get("HISSUNO_INGEST_WORKER_AFTER") or "2000").strip().lower()
    if raw in ("off", "none", "no", "false"):
        return None
    return max(0, int(raw))


def run_lease_seconds() -> float:
    """``HISSUNO_RUN_LEASE_SECONDS`` (default 120): how long a sync run's lease lasts without renewal.

    A running sync renews it every quarter of this; a run whose process died (or lost the store for
    longer) is closed as failed once it lapses, and its stream can run again.
    """
    return max(1.0, float(os.environ.get("HISSUNO_RUN_LEASE_SECONDS") or 120))


def task_retry_delay_seconds() -> float:
    """``HISSUNO_TASK_RETRY_DELAY_SECONDS`` (default 60): how long Airflow waits before a failed sync task's first
    retry (each later one waits twice as long, up to 30 minutes); read when the DAGs are built."""
    return max(1.0, float(os.environ.get("HISSUNO_TASK_RETRY_DELAY_SECONDS") or 60))


def store_retry_seconds() -> float:
    """``HISSUNO_STORE_RETRY_SECONDS`` (default 30): how long a write is retried in place through a store
    blip (restart, lost connection, deadlock) before the run fails retriably; 0 fails at the first error. It
    also bounds the wait for a pooled connection (at least 1 s), which is all a writer sees of a store that is down."""
    return max(0.0, float(os.environ.get("HISSUNO_STORE_RETRY_SECONDS") or 30))


def rate_budget_scope() -> str:
    """``HISSUNO_RATE_BUDGET``: ``shared`` (default) or ``process``.

    ``shared``: every process calling one provider account books its requests in the store, so all of
    them together keep to the plugin's declared rate (one store round trip per request). ``process``:
    each process paces on its own, as if it were the account's only client; only right when the
    account's Airflow pool has one slot and nothing else (a CLI sync) calls it meanwhile.
    """
    value = (os.environ.get("HISSUNO_RATE_BUDGET") or "shared").strip().lower()
    if value not in ("shared", "process"):
        raise ValueError(f"HISSUNO_RATE_BUDGET: expected 'shared' or 'process'; got {value!r}")
    return value
