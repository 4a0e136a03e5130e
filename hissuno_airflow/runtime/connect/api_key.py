"""The ``api_key`` flow: check the declared fields, run the plugin's ``test``, save."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...kit.auth import ApiKeyAuth, CustomAuth, GitHubAppAuth
from ...kit.define import PluginDef
from ...kit.errors import ConnectFailed, InputError, StoreError
from ...kit.redaction import redact_text, secret_values
from ...store.db import Store
from ..handlers import call_handler
from .accounts import as_auth_result, auth_ctx, reconnect_target, save_auth_result


def check_fields(auth: ApiKeyAuth | CustomAuth | GitHubAppAuth, raw: Any) -> dict[str, Any]:
    """The submitted credential fields, trimmed and checked against the declared ones (unknown ones refused)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InputError("credentials: expected an object", field="credentials")
    known = {f.id for f in auth.fields}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        # A typo (``--set workspce=x``) must not be dropped silently.
        expected = ", ".join(sorted(known)) or "no fields"
        raise InputError(f"credentials.{unknown[0]}: unknown field; expected {expected}",
                         field=f"credentials.{unknown[0]}")
    out: dict[str, Any] = {}
    for f in auth.fields:
        val = raw.get(f.id)
        if isinstance(val, str):
            val = val.strip()
        if val in (None, ""):
            if f.required:
                raise InputError(f"credentials.{f.id}: {f.label} is required", field=f"credentials.{f.id}")
            continue
        if not isinstance(val, (str, int, float, bool)):
            raise InputError(f"credentials.{f.id}: expected text", field=f"credentials.{f.id}")
        if f.pattern and not re.fullmatch(f.pattern, str(val)):
            raise InputError(f"credentials.{f.id}: {f.label} has an unexpected format",
                             field=f"credentials.{f.id}")
        out[f.id] = val
    return out


def connect_api_key(
    plugin: PluginDef, store: Store, *, project_id: str, user_id: str, credentials: Any,
    reconnect_id: str | None = None,
) -> dict[str, Any]:
    """Run the plugin's ``test``; on success upsert the connection. A failed test writes nothing.

    Also the token alternative of a ``github_app`` plugin (its ``fields`` and ``test``).

    Raises:
        InputError: a field is missing or malformed (names it).
        ConnectFailed: (400) ``test`` raised; the message is the plugin's, with secrets masked.
    """
    auth = plugin.auth
    assert isinstance(auth, (ApiKeyAuth, GitHubAppAuth)) and auth.test is not None
    creds = check_fields(auth, credentials)
    secret_vals = [str(v) for k, v in creds.items() if k in plugin.secret_fields] + secret_values(creds)
    if reconnect_id:
        reconnect_target(store, plugin, project_id, reconnect_id)
    ctx = auth_ctx(plugin, store, project_id, user_id, reconnect_id, secret_vals, creds)
    try:
        result = as_auth_result(call_handler(auth.test, dict(creds), ctx), plugin)
    except StoreError:
        raise
    except Exception as exc:
        text = redact_text(str(exc), secret_vals) or type(exc).__name__
        # A plugin that names the offending field (InputError(field=...)) gets it passed on.
        named = getattr(exc, "field", None)
        raise ConnectFailed(text, field=f"credentials.{named}" if named else "credentials") from None
    if not result.credentials:
        result = result.model_copy(update={"credentials": creds})
    row, created = save_auth_result(store, plugin, project_id, result, reconnect_id=reconnect_id)
    return {"success": True, "connection_id": row.id, "account_label": row.account_label, "created": created}
