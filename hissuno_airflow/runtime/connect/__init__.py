"""Connect flows: ``api_key``, ``oauth2`` (authlib), ``github_app`` and ``custom``.

Every flow ends in the same place, ``save_auth_result``: one upsert per (project, plugin, external
account), so connecting the same account again is a reconnect; ``multi_instance=False`` refuses a
second account; the credentials go to the configured credential store, and a brand-new row is
removed again if they cannot be saved, so nothing is half-written.

Fixes over the original (reference 2.3): a failed ``test`` is a 400 carrying the plugin's message; the
OAuth state is encrypted and authenticated (Fernet), expires, is single-use (``oauth_states``) and bound
to the user who started the flow; a reconnect target must belong to the same project and plugin and
the provider account must not change; ``github_app`` works end to end; a custom plugin reads the
request body itself and has a return leg.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import registry, settings
from ...kit.auth import ApiKeyAuth, GitHubAppAuth, OAuth2Auth
from ...kit.context import Request
from ...kit.define import PluginDef
from ...kit.errors import AccountExists, ConflictError, ConnectFailed, InputError, NotConfigured
from ...kit.input_limits import check_id
from ...store.db import Store
from ...store.projects import get_project
from .accounts import (
    AuthServices,
    disconnect,
    reconnect_target,
    save_auth_result,
)
from .api_key import connect_api_key
from .callback import finish_callback
from .custom import connect_custom
from .github_app import start_github_app
from .oauth2 import start_oauth
from .state import StateError, consume_state, issue_state, read_state

__all__ = [
    "AccountExists", "AuthServices", "ComingSoon", "ConflictError", "ConnectFailed", "NotConfigured", "StateError",
    "connect_api_key", "connect_custom", "connectable_plugin", "consume_state", "disconnect", "finish_callback",
    "issue_state", "read_state", "reconnect_target",
    "save_auth_result", "start_connect", "start_github_app", "start_oauth",
]


class ComingSoon(InputError):
    """The plugin is listed as coming soon: it cannot be connected yet."""

    code = "coming_soon"
    http_status = 409


def connectable_plugin(plugin_id: str) -> PluginDef:
    """The plugin ``plugin_id`` if a connection may be started for it (not ``coming_soon``)."""
    plugin = registry.get_plugin(plugin_id)
    if plugin.coming_soon:
        raise ComingSoon(f"plugin {plugin.id!r} is coming soon: it cannot be connected yet", field="plugin_id")
    return plugin


def start_connect(
    plugin_id: str, body: Mapping[str, Any], store: Store, *, user_id: str, redirect_uri: str,
    request: Request | None = None,
) -> Any:
    """Dispatch ``POST .../connect`` by auth type."""
    plugin = connectable_plugin(plugin_id)
    project_id = get_project(store, body.get("project_id") or body.get("projectId") or settings.default_project_id()).id
    reconnect = body.get("connection_id") or body.get("connectionId")
    if reconnect is not None and not isinstance(reconnect, str):
        raise InputError("connection_id: expected a string", field="connection_id")
    if reconnect:
        check_id(reconnect, "connection_id")
    auth = plugin.auth
    if isinstance(auth, ApiKeyAuth):
        return connect_api_key(plugin, store, project_id=project_id, user_id=user_id,
                               credentials=body.get("credentials"), reconnect_id=reconnect)
    if isinstance(auth, OAuth2Auth):
        return start_oauth(plugin, store, project_id=project_id, user_id=user_id, redirect_uri=redirect_uri,
                           reconnect_id=reconnect)
    if isinstance(auth, GitHubAppAuth):
        if auth.test is not None and body.get("credentials"):
            # The token alternative (a personal access token): checked and saved like an api_key.
            return connect_api_key(plugin, store, project_id=project_id, user_id=user_id,
                                   credentials=body.get("credentials"), reconnect_id=reconnect)
        return start_github_app(plugin, store, project_id=project_id, user_id=user_id, reconnect_id=reconnect)
    if request is None:
        # A caller without an HTTP request (the CLI): the plugin reads the same body as JSON.
        import json

        request = Request(method="POST", path=f"/api/plugins/{plugin.id}/connect", query={},
                          headers={"content-type": "application/json"}, body=json.dumps(dict(body)).encode())
    answer, _ = connect_custom(plugin, store, request, project_id=project_id, user_id=user_id, reconnect_id=reconnect)
    return answer
