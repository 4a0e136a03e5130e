"""Where connection credentials live: encrypted in the store (``db``) or in Airflow Connections (``airflow``).

A connection row records its backend, so reading always goes to the right place; new connections use
``HISSUNO_CREDENTIALS_BACKEND`` (``db``, ``airflow`` or ``auto``: Airflow when it is importable and
``AIRFLOW_HOME`` is set). Credentials never appear in the store in plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
from typing import Any, Protocol

from .store import connections as repo
from .store.connections import ConnectionRow
from .store.db import Store


class CredentialStore(Protocol):
    """Reads and writes one backend's credentials."""

    backend: str

    def load(self, connection: ConnectionRow) -> dict[str, Any]: ...
    def save(self, connection: ConnectionRow, credentials: dict[str, Any]) -> None: ...
    def delete(self, connection: ConnectionRow) -> None: ...


def _fernet() -> Any:
    from cryptography.fernet import Fernet

    from . import settings

    key = base64.urlsafe_b64encode(hashlib.sha256(b"hissuno-credentials:" + settings.secret_key()).digest())
    return Fernet(key)


class DbCredentialStore:
    """Fernet-encrypted credentials in ``integration_connections.credentials_enc``."""

    backend = "db"

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self, connection: ConnectionRow) -> dict[str, Any]:
        """Decrypt the connection's credentials ({} when none were saved)."""
        blob = repo.get_encrypted_credentials(self.store, connection.id)
        if not blob:
            return {}
        data: dict[str, Any] = json.loads(_fernet().decrypt(blob))
        return data

    def save(self, connection: ConnectionRow, credentials: dict[str, Any]) -> None:
        """Encrypt and store the credentials."""
        blob = _fernet().encrypt(json.dumps(credentials, default=str).encode())
        repo.set_credentials_ref(self.store, connection.id, backend="db", ref=None, encrypted=blob)

    def delete(self, connection: ConnectionRow) -> None:
        """Nothing to do: the row's deletion removes the blob."""


def configured_backend() -> str:
    """The backend new connections use."""
    choice = os.environ.get("HISSUNO_CREDENTIALS_BACKEND", "auto").lower()
    if choice == "auto":
        has_airflow = importlib.util.find_spec("airflow") is not None
        return "airflow" if has_airflow and os.environ.get("AIRFLOW_HOME") else "db"
    return choice


def credential_store(store: Store, backend: str | None = None) -> CredentialStore:
    """The credential store for ``backend`` (default: the configured one)."""
    backend = backend or configured_backend()
    if backend == "db":
        return DbCredentialStore(store)
    if backend == "airflow":
        from .airflow_credentials import AirflowCredentialStore

        return AirflowCredentialStore(store)
    msg = f"HISSUNO_CREDENTIALS_BACKEND: expected db, airflow or auto; got {backend!r}"
    raise ValueError(msg)


def load_credentials(store: Store, connection: ConnectionRow) -> dict[str, Any]:
    """The connection's current credentials from whichever backend holds them."""
    return credential_store(store, connection.credentials_backend).load(connection)


def save_credentials(store: Store, connection: ConnectionRow, credentials: dict[str, Any]) -> None:
    """Persist credentials to the connection's backend."""
    credential_store(store, connection.credentials_backend).save(connection, credentials)
