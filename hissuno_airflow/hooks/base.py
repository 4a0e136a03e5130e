"""``HissunoHook``: the Airflow hook behind every ``hissuno_<plugin>`` connection type.

One subclass per plugin is generated on demand by ``hissuno_airflow.hooks`` (Airflow needs a
``conn_type`` class attribute per connection type). The hook reads the connection's credentials
(Airflow Connection plus the refreshed-token Variable overlay) and runs the plugin's credential test.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseHook

from ..airflow_host.credentials import credentials_from_connection, read_overlay
from ..airflow_host.names import AIRFLOW_CONN_PREFIX, airflow_conn_id

if TYPE_CHECKING:
    from ..kit.define import PluginDef

__all__ = ["AIRFLOW_CONN_PREFIX", "HissunoHook", "airflow_conn_id", "credentials_from_connection"]

class HissunoHook(BaseHook):
    """Credentials and connection test for one Hissuno plugin's Airflow connections."""

    conn_name_attr = "hissuno_conn_id"
    default_conn_name = "hissuno_default"
    conn_type = "hissuno"
    hook_name = "Hissuno"
    plugin_id: ClassVar[str] = ""

    def __init__(self, hissuno_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        """Bind the hook to an Airflow connection id.

        Args:
            hissuno_conn_id: Airflow connection id (``hissuno_<connection id>``).
            **kwargs: passed to ``BaseHook``.
        """
        super().__init__(**kwargs)
        self.hissuno_conn_id = hissuno_conn_id

    @property
    def plugin(self) -> PluginDef:
        """The plugin this hook serves."""
        from ..registry import get_plugin

        return get_plugin(self.plugin_id)

    def get_conn(self) -> dict[str, Any]:
        """Return the connection's current credentials."""
        return self.get_credentials()

    def get_credentials(self) -> dict[str, Any]:
        """Credentials of the Airflow Connection with the refreshed-token Variable overlay applied."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.hissuno_conn_id)
        except AirflowNotFoundException:
            # A plain CLI process has no SDK route to the metastore; the ORM is allowed there.
            from airflow.models import Connection as OrmConnection

            conn = OrmConnection.get_connection_from_secrets(self.hissuno_conn_id)
        creds = credentials_from_connection(conn, self.conn_type)
        if self.hissuno_conn_id.startswith(AIRFLOW_CONN_PREFIX):
            creds.update(read_overlay(self.hissuno_conn_id[len(AIRFLOW_CONN_PREFIX):]))
        return creds

    def test_connection(self) -> tuple[bool, str]:
        """Run the plugin's credential test (``api_key`` plugins) against the provider.

        Returns:
            ``(ok, message)``; the message names the account or the failure, never a secret.
        """
        from ..kit.auth import ApiKeyAuth
        from ..kit.context import AuthCtx
        from ..kit.redaction import redact_text
        from ..runtime.services import ConnectionServices

        plugin = self.plugin
        creds = self.get_credentials()
        if not isinstance(plugin.auth, ApiKeyAuth):
            ok = bool(creds)
            return ok, (f"{plugin.name}: credentials present" if ok else f"{plugin.name}: no credentials")
        missing = [f.id for f in plugin.auth.fields if f.required and not creds.get(f.id)]
        if missing:
            return False, f"{plugin.name}: missing required field(s) {', '.join(missing)}"
        services = ConnectionServices(plugin, label="test", credentials=creds)
        ctx = AuthCtx(plugin_id=plugin.id, project_id="", services=services, logger=services.logger)
        try:
            result = plugin.auth.test(creds, ctx)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except Exception as exc:
            secrets = [str(v) for v in creds.values() if isinstance(v, str)]
            return False, f"{plugin.name}: " + redact_text(f"{type(exc).__name__}: {exc}", secrets)
        label = getattr(result, "account_label", None) or "ok"
        return True, f"{plugin.name}: connected as {label}"


async def _await(awaitable: Any) -> Any:
    return await awaitable
