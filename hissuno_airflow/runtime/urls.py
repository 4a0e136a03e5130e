"""A plugin's named base URLs, resolved (``HISSUNO_<PLUGIN>_<NAME>_URL`` overrides each)."""

from __future__ import annotations

from .. import settings
from ..kit.define import PluginDef
from ..kit.errors import InputError


def resolve_base(plugin: PluginDef, name: str) -> str:
    """A plugin's base URL by name, honouring ``HISSUNO_<PLUGIN>_<NAME>_URL``."""
    if name not in plugin.base_urls:
        msg = f"plugin {plugin.id!r} declares no base URL named {name!r}"
        raise InputError(msg, field="base")
    return settings.base_url(plugin.id, name, plugin.base_urls[name])


def resolve_url(plugin: PluginDef, template: str) -> str:
    """Expand a leading ``{NAME}`` of ``template`` to the named base URL."""
    if template.startswith("{") and "}" in template:
        name, rest = template[1:].split("}", 1)
        return resolve_base(plugin, name) + rest
    return template
