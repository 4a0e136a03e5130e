"""Credentials kept in Airflow: a Connection per Hissuno connection plus a refreshed-token overlay.

Layout: the Airflow Connection ``hissuno_<connection id>`` (type ``hissuno_<plugin>``) holds every
credential field in its ``extra`` (Fernet-encrypted by Airflow). Server-side processes (CLI, API
server) write it through the ORM. Task processes cannot write Connections in Airflow 3, so a token a
task refreshes goes to the Variable ``hissuno_token__<connection id>`` (also Fernet-encrypted, and
masked in logs because its key contains "token"); readers apply that overlay over the Connection.
A server-side save rewrites the Connection and drops the overlay, so the newest write always wins.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .names import airflow_conn_id, conn_type_for

if TYPE_CHECKING:
    from ..store.connections import ConnectionRow
    from ..store.db import Store

OVERLAY_PREFIX = "hissuno_token__"


def overlay_key(connection_id: str) -> str:
    """Variable name of a connection's refreshed-token overlay."""
    return OVERLAY_PREFIX + connection_id


def in_task_sandbox() -> bool:
    """True inside a task or DAG-processor child, where the ORM is blocked and the SDK talks to a supervisor."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return False
    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def _extra(conn: Any) -> dict[str, Any]:
    """The Connection's extra as a dict, parsed here rather than with ``extra_dejson``.

    ``extra_dejson`` hands every value to Airflow's secrets masker, which warns "Skipping masking for a
    secret as it's too short" for any short value (a workspace name, an empty id) on every task. The
    whole extra string is already masked when Airflow fetches the Connection; the secret values in it
    are masked one by one by ``_mask_secrets``.
    """
    raw = conn.extra
    if not raw:
        return {}
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return dict(data) if isinstance(data, dict) else {}


def _mask_secrets(creds: dict[str, Any]) -> None:
    """Mask the values of sensitive keys in task logs; values too short to mask are left out silently."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - the Task SDK ships with Airflow 3
        return
    from ..kit.redaction import is_sensitive_key

    for key, value in creds.items():
        if isinstance(value, str) and len(value) >= _MIN_MASKED and is_sensitive_key(key):
            mask_secret(value, key)


_MIN_MASKED = 5  # Airflow's default [logging] min_length_masked_secret
SHORT_KEY = "hissuno_short_fields"
"""Extra key holding, as one JSON string, the values too short for Airflow's masker (see ``pack_extra``)."""


def pack_extra(credentials: dict[str, Any]) -> dict[str, Any]:
    """The extra hissuno writes: short string values (a workspace "w", a region "eu") packed into one JSON
    string under ``SHORT_KEY``.

    Airflow reads a Connection's extra with ``extra_dejson`` whenever it is fetched (``get_uri``), and its
    masker warns "Skipping masking for a secret as it's too short" for every short value, on every task.
    One packed value is long enough to pass, and it is not a secret name, so it is not masked either.
    """
    short = {k: v for k, v in credentials.items() if isinstance(v, str) and 0 < len(v) < _MIN_MASKED}
    packed = {k: v for k, v in credentials.items() if k not in short}
    if short:
        packed[SHORT_KEY] = json.dumps(short, sort_keys=True)
    return packed


def credentials_from_connection(conn: Any, conn_type: str) -> dict[str, Any]:
    """Credentials stored in an Airflow Connection: extra fields (plain or UI-prefixed) plus the password.

    Args:
        conn: an Airflow Connection (SDK or ORM model).
        conn_type: its ``hissuno_<plugin>`` type; the UI stores form fields as ``extra__<type>__<field>``.

    Returns:
        The credentials map; empty values the form left blank are dropped.
    """
    extra = _extra(conn)
    short = extra.pop(SHORT_KEY, None)
    if isinstance(short, str):
        try:
            unpacked = json.loads(short)
        except ValueError:
            unpacked = {}
        if isinstance(unpacked, dict):
            extra = {**unpacked, **extra}
    prefixes = (f"extra__{conn_type}__",)
    creds: dict[str, Any] = {}
    for key, value in extra.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        name = key[len(prefix):] if prefix else key
        if value in (None, ""):
            continue
        # A plain key wins over the UI-prefixed one: plain keys are what hissuno itself writes last.
        if name not in creds or prefix is None:
            creds[name] = value
    if conn.password and "password" not in creds:
        creds["password"] = conn.password
    _mask_secrets(creds)
    return creds


