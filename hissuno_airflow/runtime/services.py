"""Services shared by every context: HTTP clients for a plugin's named base URLs."""

from __future__ import annotations

import threading
from typing import Any

from .. import settings
from ..kit.define import PluginDef
from ..kit.errors import InputError
from ..kit.http.ratelimit import RateBudget


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


_budgets: dict[tuple[str, str], RateBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(plugin: PluginDef, connection_id: str) -> RateBudget | None:
    """The connection's shared request budget in this process, from the plugin's declared rate."""
    if plugin.rate_limit_per_minute is None:
        return None
    key = (plugin.id, connection_id)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = RateBudget(plugin.rate_limit_per_minute, burst=plugin.rate_limit_burst)
        return budget


def make_http_client(plugin: PluginDef, base: str = "API", *, secrets: list[str] | None = None,
                     logger: Any = None, rate_limiter: Any = None, **kwargs: Any) -> Any:
    """A ``ProviderClient`` for one of the plugin's bases, with retries and redacted logs."""
    from ..kit.http.client import ProviderClient

    return ProviderClient(plugin.id, resolve_base(plugin, base), secrets=secrets or [], logger=logger,
                          rate_limiter=rate_limiter, **kwargs)
