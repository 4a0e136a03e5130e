"""Enable, configure and list a connection's streams, validated against the plugin's definitions."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from .. import registry
from ..kit.context import ListCtx
from ..kit.errors import InputError, NotFoundError
from ..kit.input_limits import check_id, check_json_value
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
    check_id(connection_id, "connection_id")
    check_id(stream_id, "stream_id")  # indexed with its connection: bounded, and text PostgreSQL can hold
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
        check_json_value(filters, "filters")
        filters = validated_config(stream.filters, filters, "filters", stream_key=key)
    if settings is not None:
        check_json_value(settings, "settings")
        settings = validated_config(stream.settings, settings, "settings", stream_key=key)
    row = repo.upsert_stream(
        store, connection_id=connection_id, plugin_id=plugin.id, stream_id=build_stream_id(key, instance),
        stream_kind=stream.kind, enabled=enabled, frequency=frequency, filter_config=filters,
        settings=settings, default_frequency=stream.default_frequency,
    )
    host = current_host()
    if row.enabled:
        host.stream_enabled(store, conn)  # e.g. the account's Airflow pool (its rate budget)
    if host.queues_runs:
        # A scheduling host (Airflow) says when the stream runs next, so the page agrees with it from the
        # start: soon for a stream that never synced (its first run follows its DAG), else its next slot.
        nxt = host.next_sync_at(connection_id, row.stream_id, row.frequency, now=datetime.now(UTC),
                                first_run=row.last_sync_at is None) if row.enabled else None
        if nxt != row.next_sync_at:
            row = repo.set_next_sync_at(store, connection_id, row.stream_id, nxt)
    return row


class StreamNotEnabled(InputError):
    """A manual sync of a stream whose row exists but is disabled (enable it first)."""

    code = "stream_not_enabled"
    http_status = 409


def enabled_stream(store: Store, connection_id: str, stream_id: str) -> StreamRow:
    """The row of a stream a manual sync may run: it must exist and be enabled.

    Sync now runs what the user enabled; it neither enables a stream nor runs a disabled one once.
    Under Airflow a manual sync is a run of the stream's DAG, and a disabled stream has no DAG.

    Raises:
        NotFoundError: (404) the stream has no row on this connection.
        StreamNotEnabled: (409) the row exists but is disabled.
    """
    msg = f"stream_id: stream {stream_id!r} is not enabled on connection {connection_id!r}; enable it first, then sync"
    try:
        row = repo.get_stream(store, connection_id, stream_id)
    except NotFoundError:
        raise NotFoundError(msg, field="stream_id") from None
    if not row.enabled:
        raise StreamNotEnabled(msg, field="stream_id")
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


def validated_config(
    model: type[BaseModel] | None, raw: Mapping[str, Any], what: str, *, stream_key: str | None = None
) -> dict[str, Any]:
    """The stored form of filters or settings a user wrote: validated, defaults filled in.

    Unknown keys are refused, naming the key and the expected ones, for every plugin's models without
    the plugin having to ask (``extra="forbid"`` semantics, at any depth of nested models), so a typo
    never silently becomes the defaults. A model that declares ``extra="allow"`` keeps its extra keys.

    This is the write path only (CLI ``enable``, the streams route, ``enable_stream``). Rows stored
    before this check may hold a key that is unknown now; reading them for a run
    (``runtime.sync.validate_config``) ignores such a key, so scheduled runs keep working, and the next
    write of the row drops it.

    Raises:
        InputError: ``<what>.<path>: unknown field; expected ...``, or a value the model refuses.
    """
    where = f"stream {stream_key!r}" if stream_key else "this stream"
    if model is None:
        if raw:
            key = sorted(str(k) for k in raw)[0]
            raise InputError(f"{what}.{key}: unknown field; {where} takes no {what}", field=f"{what}.{key}")
        return {}
    _refuse_unknown(model, raw, what)
    value = validate_config(model, raw, what)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)


def _refuse_unknown(model: type[BaseModel], raw: Mapping[str, Any], path: str) -> None:
    if model.model_config.get("extra") == "allow":
        return
    known: dict[str, Any] = {}
    shown = []
    for name, info in model.model_fields.items():
        keys = [k for k in (info.validation_alias, info.alias, name) if isinstance(k, str)]
        shown.append(keys[0])
        known.update(dict.fromkeys(keys, info.annotation))
    for key, value in raw.items():
        if key not in known:
            expected = ", ".join(sorted(shown)) or "no fields"
            raise InputError(f"{path}.{key}: unknown field; expected {expected}", field=f"{path}.{key}")
        nested = _model_in(known[key])
        if nested is not None and isinstance(value, Mapping):
            _refuse_unknown(nested, value, f"{path}.{key}")


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``M``, ``M | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


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
