"""Airflow hooks: one ``HissunoHook`` subclass per plugin, generated on first access.

``hissuno_airflow.hooks.hook_class_name(plugin)`` names the class that ``get_provider_info`` declares;
Airflow imports it with ``getattr(module, name)``, which lands in this module's ``__getattr__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..provider_info import hook_class_basename as _class_name
from ..provider_info import hook_class_name
from .base import HissunoHook, airflow_conn_id, credentials_from_connection

if TYPE_CHECKING:
    from ..kit.define import PluginDef

__all__ = ["HissunoHook", "airflow_conn_id", "credentials_from_connection", "hook_class_name", "hook_for"]

_classes: dict[str, type[HissunoHook]] = {}


def hook_for(plugin: PluginDef) -> type[HissunoHook]:
    """The hook class of ``plugin`` (created once per process)."""
    cls = _classes.get(plugin.id)
    if cls is None:
        name = _class_name(plugin.id)
        cls = type(
            name,
            (HissunoHook,),
            {
                "__module__": __name__,
                "__doc__": f"Hissuno {plugin.name} connection.",
                "conn_type": plugin.conn_type,
                "hook_name": f"Hissuno {plugin.name}",
                "default_conn_name": f"{plugin.conn_type}_default",
                "plugin_id": plugin.id,
            },
        )
        _classes[plugin.id] = cls
    return cls


def __getattr__(name: str) -> Any:
    from ..registry import list_plugins

    for plugin in list_plugins():
        if _class_name(plugin.id) == name:
            return hook_for(plugin)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
