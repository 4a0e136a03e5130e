"""Provider metadata: one connection type per plugin, forms generated from auth fields, real discovery."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from hissuno_airflow import registry
from hissuno_airflow.hooks import HissunoHook
from hissuno_airflow.provider_info import get_provider_info

REPO = Path(__file__).resolve().parents[2]


def test_one_connection_type_per_plugin_with_fields(probe):
    info = get_provider_info()
    assert info["package-name"] == "hissuno-airflow"
    types = {t["connection-type"]: t for t in info["connection-types"]}
    assert set(types) == {p.conn_type for p in registry.list_plugins()}
    probe_type = types["hissuno_afprobe"]
    fields = probe_type["conn-fields"]
    assert fields["api_key"]["schema"]["format"] == "password"
    assert fields["api_key"]["label"] == "API key"
    assert "format" not in fields["workspace"]["schema"]


def test_hook_classes_resolve_like_airflow_does(probe):
    from airflow.sdk._shared.module_loading import import_string

    for entry in get_provider_info()["connection-types"]:
        hook = import_string(entry["hook-class-name"])
        assert issubclass(hook, HissunoHook)
        assert hook.conn_type == entry["connection-type"]
        assert hook.conn_name_attr and hook.hook_name


def _entry_point_path(tmp_path: Path) -> str:
    """A directory that makes the project's declared entry points visible when it is not pip-installed."""
    try:
        distribution("hissuno-airflow")
        return str(REPO)
    except PackageNotFoundError:
        pass
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    info = tmp_path / f"hissuno_airflow-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    lines = []
    for group in ("apache_airflow_provider",):
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in groups[group].items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return f"{tmp_path}{os.pathsep}{REPO}"


def test_airflow_providers_list_includes_hissuno(tmp_path, airflow_db):
    env = {**os.environ, "PYTHONPATH": _entry_point_path(tmp_path)}
    airflow = str(Path(sys.executable).with_name("airflow"))
    out = subprocess.run([airflow, "providers", "list", "-o", "plain"], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert "hissuno-airflow" in out.stdout
    hooks = subprocess.run([airflow, "providers", "hooks", "-o", "plain"], env=env, capture_output=True,
                           text=True, timeout=120, check=True)
    # Shipped plugins only: other test modules register throwaway plugins in this process.
    builtin = [p for p in registry.list_plugins()
               if p.id != "afprobe" and registry.plugin_source(p.id).startswith(("built-in", "entry point"))]
    assert builtin, "no built-in plugin loaded"
    for plugin in builtin:
        assert plugin.conn_type in hooks.stdout
