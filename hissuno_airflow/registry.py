"""The single enumeration of plugins: built-ins plus ``hissuno.plugins`` entry points.

``HISSUNO_LOAD_PLUGINS=sample,slack`` limits what loads. A plugin that fails to import is reported
(``load_errors()``) and skipped, so one broken plugin never breaks DAG parsing or the web server.
A duplicate id is an error naming both sources.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from importlib.metadata import entry_points

from .kit.define import PluginDef
from .kit.errors import PluginDefinitionError, UnknownPluginError
from .plugins import builtin_plugins

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "hissuno.plugins"

_lock = threading.Lock()
_plugins: dict[str, PluginDef] | None = None
_sources: dict[str, str] = {}
_errors: dict[str, str] = {}


class DuplicatePluginError(PluginDefinitionError):
    """Two sources define the same plugin id."""


def _wanted() -> set[str] | None:
    raw = os.environ.get("HISSUNO_LOAD_PLUGINS", "").strip()
    return {p.strip() for p in raw.split(",") if p.strip()} or None


def _load_object(target: str) -> PluginDef:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj = getattr(module, attr or "plugin")
    if callable(obj) and not isinstance(obj, PluginDef):
        obj = obj()
    if not isinstance(obj, PluginDef):
        msg = f"{target} does not hold a define_plugin(...) result"
        raise TypeError(msg)
    return obj


def _register(found: dict[str, PluginDef], plugin: PluginDef, source: str) -> None:
    if plugin.id in found:
        raise DuplicatePluginError(
            plugin.id, [f"id: defined twice, by {_sources[plugin.id]} and by {source}"]
        )
    found[plugin.id] = plugin
    _sources[plugin.id] = source


def load(*, strict: bool = False) -> dict[str, PluginDef]:
    """Load every plugin once; ``strict`` re-raises the first import failure."""
    global _plugins
    with _lock:
        if _plugins is not None:
            return _plugins
        wanted = _wanted()
        found: dict[str, PluginDef] = {}
        _sources.clear()
        _errors.clear()
        candidates: list[tuple[str, str, str]] = [
            (pid, path, f"built-in {path}") for pid, path in builtin_plugins().items()
        ]
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            candidates.append((ep.name, ep.value, f"entry point {ep.name}={ep.value}"))
        for name, target, source in candidates:
            if wanted is not None and name not in wanted:
                continue
            try:
                plugin = _load_object(target)
            except Exception as exc:
                if strict:
                    raise
                _errors[name] = f"{type(exc).__name__}: {exc}"
                log.error("hissuno plugin %r failed to load from %s: %s", name, source, exc)
                continue
            _register(found, plugin, source)
        _plugins = dict(sorted(found.items()))
        return _plugins


def reset() -> None:
    """Forget loaded plugins (tests, or after installing a package)."""
    global _plugins
    with _lock:
        _plugins = None


def register(plugin: PluginDef, source: str = "runtime") -> None:
    """Add a plugin at run time (tests and embedding applications); duplicate ids are refused."""
    plugins = load()
    with _lock:
        _register(plugins, plugin, source)


def unregister(plugin_id: str) -> None:
    """Remove a plugin added with ``register``."""
    plugins = load()
    with _lock:
        plugins.pop(plugin_id, None)
        _sources.pop(plugin_id, None)


def get_plugin(plugin_id: str) -> PluginDef:
    """The plugin with this id; raises UnknownPluginError (404) when absent."""
    try:
        return load()[plugin_id]
    except KeyError:
        raise UnknownPluginError(plugin_id) from None


def list_plugins() -> list[PluginDef]:
    """Every loaded plugin, sorted by id."""
    return list(load().values())


def list_available_plugins() -> list[PluginDef]:
    """Loaded plugins that are not ``coming_soon``."""
    return [p for p in load().values() if not p.coming_soon]


def load_errors() -> dict[str, str]:
    """Plugins that failed to import, with the reason."""
    load()
    return dict(_errors)


def plugin_source(plugin_id: str) -> str:
    """Where a plugin came from."""
    load()
    return _sources.get(plugin_id, "?")