def read_overlay(connection_id: str) -> dict[str, Any]:
    """The refreshed-token overlay of a connection ({} when there is none)."""
    key = overlay_key(connection_id)
    if in_task_sandbox():
        from airflow.sdk import Variable

        raw = Variable.get(key, default=None)
    else:
        from airflow.models import Variable as OrmVariable

        raw = OrmVariable.get(key, default_var=None)
    if not raw:
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    return dict(data) if isinstance(data, dict) else {}


def _read_connection(conn_id: str, plugin_id: str) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        if in_task_sandbox():
            from airflow.sdk import Connection

            conn = Connection.get(conn_id)
        else:
            from airflow.models import Connection as OrmConnection

            conn = OrmConnection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return {}
    return credentials_from_connection(conn, conn_type_for(plugin_id))


def _write_connection(
    connection_id: str, conn_type: str, description: str, credentials: dict[str, Any]
) -> None:
    from airflow.models import Connection as OrmConnection
    from airflow.models import Variable as OrmVariable
    from airflow.utils.session import create_session

    conn_id = airflow_conn_id(connection_id)
    with create_session() as session:
        conn = session.query(OrmConnection).filter(OrmConnection.conn_id == conn_id).one_or_none()
        if conn is None:
            conn = OrmConnection(conn_id=conn_id, conn_type=conn_type)
            session.add(conn)
        conn.conn_type = conn_type
        conn.description = description
        conn.set_extra(json.dumps(pack_extra(credentials), default=str))
    # The Connection is now the newest copy; a stale overlay would shadow it.
    OrmVariable.delete(overlay_key(connection_id))


class AirflowCredentialStore:
    """``CredentialStore`` backed by Airflow Connections (+ the Variable overlay written by tasks)."""

    backend = "airflow"

    def __init__(self, store: Store) -> None:
        """Bind to the hissuno store (to record where each connection's credentials live).

        Args:
            store: the hissuno store.
        """
        self.store = store

    def load(self, connection: ConnectionRow) -> dict[str, Any]:
        """Credentials of ``connection``: the overlay's keys win over the Connection's."""
        conn_id = connection.credentials_ref or airflow_conn_id(connection.id)
        creds = _read_connection(conn_id, connection.plugin_id)
        creds.update(read_overlay(connection.id))
        return creds

    def save(self, connection: ConnectionRow, credentials: dict[str, Any]) -> None:
        """Persist credentials: the Connection from servers, the Variable overlay from tasks."""
        if in_task_sandbox():
            from airflow.sdk import Variable

            Variable.set(overlay_key(connection.id), json.dumps(dict(credentials), default=str))
            return
        from ..store import connections as repo

        conn_id = airflow_conn_id(connection.id)
        description = f"Hissuno {connection.plugin_id}: {connection.account_label}"
        _write_connection(connection.id, conn_type_for(connection.plugin_id), description, dict(credentials))
        repo.set_credentials_ref(self.store, connection.id, backend="airflow", ref=conn_id)

    def delete(self, connection: ConnectionRow) -> None:
        """Remove the Connection and its overlay (server side only)."""
        from airflow.models import Connection as OrmConnection
        from airflow.models import Variable as OrmVariable
        from airflow.utils.session import create_session

        with create_session() as session:
            session.query(OrmConnection).filter(
                OrmConnection.conn_id == airflow_conn_id(connection.id)
            ).delete()
        OrmVariable.delete(overlay_key(connection.id))
