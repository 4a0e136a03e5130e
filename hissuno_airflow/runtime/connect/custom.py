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
from .accounts import auth_ctx, save_auth_result


def _custom_answer(store: Store, plugin: PluginDef, project_id: str, value: Any) -> Any:
    if isinstance(value, (AuthResult,)):
        row, created = save_auth_result(store, plugin, project_id, value)
        return {"success": True, "connection_id": row.id, "account_label": row.account_label, "created": created}
    return value


def connect_custom(
    plugin: PluginDef, store: Store, request: Request, *, project_id: str, user_id: str,
    leg: str = "connect",
) -> Any:
    """Hand the untouched request to the plugin's ``connect`` (or ``callback``); returns its answer.

    An AuthResult is saved here; a Response or dict is returned for the route to render.
    """
    auth = plugin.auth
    assert isinstance(auth, CustomAuth)
    fn = auth.connect if leg == "connect" else auth.callback
    if fn is None:
        raise NotFoundError(f"plugin {plugin.id!r} has no connect callback", field="plugin_id")
    ctx = auth_ctx(plugin, store, project_id, user_id)
    try:
        value = call_handler(fn, request, ctx)
    except HissunoError:
        raise
    except Exception as exc:
        raise ConnectFailed(redact_text(str(exc)) or type(exc).__name__, field="credentials") from None
    # A callback may have verified a state naming another project.
    return _custom_answer(store, plugin, ctx.services.project_id, value), ctx.services.saved
