"""A plugin's named base URLs, resolved for one connection.

A base is a fixed URL (``https://api.intercom.io``) or a template filled from the connection's settings
and credentials (``https://{subdomain}.zendesk.com``, ``https://api.atlassian.com/ex/jira/{cloud_id}``,
``{host_url}`` for self-hosted PostHog or GitHub Enterprise). Template values are validated where they
land (a host label, a path segment, a whole http(s) URL), and a host chosen by a connection may never
be a loopback, link-local or private address: a connection must not make the server call into its own
network. ``HISSUNO_<PLUGIN>_<NAME>_URL`` overrides a base outright; it is the operator's choice, so it
may point anywhere (tests, self-hosted providers on the local network).
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import settings
from ..kit.define import PluginDef
from ..kit.errors import InputError
from ..kit.urls import build_base_url, template_fields


def resolve_base(plugin: PluginDef, name: str, values: Mapping[str, object] | None = None) -> str:
    """A plugin's base URL by name: the operator's override, the fixed URL, or the template filled from
    ``values`` (the connection's settings and credentials).

    Raises:
        InputError: no such base; a template value is missing or malformed; or a connection value points
            the server at a private address (names the field).
    """
    if name not in plugin.base_urls:
        msg = f"plugin {plugin.id!r} declares no base URL named {name!r}"
        raise InputError(msg, field="base")
    override = settings.base_url_override(plugin.id, name)
    if override:
        return override.rstrip("/")
    template = plugin.base_urls[name]
    if not template_fields(template):
        return template.rstrip("/")
    if values is None:
        fields = ", ".join(template_fields(template))
        msg = f"plugin {plugin.id!r}: base URL {name} is filled from the connection ({fields}); no connection here"
        raise InputError(msg, field="base")
    return build_base_url(template, values).rstrip("/")


def resolve_url(plugin: PluginDef, template: str, values: Mapping[str, object] | None = None) -> str:
    """Expand a leading ``{NAME}`` of ``template`` to the named base URL."""
    if template.startswith("{") and "}" in template:
        name, rest = template[1:].split("}", 1)
        return resolve_base(plugin, name, values) + rest
    return template
