"""Enable, configure and list a connection's streams, validated against the plugin's definitions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .. import registry
from ..kit.context import ListCtx
from ..kit.errors import InputError, NotFoundError
from ..kit.streams import StreamInstance, build_stream_id
from ..store import connections as repo
from ..store.connections import StreamRow
from ..store.db import Store
from .handlers import call_handler
from .host import current_host
from .sync import connection_services, resolve_stream, validate_config


def enable_stream(
    store: Store, connection_id: str, stream_id: str, *, enabled: bool | None = True,
    frequency: str | None = None, filters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
) -> StreamRow:
    """Create or update a stream row after validating frequency, filters and settings.

    ``None`` for ``enabled``, ``frequency``, ``filters`` or ``settings`` keeps the stored value (a new row
    gets enabled, the stream's default frequency and the models' defaults).

    Raises:
        InputError: names the field (``stream_id``, ``frequency``, ``filters.<name>``, ``settings.<name>``).
    """
    conn = repo.get_connection(store, connection_id)
    plugin = registry.get_plugin(conn.plugin_id)
    key, instance, stream = resolve_stream(plugin, stream_id)
    if stream.parameterized and not instance:
        msg = f"stream_id: stream {key!r} is parameterized; expected '{key}:<instance id>'"
        raise InputError(msg, field="stream_id")
    if not stream.parameterized and instance:
        msg = f"stream_id: stream {key!r} has no instances; expected {key!r}"
        raise InputError(msg, field="stream_id")
    if instance and enabled is not False:
        _check_new_instance(store, connection_id, key, instance)
    if frequency is not None and frequency not in stream.allowed_frequencies:
        msg = f"frequency: expected one of {', '.join(stream.allowed_frequencies)}; got {frequency!r}"
        raise InputError(msg, field="frequency")
    if filters is not None:
        filters = _validated(stream.filters, filters, "filters")
    if settings is not None:
        settings = _validated(stream.settings, settings, "settings")
    row = repo.upsert_stream(
        store, connection_id=connection_id, plugin_id=plugin.id, stream_id=build_stream_id(key, instance),
        stream_kind=stream.kind, enabled=enabled, frequency=frequency, filter_config=filters,
        settings=settings, default_frequency=stream.default_frequency,
    )
    if row.enabled:
        current_host().stream_enabled(store, conn)  # e.g. the account's Airflow pool (its rate budget)
    return row


def _check_new_instance(store: Store, connection_id: str, key: str, instance: str) -> None:
    """A new instance must be one the plugin lists for this connection (a typo would fail every run).
    Rows that exist are left alone, so a stream can still be configured while its provider is down."""
    try:
        repo.get_stream(store, connection_id, build_stream_id(key, instance))
        return
    except NotFoundError:
        pass
    known = [i.id for i in list_instances(store, connection_id, key)]
    if instance not in known:
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") or "none"
        msg = f"stream_id: {instance!r} is not an instance of {key!r} on this connection; expected one of {listed}"
        raise InputError(msg, field="stream_id")


def _validated(model: type[BaseModel] | None, raw: dict[str, Any], what: str) -> dict[str, Any]:
    """The stored form of validated filters or settings (defaults filled in)."""
    value = validate_config(model, raw, what)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)


def list_instances(store: Store, connection_id: str, stream_key: str) -> list[StreamInstance]:
    """Call the stream's ``instances()`` with the connection's credentials ([] for singleton streams)."""
    conn = repo.get_connection(store, connection_id)
    plugin = registry.get_plugin(conn.plugin_id)
    _, _, stream = resolve_stream(plugin, stream_key)
    if stream.instances is None:
        return []
    services = connection_services(store, conn, label=f"{stream_key}:instances")
    ctx = ListCtx(plugin_id=plugin.id, project_id=str(conn.project_id), connection_id=conn.id,
                  credentials=services.credentials(), settings=dict(conn.settings), services=services,
                  logger=services.logger)
    result = call_handler(stream.instances, ctx)
    return [r if isinstance(r, StreamInstance) else StreamInstance.model_validate(r) for r in result or []]
