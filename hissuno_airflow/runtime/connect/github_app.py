"""The ``github_app`` flow's outbound leg: the app's install page with a state."""

from __future__ import annotations

import os
from typing import Any

from ...kit.auth import GitHubAppAuth
from ...kit.define import PluginDef
from ...kit.errors import NotConfigured
from ...store.db import Store
from ..services import resolve_url
from .accounts import reconnect_target
from .state import issue_state


def start_github_app(
    plugin: PluginDef, store: Store, *, project_id: str, user_id: str, reconnect_id: str | None = None
) -> dict[str, Any]:
    """The app's install page, carrying a state GitHub hands back to the callback with ``installation_id``."""
    from urllib.parse import urlencode

    auth = plugin.auth
    assert isinstance(auth, GitHubAppAuth)
    fallback = auth.app_slug_fallback_env
    slug = os.environ.get(auth.app_slug_env, "") or (os.environ.get(fallback, "") if fallback else "")
    if not slug:
        raise NotConfigured(f"{auth.app_slug_env} is not set on the server")
    if reconnect_id:
        reconnect_target(store, plugin, project_id, reconnect_id)
    state = issue_state(store, {"k": "github_app", "p": plugin.id, "prj": project_id, "u": user_id,
                                "c": reconnect_id})
    url = resolve_url(plugin, auth.install_url.replace("{slug}", slug))
    return {"authorize_url": url + ("&" if "?" in url else "?") + urlencode({"state": state})}
