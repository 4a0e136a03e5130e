"""The return leg of ``oauth2`` and ``github_app``: check the state, exchange or resolve, save."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from ... import registry, settings
from ...kit.auth import GitHubAppAuth, OAuth2Auth
from ...kit.errors import AccountExists, HissunoError, InputError
from ...store.db import Store
from ..handlers import call_handler
from .accounts import as_auth_result, auth_ctx, save_auth_result
from .oauth2 import exchange_code
from .state import StateError, consume_state, read_state

log = logging.getLogger(__name__)


def finish_callback(
    plugin_id: str, query: Mapping[str, str], store: Store, *, user_id: str | None
) -> dict[str, str]:
    """The OAuth2 / GitHub App return leg; returns the query of the page to send the browser to.

    Every refusal is an ``error`` value in that query (``invalid_state``, ``expired_state``,
    ``replayed_state``, ``user_mismatch``, ``plugin_mismatch``, the provider's error, ...) and writes
    no connection.
    """
    plugin = registry.get_plugin(plugin_id)
    out = {"plugin": plugin.id}
    try:
        token = query.get("state")
        if not token:
            raise StateError("missing_state")
        # Check binding before consuming, so a stranger's attempt cannot burn the rightful user's state.
        data = read_state(token)
        if data.get("p") != plugin.id or data.get("k") not in ("oauth2", "github_app"):
            raise StateError("plugin_mismatch")
        if data.get("u") and data["u"] != (user_id or ""):
            raise StateError("user_mismatch")
        consume_state(store, token)
        project_id = str(data.get("prj") or settings.default_project_id())
        ctx = auth_ctx(plugin, store, project_id, str(user_id or ""), data.get("c"))
        auth = plugin.auth
        if isinstance(auth, OAuth2Auth):
            if query.get("error"):
                return {**out, "error": re.sub(r"[^a-z0-9_]", "", query["error"].lower())[:60] or "provider_error"}
            code = query.get("code")
            if not code:
                raise InputError("code: missing", field="code")
            tokens = exchange_code(plugin, auth, code, data)
            ctx.services.secrets.extend(filter(None, [tokens.access_token, tokens.refresh_token]))
            result = as_auth_result(call_handler(auth.on_token_exchanged, tokens, ctx), plugin)
            base = {k: v for k, v in tokens.model_dump(exclude={"raw"}).items() if v is not None}
            result = result.model_copy(update={"credentials": {**base, **result.credentials}})
        elif isinstance(auth, GitHubAppAuth):
            setup_action = query.get("setup_action", "")
            if setup_action == "request":
                # An organization member asked an owner to approve the install: no installation exists yet.
                return {**out, "error": "install_requested"}
            raw_id = query.get("installation_id", "")
            if not raw_id.isdigit():
                raise InputError("installation_id: expected a number", field="installation_id")
            ctx.callback_query = {k: v for k, v in query.items() if k != "state"}
            if query.get("code"):
                ctx.services.secrets.append(query["code"])
            result = as_auth_result(call_handler(auth.on_installation, int(raw_id), ctx), plugin)
            result = result.model_copy(update={
                "credentials": {"installation_id": int(raw_id), **result.credentials},
                "settings": {**(result.settings or {}), "installation_id": int(raw_id),
                             "setup_action": setup_action if setup_action in ("install", "update") else None}})
        else:
            raise StateError("plugin_mismatch")
        row, _ = save_auth_result(store, plugin, project_id, result, reconnect_id=data.get("c"))
    except StateError as exc:
        return {**out, "error": exc.reason}
    except AccountExists as exc:
        # The page offers to update that connection (a new flow whose state names it).
        return {**out, "error": exc.code, "existing": exc.connection["id"]}
    except HissunoError as exc:
        log.warning("connect callback of %s refused: %s", plugin.id, exc.code)
        return {**out, "error": exc.code}
    except Exception:
        log.exception("connect callback of %s failed", plugin.id)
        return {**out, "error": "internal_error"}
    return {**out, "connection": row.id, "connected": "1"}
