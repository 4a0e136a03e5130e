"""Where connection credentials live: encrypted in the store (``db``) or in a backend the host adds.

A connection row records its backend, so reading always goes to the right place. New connections use
``HISSUNO_CREDENTIALS_BACKEND``: ``db``, a backend the installed host offers (``airflow`` under Airflow),
or ``auto`` (the host's default: Airflow Connections under an Airflow host, the store otherwise).
Credentials never appear in the store in plaintext.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..kit.errors import NotConfigured
from ..store import connections as repo
from ..store import sealed
from ..store.connections import ConnectionRow
from ..store.db import Store
from .host import CredentialStore, current_host

__all__ = ["CredentialStore", "DbCredentialStore", "configured_backend", "credential_store", "load_credentials",
           "save_credentials"]


def _fernet() -> Any:
    # One key derivation for every secret at rest (credentials here, secret settings in store.sealed).
    return sealed.fernet()


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
    """The backend new connections use (``auto``: the installed host's default)."""
    choice = os.environ.get("HISSUNO_CREDENTIALS_BACKEND", "auto").lower()
    return current_host().default_credentials_backend() if choice == "auto" else choice


def credential_store(store: Store, backend: str | None = None) -> CredentialStore:
    """The credential store for ``backend`` (default: the configured one).

    Raises:
        NotConfigured: the backend is not offered by this process's host (``airflow`` outside Airflow);
            the message names the fix.
    """
    backend = backend or configured_backend()
    if backend == "db":
        return DbCredentialStore(store)
    extra = current_host().credential_backends()
    if backend in extra:
        return extra[backend](store)
    if backend == "airflow":
        msg = ("HISSUNO_CREDENTIALS_BACKEND=airflow, but this process has no usable Airflow installation "
               "(set AIRFLOW_HOME to it and run 'airflow db migrate'), or set HISSUNO_CREDENTIALS_BACKEND=db "
               "to keep credentials encrypted in the hissuno store")
        raise NotConfigured(msg, field="credentials_backend")
    msg = f"HISSUNO_CREDENTIALS_BACKEND: expected db, airflow or auto; got {backend!r}"
    raise NotConfigured(msg, field="credentials_backend")


def load_credentials(store: Store, connection: ConnectionRow) -> dict[str, Any]:
    """The connection's stored credentials from whichever backend holds them (no refresh)."""
    return credential_store(store, connection.credentials_backend).load(connection)


def save_credentials(store: Store, connection: ConnectionRow, credentials: dict[str, Any]) -> None:
    """Persist credentials to the connection's backend."""
    credential_store(store, connection.credentials_backend).save(connection, credentials)
