"""Services shared by every context: HTTP clients for a plugin's named base URLs."""

from __future__ import annotations

from typing import Any

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


def make_http_client(plugin: PluginDef, base: str = "API", *, secrets: list[str] | None = None,
                     logger: Any = None, rate_limiter: Any = None, **kwargs: Any) -> Any:
    """A ``ProviderClient`` for one of the plugin's bases, with retries and redacted logs."""
    from ..kit.http.client import ProviderClient

    return ProviderClient(plugin.id, resolve_base(plugin, base), secrets=secrets or [], logger=logger,
                          rate_limiter=rate_limiter, **kwargs)
