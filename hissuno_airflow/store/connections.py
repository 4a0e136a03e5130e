"""Rows of ``integration_connections`` and ``integration_streams``: the only SQL about them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from ..kit.errors import InputError, NotFoundError
from .db import Db, use
from .sealed import mask_settings, open_settings, seal_settings


@dataclass(frozen=True)
class ConnectionRow:
    """A connected provider account (credentials live elsewhere: see ``hissuno_airflow.runtime.credentials``).

    ``settings`` holds secret settings opened (decrypted); ``public()`` masks them.
    """

    id: str
    project_id: str
    plugin_id: str
    external_account_id: str
    account_label: str
    credentials_backend: str
    credentials_ref: str | None
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    auth_error: str | None = None
    """Why the provider refused the connection's credentials (None: fine); a reconnect clears it."""
    auth_error_at: datetime | None = None

    @property
    def needs_reconnect(self) -> bool:
        """True after the provider refused the credentials, until a reconnect or a successful run."""
        return self.auth_error is not None

    def public(self) -> dict[str, Any]:
        """JSON-safe view without credentials; secret settings (``webhook_secret``, ...) are masked."""
        return {
            "id": self.id, "project_id": str(self.project_id), "plugin_id": self.plugin_id,
            "external_account_id": self.external_account_id, "account_label": self.account_label,
            "settings": mask_settings(self.plugin_id, self.settings), "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(), "needs_reconnect": self.needs_reconnect,
            "auth_error": self.auth_error,
            "auth_error_at": self.auth_error_at.isoformat() if self.auth_error_at else None,
        }


