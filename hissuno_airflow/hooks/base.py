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

if TYPE_CHECKING:
    from ..kit.define import PluginDef

AIRFLOW_CONN_PREFIX = "hissuno_"


def airflow_conn_id(connection_id: str) -> str:
    """Airflow Connection id holding the credentials of a Hissuno connection."""
    return AIRFLOW_CONN_PREFIX + connection_id


def credentials_from_connection(conn: Any, conn_type: str) -> dict[str, Any]:
    """Credentials stored in an Airflow Connection: extra fields (plain or UI-prefixed) plus the password.

    Args:
        conn: an Airflow Connection (SDK or ORM model).
        conn_type: its ``hissuno_<plugin>`` type; the UI stores form fields as ``extra__<type>__<field>``.

    Returns:
        The credentials map; empty values the form left blank are dropped.
    """
    extra = conn.extra_dejson or {}
    prefix = f"extra__{conn_type}__"
    creds: dict[str, Any] = {}
    for key, value in extra.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        if value in (None, ""):
            continue
        # A plain key wins over the UI-prefixed one: plain keys are what hissuno itself writes last.
        if name not in creds or not key.startswith(prefix):
            creds[name] = value
    if conn.password and "password" not in creds:
        creds["password"] = conn.password
    return creds


class _AuthServices:
    """What an ``AuthCtx`` needs outside a sync: named base URLs and an HTTP client."""

    def __init__(self, plugin: PluginDef) -> None:
        self.plugin = plugin

    def base_url(self, name: str) -> str:
        from ..runtime.services import resolve_base

        return resolve_base(self.plugin, name)

    def http_client(self, base: str = "API", **kwargs: Any) -> Any:
        from ..runtime.services import make_http_client

        return make_http_client(self.plugin, base, **kwargs)


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

        from ..airflow_credentials import read_overlay

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

        plugin = self.plugin
        creds = self.get_credentials()
        if not isinstance(plugin.auth, ApiKeyAuth):
            ok = bool(creds)
            return ok, (f"{plugin.name}: credentials present" if ok else f"{plugin.name}: no credentials")
        missing = [f.id for f in plugin.auth.fields if f.required and not creds.get(f.id)]
        if missing:
            return False, f"{plugin.name}: missing required field(s) {', '.join(missing)}"
        ctx = AuthCtx(plugin_id=plugin.id, project_id="", services=_AuthServices(plugin))
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
