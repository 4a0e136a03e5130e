"""JSON views of plugins, connections and streams for the UI: no secrets, no functions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..kit.auth import ApiKeyAuth, CustomAuth, Field, OAuth2Auth
from ..kit.define import PluginDef
from ..kit.redaction import redact
from ..kit.streams import Stream
from ..store.connections import ConnectionRow, StreamRow


def _schema(model: type[BaseModel] | None) -> dict[str, Any] | None:
    return model.model_json_schema() if model is not None else None


def _field(f: Field) -> dict[str, Any]:
    return {"id": f.id, "label": f.label, "placeholder": f.placeholder, "secret": f.secret,
            "required": f.required, "help_text": f.help_text, "pattern": f.pattern}


def stream_entry(key: str, st: Stream) -> dict[str, Any]:
    """One stream definition as the UI sees it."""
    return {
        "key": key, "kind": st.kind, "label": st.label, "description": st.description,
        "frequencies": list(st.allowed_frequencies), "default_frequency": st.default_frequency,
        "parameterized": st.parameterized, "has_sync": st.sync is not None, "has_webhook": st.webhook is not None,
        "filters_schema": _schema(st.filters), "settings_schema": _schema(st.settings),
    }


def plugin_entry(p: PluginDef) -> dict[str, Any]:
    """One catalog card (reference 2.1 shape, snake_case)."""
    auth: dict[str, Any] = {"type": p.auth.type}
    if isinstance(p.auth, (ApiKeyAuth, CustomAuth)):
        auth["fields"] = [_field(f) for f in p.auth.fields]
    if isinstance(p.auth, OAuth2Auth):
        auth["scopes"] = list(p.auth.scopes)
    return {
        "id": p.id, "name": p.name, "description": p.description, "category": p.category,
        "icon": p.icon.model_dump(), "multi_instance": p.multi_instance, "coming_soon": p.coming_soon,
        "setup_label": p.setup_label, "docs_url": p.docs_url, "auth": auth,
        "ui": p.ui.model_dump() if p.ui else None,
        "webhooks": p.webhook_signature is not None,
        # One URL for the whole app (the provider's app settings hold it) or one per connection.
        "webhook_scope": None if p.webhook_signature is None else "app" if p.resolve_connection else "connection",
        "custom_handlers": sorted(p.custom_handlers),
        "streams": [stream_entry(k, s) for k, s in p.streams.items()],
    }


def dag_id(connection_id: str, stream_id: str) -> str | None:
    """The host's name for the stream's scheduled job (the Airflow DAG id), None without one."""
    from ..runtime.host import current_host

    return current_host().stream_ref(connection_id, stream_id)


def stream_row(row: StreamRow) -> dict[str, Any]:
    """A stream row for the UI, with its DAG id."""
    return {**row.public(), "dag_id": dag_id(row.connection_id, row.stream_id)}


def connection_entry(row: ConnectionRow, streams: list[StreamRow] | None = None) -> dict[str, Any]:
    """A connection without credentials; secret settings (``webhook_secret``) are masked."""
    out = row.public()
    out["settings"] = redact(out.get("settings") or {})
    out["has_webhook_secret"] = bool((row.settings or {}).get("webhook_secret"))
    out["stored_in"] = row.credentials_backend  # where its credentials live: "db" or "airflow"
    if streams is not None:
        out["streams"] = [stream_row(s) for s in streams]
    return out