@dataclass(frozen=True)
class StreamRow:
    """One enabled (or disabled) stream instance of a connection."""

    id: str
    connection_id: str
    plugin_id: str
    stream_id: str
    stream_kind: str
    enabled: bool
    frequency: str
    filter_config: dict[str, Any]
    settings: dict[str, Any]
    last_sync_at: datetime | None
    last_sync_status: str | None
    last_sync_error: str | None
    last_sync_counts: dict[str, int] | None
    next_sync_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        """JSON-safe view."""
        iso = _iso
        return {
            "id": str(self.id), "connection_id": self.connection_id, "plugin_id": self.plugin_id,
            "stream_id": self.stream_id, "stream_kind": self.stream_kind, "enabled": self.enabled,
            "frequency": self.frequency, "filter_config": self.filter_config, "settings": self.settings,
            "last_sync_at": iso(self.last_sync_at), "last_sync_status": self.last_sync_status,
            "last_sync_error": self.last_sync_error, "last_sync_counts": self.last_sync_counts,
            "next_sync_at": iso(self.next_sync_at), "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d else None


def _conn_row(row: dict[str, Any]) -> ConnectionRow:
    """A connection row as read, its secret settings opened."""
    return ConnectionRow(**{**row, "settings": open_settings(row["settings"])})


_CONN_COLS = (
    "id, project_id::text AS project_id, plugin_id, external_account_id, account_label, "
    "credentials_backend, credentials_ref, settings, created_at, updated_at, auth_error, auth_error_at"
)
_STREAM_COLS = (
    "id::text AS id, connection_id, plugin_id, stream_id, stream_kind, enabled, frequency, filter_config, "
    "settings, last_sync_at, last_sync_status, last_sync_error, last_sync_counts, next_sync_at, "
    "created_at, updated_at"
)


def new_connection_id(plugin_id: str) -> str:
    """A short readable id that is safe inside DAG ids and Airflow connection ids."""
    return f"{plugin_id.replace('-', '_')}_{secrets.token_hex(4)}"


_INSERT_CONNECTION = """
    INSERT INTO integration_connections
        (id, project_id, plugin_id, external_account_id, account_label, settings, credentials_backend)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (project_id, plugin_id, external_account_id) DO {on_conflict}
    RETURNING {cols}, (xmax = 0) AS created
"""
_UPDATE_ON_CONFLICT = """UPDATE SET
        account_label = EXCLUDED.account_label,
        settings = integration_connections.settings || EXCLUDED.settings,
        updated_at = now()"""


def _insert_connection(store: Db, on_conflict: str, project_id: str, plugin_id: str, external_account_id: str,
                       account_label: str, settings: dict[str, Any] | None,
                       credentials_backend: str) -> tuple[ConnectionRow, bool] | None:
    with use(store) as conn:
        row = conn.execute(
            _INSERT_CONNECTION.format(on_conflict=on_conflict, cols=_CONN_COLS),
            (new_connection_id(plugin_id), project_id, plugin_id, external_account_id, account_label,
             Jsonb(seal_settings(plugin_id, settings)), credentials_backend),
        ).fetchone()
    if row is None:
        return None
    created = bool(row.pop("created"))
    return _conn_row(row), created


def upsert_connection(
    store: Db, *, project_id: str, plugin_id: str, external_account_id: str, account_label: str,
    settings: dict[str, Any] | None, credentials_backend: str = "db",
) -> tuple[ConnectionRow, bool]:
    """Insert, or update the connection of the same (project, plugin, account); returns (row, created).

    Settings are merged into the existing ones (the original wiped them when none were supplied).
    """
    out = _insert_connection(store, _UPDATE_ON_CONFLICT, project_id, plugin_id, external_account_id,
                             account_label, settings, credentials_backend)
    assert out is not None
    return out


def insert_connection(
    store: Db, *, project_id: str, plugin_id: str, external_account_id: str, account_label: str,
    settings: dict[str, Any] | None, credentials_backend: str = "db",
) -> ConnectionRow | None:
    """Insert a new connection; None (and nothing written) when that (project, plugin, account) exists."""
    out = _insert_connection(store, "NOTHING", project_id, plugin_id, external_account_id, account_label,
                             settings, credentials_backend)
    return out[0] if out is not None else None


def find_connection(store: Db, *, project_id: str, plugin_id: str, external_account_id: str) -> ConnectionRow | None:
    """The connection of one provider account in a project, if any."""
    with use(store) as conn:
        row = conn.execute(
            f"SELECT {_CONN_COLS} FROM integration_connections"
            " WHERE project_id = %s AND plugin_id = %s AND external_account_id = %s",
            (project_id, plugin_id, external_account_id),
        ).fetchone()
    return _conn_row(row) if row is not None else None


def set_credentials_ref(
    store: Db, connection_id: str, *, backend: str, ref: str | None, encrypted: bytes | None = None
) -> None:
    """Record where a connection's credentials live."""
    with use(store) as conn:
        conn.execute(
            "UPDATE integration_connections SET credentials_backend = %s, credentials_ref = %s, "
            "credentials_enc = %s, updated_at = now() WHERE id = %s",
            (backend, ref, encrypted, connection_id),
        )


def get_encrypted_credentials(store: Db, connection_id: str) -> bytes | None:
    """The encrypted credentials blob of a db-backed connection."""
    with use(store) as conn:
        row = conn.execute(
            "SELECT credentials_enc FROM integration_connections WHERE id = %s", (connection_id,)
        ).fetchone()
    if row is None:
        raise NotFoundError(f"connection {connection_id!r} not found", field="connection_id")
    enc = row["credentials_enc"]
    return bytes(enc) if enc is not None else None


def get_connection(store: Db, connection_id: str, *, plugin_id: str | None = None) -> ConnectionRow:
    """One connection; NotFoundError (404) when absent or belonging to another plugin."""
    with use(store, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT {_CONN_COLS} FROM integration_connections WHERE id = %s", (connection_id,)
        ).fetchone()
    if row is None or (plugin_id is not None and row["plugin_id"] != plugin_id):
        raise NotFoundError(f"connection {connection_id!r} not found", field="connection_id")
    return _conn_row(row)


def list_connections(
    store: Db, *, project_id: str | None = None, plugin_id: str | None = None
) -> list[ConnectionRow]:
    """Connections, newest first, optionally filtered."""
    where, args = [], []
    if project_id:
        where.append("project_id = %s")
        args.append(project_id)
    if plugin_id:
        where.append("plugin_id = %s")
        args.append(plugin_id)
    sql = f"SELECT {_CONN_COLS} FROM integration_connections"
    if where:
        sql += " WHERE " + " AND ".join(where)
    with use(store) as conn:
        rows = conn.execute(sql + " ORDER BY created_at DESC, id", args).fetchall()
    return [_conn_row(r) for r in rows]


def find_connections_by_account(store: Db, plugin_id: str, external_account_id: str) -> list[ConnectionRow]:
    """Every connection (any project) of this provider account; static webhooks fan out to all of them."""
    with use(store) as conn:
        rows = conn.execute(
            f"SELECT {_CONN_COLS} FROM integration_connections WHERE plugin_id = %s AND external_account_id = %s"
            " ORDER BY created_at",
            (plugin_id, external_account_id),
        ).fetchall()
    return [_conn_row(r) for r in rows]


def update_connection(
    store: Db, connection_id: str, *, account_label: str | None = None,
    settings: dict[str, Any] | None = None, replace_settings: bool = False,
) -> ConnectionRow:
    """Change label and/or settings (merged unless ``replace_settings``)."""
    sets: list[str] = ["updated_at = now()"]
    args: list[Any] = []
    if account_label is not None:
        sets.append("account_label = %s")
        args.append(account_label)
    with use(store) as conn:
        if settings is not None:
            owner = conn.execute("SELECT plugin_id FROM integration_connections WHERE id = %s",
                                 (connection_id,)).fetchone()
            sealed = seal_settings(owner["plugin_id"] if owner else "", settings)
            sets.append("settings = %s" if replace_settings else "settings = settings || %s")
            args.append(Jsonb(sealed))
        row = conn.execute(
            f"UPDATE integration_connections SET {', '.join(sets)} WHERE id = %s RETURNING {_CONN_COLS}",
            (*args, connection_id),
        ).fetchone()
    if row is None:
        raise NotFoundError(f"connection {connection_id!r} not found", field="connection_id")
    return _conn_row(row)


def delete_connection(store: Db, connection_id: str) -> bool:
    """Delete a connection with its streams, runs, synced records and webhook events (entities stay)."""
    with use(store) as conn:
        cur = conn.execute("DELETE FROM integration_connections WHERE id = %s", (connection_id,))
    return cur.rowcount > 0


def upsert_stream(
    store: Db, *, connection_id: str, plugin_id: str, stream_id: str, stream_kind: str,
    enabled: bool | None = None, frequency: str | None = None,
    filter_config: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
    default_frequency: str = "manual",
) -> StreamRow:
    """Insert a stream row or update only the supplied fields of the existing one."""
    with use(store) as conn:
        row = conn.execute(
            f"""
            INSERT INTO integration_streams
                (connection_id, plugin_id, stream_id, stream_kind, enabled, frequency, filter_config, settings)
            VALUES (%(c)s, %(p)s, %(s)s, %(k)s, coalesce(%(en)s, true), coalesce(%(fr)s, %(dfr)s),
                    coalesce(%(fc)s, '{{}}'::jsonb), coalesce(%(st)s, '{{}}'::jsonb))
            ON CONFLICT (connection_id, stream_id) DO UPDATE SET
                stream_kind = EXCLUDED.stream_kind,
                enabled = coalesce(%(en)s, integration_streams.enabled),
                frequency = coalesce(%(fr)s, integration_streams.frequency),
                filter_config = coalesce(%(fc)s, integration_streams.filter_config),
                settings = coalesce(%(st)s, integration_streams.settings),
                updated_at = now()
            RETURNING {_STREAM_COLS}
            """,
            {
                "c": connection_id, "p": plugin_id, "s": stream_id, "k": stream_kind, "en": enabled,
                "fr": frequency, "dfr": default_frequency,
                "fc": Jsonb(filter_config) if filter_config is not None else None,
                "st": Jsonb(settings) if settings is not None else None,
            },
        ).fetchone()
    assert row is not None
    return StreamRow(**row)


def get_stream(store: Db, connection_id: str, stream_id: str) -> StreamRow:
    """One stream row; NotFoundError (404) when absent."""
    with use(store) as conn:
        row = conn.execute(
            f"SELECT {_STREAM_COLS} FROM integration_streams WHERE connection_id = %s AND stream_id = %s",
            (connection_id, stream_id),
        ).fetchone()
    if row is None:
        raise NotFoundError(
            f"stream {stream_id!r} is not enabled on connection {connection_id!r}", field="stream_id"
        )
    return StreamRow(**row)


def set_next_sync_at(store: Db, connection_id: str, stream_id: str, next_sync_at: datetime | None) -> StreamRow:
    """Record when the host will next sync the stream (None: no schedule)."""
    with use(store) as conn:
        row = conn.execute(
            f"UPDATE integration_streams SET next_sync_at = %s WHERE connection_id = %s AND stream_id = %s"
            f" RETURNING {_STREAM_COLS}",
            (next_sync_at, connection_id, stream_id),
        ).fetchone()
    if row is None:
        raise NotFoundError(f"stream {stream_id!r} is not enabled on connection {connection_id!r}", field="stream_id")
    return StreamRow(**row)


def list_streams(store: Db, connection_id: str | None = None, *, enabled_only: bool = False) -> list[StreamRow]:
    """Stream rows of one connection (or all), ordered by connection then stream id."""
    where, args = [], []
    if connection_id:
        where.append("connection_id = %s")
        args.append(connection_id)
    if enabled_only:
        where.append("enabled")
    sql = f"SELECT {_STREAM_COLS} FROM integration_streams"
    if where:
        sql += " WHERE " + " AND ".join(where)
    with use(store) as conn:
        rows = conn.execute(sql + " ORDER BY connection_id, stream_id", args).fetchall()
    return [StreamRow(**r) for r in rows]


def delete_stream(store: Db, connection_id: str, stream_id: str, *, forget_records: bool = True) -> bool:
    """Delete a stream row; by default also its synced-record map, so a re-enable starts clean."""
    with use(store) as conn:
        cur = conn.execute(
            "DELETE FROM integration_streams WHERE connection_id = %s AND stream_id = %s",
            (connection_id, stream_id),
        )
        if forget_records:
            conn.execute(
                "DELETE FROM integration_synced_records WHERE connection_id = %s AND stream_id = %s",
                (connection_id, stream_id),
            )
    return cur.rowcount > 0


def set_auth_error(store: Db, connection_id: str, message: str | None) -> None:
    """Record that the provider refused the connection (``message``: the redacted reason), or clear it
    (None) after a reconnect or a successful run."""
    with use(store) as conn:
        conn.execute(
            "UPDATE integration_connections SET auth_error = %s,"
            " auth_error_at = CASE WHEN %s::text IS NULL THEN NULL ELSE now() END"
            " WHERE id = %s AND auth_error IS DISTINCT FROM %s",
            (message, message, connection_id, message),
        )


# -- paged listings for the page (added beside the full listings, whose callers stay as they are) ---------


def list_connections_page(
    store: Db, *, project_id: str | None = None, plugin_id: str | None = None, search: str | None = None,
    limit: int = 25, offset: int = 0,
) -> tuple[list[ConnectionRow], int]:
    """One page of connections, newest first, and how many match; ``search`` matches the account label, the
    provider account id, the connection id or the plugin id (case-insensitive substring)."""
    if not 1 <= limit <= 200:
        raise InputError(f"limit: expected 1 to 200; got {limit}", field="limit")
    if offset < 0:
        raise InputError(f"offset: expected 0 or more; got {offset}", field="offset")
    where, args = [], []
    if project_id:
        where.append("project_id = %s")
        args.append(project_id)
    if plugin_id:
        where.append("plugin_id = %s")
        args.append(plugin_id)
    if search:
        like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append("(account_label ILIKE %s OR external_account_id ILIKE %s OR id ILIKE %s OR plugin_id ILIKE %s)")
        args += [like] * 4
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    with use(store) as conn:
        counted = conn.execute(f"SELECT count(*) AS n FROM integration_connections{clause}", args).fetchone()
        total = counted["n"] if counted else 0
        rows = conn.execute(f"SELECT {_CONN_COLS} FROM integration_connections{clause}"
                            " ORDER BY created_at DESC, id LIMIT %s OFFSET %s", [*args, limit, offset]).fetchall()
    return [_conn_row(r) for r in rows], int(total)


def list_streams_of(store: Db, connection_ids: list[str]) -> list[StreamRow]:
    """Stream rows of the given connections (one query for a page of connections)."""
    if not connection_ids:
        return []
    with use(store) as conn:
        rows = conn.execute(f"SELECT {_STREAM_COLS} FROM integration_streams WHERE connection_id = ANY(%s)"
                            " ORDER BY connection_id, stream_id", (connection_ids,)).fetchall()
    return [StreamRow(**r) for r in rows]


def count_by_plugin(store: Db, *, project_id: str | None = None) -> dict[str, int]:
    """How many connections each plugin has (of one project, or all): the catalog's "N connected" while the
    connections themselves come a page at a time."""
    where, args = ("WHERE project_id = %s", [project_id]) if project_id else ("", [])
    with use(store) as conn:
        rows = conn.execute(f"SELECT plugin_id, count(*) AS n FROM integration_connections {where}"
                            " GROUP BY plugin_id", args).fetchall()
    return {r["plugin_id"]: int(r["n"]) for r in rows}
