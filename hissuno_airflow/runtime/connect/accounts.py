"""Saving a connected provider account (one row per project, plugin and account) and the AuthCtx."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...kit.auth import AuthResult
from ...kit.context import AuthCtx
from ...kit.define import PluginDef
from ...kit.errors import AccountExists, ConflictError, NotFoundError, StoreError
from ...kit.input_limits import check_id, check_json_value, check_label
from ...store import connections as repo
from ...store.connections import ConnectionRow
from ...store.db import Store
from ..credentials import configured_backend, credential_store
from ..services import ConnectionServices
from .state import StateError, UserMismatch, consume_state, issue_state, read_state


def as_auth_result(value: Any, plugin: PluginDef) -> AuthResult:
    if isinstance(value, AuthResult):
        return value
    if isinstance(value, Mapping):
        try:
            return AuthResult.model_validate(dict(value))
        except Exception as exc:
            msg = f"plugin {plugin.id!r} returned an invalid auth result: {type(exc).__name__}"
            raise StoreError(msg) from None
    msg = f"plugin {plugin.id!r} returned {type(value).__name__}; expected an AuthResult"
    raise StoreError(msg)


def save_auth_result(
    store: Store, plugin: PluginDef, project_id: str, result: AuthResult | Mapping[str, Any], *,
    reconnect_id: str | None = None,
) -> tuple[ConnectionRow, bool]:
    """Upsert the connection and store its credentials; returns (row, created).

    Without ``reconnect_id`` only a new connection is made: an account that is connected already is
    refused (``AccountExists``) and nothing is written.

    Raises:
        NotFoundError: the reconnect target is not a connection of this project and plugin.
        AccountExists: no ``reconnect_id`` and the account is connected already (409, names it).
        ConflictError: the reconnect changed provider account, or ``multi_instance=False`` is violated.
    """
    res = as_auth_result(result, plugin)
    # What the provider names the account is indexed (external id) or shown (label): bounded, storable text.
    check_id(res.external_account_id, "external_account_id")
    check_label(res.account_label, "account_label")
    check_json_value(dict(res.settings or {}), "settings")
    if reconnect_id:
        target = reconnect_target(store, plugin, project_id, reconnect_id)
        if target.external_account_id != res.external_account_id:
            msg = (f"connection_id: the provider account changed (connected {target.account_label!r}); "
                   "connect it as a new connection instead")
            raise ConflictError(msg, field="connection_id")
    else:
        existing = repo.find_connection(store, project_id=project_id, plugin_id=plugin.id,
                                        external_account_id=res.external_account_id)
        if existing is not None:
            raise AccountExists(plugin.name, existing.id, existing.account_label)
    if not plugin.multi_instance:
        others = [c for c in repo.list_connections(store, project_id=project_id, plugin_id=plugin.id)
                  if c.external_account_id != res.external_account_id]
        if others:
            msg = (f"plugin {plugin.id!r} allows one connection per project; "
                   f"disconnect {others[0].account_label!r} first")
            raise ConflictError(msg, field="plugin_id")
    account = {"project_id": project_id, "plugin_id": plugin.id, "external_account_id": res.external_account_id}
    backend = configured_backend()
    # An unusable backend (``airflow`` with no initialised Airflow) is named, with its fix, before any write.
    credential_store(store, backend)
    if reconnect_id:
        row, created = repo.upsert_connection(store, **account, account_label=res.account_label,
                                              settings=res.settings, credentials_backend=backend)
    else:
        new = repo.insert_connection(store, **account, account_label=res.account_label, settings=res.settings,
                                     credentials_backend=backend)
        if new is None:  # a concurrent request connected the same account since the check above
            raced = repo.find_connection(store, **account)
            if raced is not None:
                raise AccountExists(plugin.name, raced.id, raced.account_label)
            raise ConflictError("connection_id: try again", field="connection_id")
        row, created = new, True
    try:
        credential_store(store, row.credentials_backend).save(row, dict(res.credentials))
    except Exception as exc:
        if created:
            repo.delete_connection(store, row.id)
        msg = f"could not store the credentials of {plugin.id!r}: {type(exc).__name__}"
        raise StoreError(msg) from exc
    if row.needs_reconnect:
        repo.set_auth_error(store, row.id, None)  # reconnected: the new credentials passed the plugin's test
        row = repo.get_connection(store, row.id)
    return row, created


class AuthServices(ConnectionServices):
    """What an AuthCtx offers: the plugin's services plus saving connections and state tokens."""

    def __init__(self, plugin: PluginDef, store: Store, project_id: str, user_id: str,
                 secrets: list[str] | None = None, credentials: Mapping[str, Any] | None = None,
                 reconnect_id: str | None = None) -> None:
        # ``credentials``: the ones being tested (api_key), so a templated base URL fills from them.
        super().__init__(plugin, label="connect", credentials=credentials)
        self.auth_store = store
        self.project_id = project_id
        self.user_id = user_id
        self.secrets.extend(secrets or [])
        self.saved: list[str] = []
        self.reconnect_id = reconnect_id
        """The connection the user asked to update (the request named it, or a verified state carried it)."""

    def save_connection(self, result: Any) -> str:
        row, _ = save_auth_result(self.auth_store, self.plugin, self.project_id, result,
                                  reconnect_id=self.reconnect_id)
        self.saved.append(row.id)
        return row.id

    def update_connection(self, connection_id: str, **changes: Any) -> None:
        row = repo.get_connection(self.auth_store, connection_id, plugin_id=self.plugin.id)
        if str(row.project_id) != str(self.project_id):
            raise NotFoundError(f"connection {connection_id!r} not found", field="connection_id")
        creds = changes.pop("credentials", None)
        if changes.get("account_label") is not None:
            check_label(str(changes["account_label"]), "account_label")
        if changes.get("settings") is not None:
            check_json_value(dict(changes["settings"]), "settings")
        repo.update_connection(self.auth_store, connection_id, account_label=changes.get("account_label"),
                               settings=changes.get("settings"))
        if creds is not None:
            credential_store(self.auth_store, row.credentials_backend).save(row, dict(creds))

    def app_jwt(self) -> str:
        from ..refresh import github_app_jwt

        return github_app_jwt(self.plugin)

    def sign_state(self, data: Mapping[str, Any]) -> str:
        return issue_state(self.auth_store, {"k": "custom", "p": self.plugin.id, "prj": self.project_id,
                                             "u": self.user_id, "c": self.reconnect_id, "d": dict(data)})

    def verify_state(self, token: str) -> dict[str, Any]:
        # Binding is checked before the nonce is used up, so a stranger holding the URL can neither finish
        # the flow (an anonymous finisher is a stranger too) nor burn the rightful user's state.
        data = read_state(token)
        if data.get("k") != "custom" or data.get("p") != self.plugin.id:
            raise StateError("invalid_state")
        if data.get("u") and data["u"] != self.user_id:
            raise UserMismatch()
        consume_state(self.auth_store, token)
        self.project_id = data.get("prj") or self.project_id
        self.reconnect_id = data.get("c") or self.reconnect_id
        return dict(data.get("d") or {})


def auth_ctx(plugin: PluginDef, store: Store, project_id: str, user_id: str, connection_id: str | None = None,
             secrets_: list[str] | None = None, credentials: Mapping[str, Any] | None = None) -> AuthCtx:
    svc = AuthServices(plugin, store, project_id, user_id, list(secrets_ or []), credentials,
                       reconnect_id=connection_id)
    return AuthCtx(plugin_id=plugin.id, project_id=project_id, services=svc, connection_id=connection_id,
                   logger=svc.logger)


def reconnect_target(store: Store, plugin: PluginDef, project_id: str, connection_id: str) -> repo.ConnectionRow:
    """The connection a reconnect names; 404 unless it is this plugin's and in this project."""
    target = repo.get_connection(store, connection_id, plugin_id=plugin.id)
    if str(target.project_id) != str(project_id):
        raise NotFoundError(f"connection {connection_id!r} not found", field="connection_id")
    return target


def disconnect(store: Store, connection: ConnectionRow) -> None:
    """Forget a connection: its credentials (Airflow Connection and overlay, or the encrypted column),
    then its row, streams, runs and synced-record map. Ingested entities stay."""
    try:
        credential_store(store, connection.credentials_backend).delete(connection)
    finally:
        repo.delete_connection(store, connection.id)
