"""Airflow provider metadata (the ``apache_airflow_provider`` entry point).

One connection type per plugin, ``hissuno_<plugin id>``, whose form is declared with ``conn-fields``
generated from the plugin's auth fields (secret fields get ``format: password``). Kept import-light:
Airflow imports this in every CLI and server process, so only the kit and the registry load here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kit.define import PluginDef

PACKAGE_NAME = "hissuno-airflow"
_OAUTH_FIELDS = (
    ("access_token", "Access token", True),
    ("refresh_token", "Refresh token", True),
    ("expires_at", "Access token expires at (ISO 8601)", False),
)
_HIDDEN = ["host", "schema", "login", "password", "port", "extra"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE_NAME)
    except PackageNotFoundError:
        return "0.0.0"


def _field(label: str, secret: bool, description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"
    out: dict[str, Any] = {"label": label, "schema": schema}
    if description:
        out["description"] = description
    return out


def conn_fields(plugin: PluginDef) -> dict[str, dict[str, Any]]:
    """Declarative connection-form fields generated from a plugin's auth schema."""
    auth = plugin.auth
    if auth.type == "oauth2":
        return {fid: _field(label, secret) for fid, label, secret in _OAUTH_FIELDS}
    if auth.type == "github_app":
        return {"installation_id": _field("Installation id", False)}
    return {
        f.id: _field(f.label, f.secret, f.help_text)
        for f in getattr(auth, "fields", ())
    }


def hook_class_basename(plugin_id: str) -> str:
    """Name of the generated hook class of a plugin, e.g. ``HissunoSampleHook``."""
    parts = plugin_id.replace("-", "_").split("_")
    return "Hissuno" + "".join(p.capitalize() for p in parts) + "Hook"


def hook_class_name(plugin: PluginDef) -> str:
    """Dotted path of a plugin's hook class (resolved by ``hissuno_airflow.hooks.__getattr__``)."""
    # Not imported from hooks: that package imports airflow.sdk, which re-enters provider discovery.
    return f"hissuno_airflow.hooks.{hook_class_basename(plugin.id)}"


def connection_type(plugin: PluginDef) -> dict[str, Any]:
    """The ``connection-types`` entry of one plugin."""
    return {
        "connection-type": plugin.conn_type,
        "hook-class-name": hook_class_name(plugin),
        "hook-name": f"Hissuno {plugin.name}",
        "conn-fields": conn_fields(plugin),
        "ui-field-behaviour": {"hidden-fields": list(_HIDDEN), "relabeling": {}, "placeholders": {}},
    }


def get_provider_info() -> dict[str, Any]:
    """Return the provider description Airflow validates and registers."""
    from .registry import list_plugins

    plugins = list_plugins()
    return {
        "package-name": PACKAGE_NAME,
        "name": "Hissuno",
        "description": "Hissuno integrations: sync provider data into Hissuno from Airflow DAGs.",
        "versions": [_version()],
        "integrations": [
            {"integration-name": "Hissuno", "external-doc-url": "https://github.com/hissuno/hissuno-airflow",
             "tags": ["service"]},
        ],
        "hooks": [{"integration-name": "Hissuno", "python-modules": ["hissuno_airflow.hooks"]}],
        "operators": [{"integration-name": "Hissuno", "python-modules": ["hissuno_airflow.operators"]}],
        "connection-types": [connection_type(p) for p in plugins],
    }
