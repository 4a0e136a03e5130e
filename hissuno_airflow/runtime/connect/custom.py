"""The ``custom`` flow: the plugin owns the request (body untouched) and its return leg."""

from __future__ import annotations

from typing import Any

from ...kit.auth import AuthResult, CustomAuth
from ...kit.context import Request
from ...kit.define import PluginDef
from ...kit.errors import ConnectFailed, HissunoError, NotFoundError
from ...kit.redaction import redact_text
from ...store.db import Store
from ..handlers import call_handler
from .accounts import auth_ctx, reconnect_target, save_auth_result


def _custom_answer(store: Store, plugin: PluginDef, project_id: str, value: Any, reconnect_id: str | None) -> Any:
    if isinstance(value, (AuthResult,)):
        row, created = save_auth_result(store, plugin, project_id, value, reconnect_id=reconnect_id)
        return {"success": True, "connection_id": row.id, "account_label": row.account_label, "created": created}
    return value


def connect_custom(
    plugin: PluginDef, store: Store, request: Request, *, project_id: str, user_id: str,
    leg: str = "connect", reconnect_id: str | None = None,
) -> Any:
    """Hand the untouched request to the plugin's ``connect`` (or ``callback``); returns its answer.

    An AuthResult is saved here; a Response or dict is returned for the route to render. ``reconnect_id``
    (the ``connection_id`` query parameter of the connect request) names the connection to update: it is
    ``ctx.connection_id``, ``ctx.save_connection`` updates that connection, and ``ctx.sign_state`` carries
    it to the return leg, whose ``ctx.verify_state`` restores it. Without it an account that is connected
    already is refused (409 ``account_exists``).
    """
    auth = plugin.auth
    assert isinstance(auth, CustomAuth)
    fn = auth.connect if leg == "connect" else auth.callback
    if fn is None:
        raise NotFoundError(f"plugin {plugin.id!r} has no connect callback", field="plugin_id")
    if reconnect_id:
        reconnect_target(store, plugin, project_id, reconnect_id)
    ctx = auth_ctx(plugin, store, project_id, user_id, reconnect_id)
    try:
        value = call_handler(fn, request, ctx)
    except HissunoError:
        raise
    except Exception as exc:
        raise ConnectFailed(redact_text(str(exc)) or type(exc).__name__, field="credentials") from None
    # A callback may have verified a state naming another project.
    svc = ctx.services
    return _custom_answer(store, plugin, svc.project_id, value, svc.reconnect_id), svc.saved
