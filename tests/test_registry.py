"""The registry: built-ins plus entry points, duplicate ids refused, broken plugins reported not fatal."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit import PluginDefinitionError, UnknownPluginError

PLUGIN_SRC = """
from hissuno_airflow.kit import define_plugin, Icon, ApiKeyAuth, Stream
plugin = define_plugin(id={pid!r}, name="Ext", description="d", category="issues", icon=Icon(),
                       auth=ApiKeyAuth(fields=(), test=lambda c, x: None),
                       streams={{"items": Stream(kind="issues", label="Items", sync=lambda ctx: None)}})
"""


@pytest.fixture
def entry_points(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    eps: list[EntryPoint] = []

    def add(name, module, source):
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(module, None)
        eps.append(EntryPoint(name=name, value=f"{module}:plugin", group=registry.ENTRY_POINT_GROUP))

    monkeypatch.setattr(registry, "entry_points", lambda group: [e for e in eps if e.group == group])
    registry.reset()
    yield add
    registry.reset()


def test_builtins_and_entry_point_plugins(entry_points):
    entry_points("extplug", "ext_plugin_mod", PLUGIN_SRC.format(pid="extplug"))
    ids = [p.id for p in registry.list_plugins()]
    assert "sample" in ids and "extplug" in ids
    assert registry.get_plugin("extplug").category == "issues"
    assert "entry point" in registry.plugin_source("extplug")


def test_duplicate_id_is_rejected_naming_both_sources(entry_points):
    entry_points("sample", "dup_plugin_mod", PLUGIN_SRC.format(pid="sample"))
    with pytest.raises(PluginDefinitionError) as ei:
        registry.list_plugins()
    assert "defined twice" in str(ei.value) and "dup_plugin_mod" in str(ei.value)


def test_broken_plugin_is_reported_and_skipped(entry_points):
    entry_points("broken", "broken_plugin_mod", "raise RuntimeError('boom at import')\n")
    assert "sample" in [p.id for p in registry.list_plugins()]
    assert "boom at import" in registry.load_errors()["broken"]


def test_load_filter_and_unknown(monkeypatch):
    monkeypatch.setenv("HISSUNO_LOAD_PLUGINS", "nothing-else")
    registry.reset()
    try:
        assert registry.list_plugins() == []
        with pytest.raises(UnknownPluginError) as ei:
            registry.get_plugin("sample")
        assert ei.value.http_status == 404
    finally:
        monkeypatch.delenv("HISSUNO_LOAD_PLUGINS")
        registry.reset()
    assert registry.get_plugin("sample").id == "sample"


def test_available_excludes_coming_soon():
    assert all(not p.coming_soon for p in registry.list_available_plugins())


def test_a_builtin_is_its_folder_and_nothing_else(monkeypatch):
    """Adding a provider is adding hissuno_airflow/plugins/<id>/plugin.py: no list, no entry point."""
    import shutil
    import tomllib
    from pathlib import Path

    import hissuno_airflow.plugins as plugins_pkg

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert registry.ENTRY_POINT_GROUP not in pyproject["project"].get("entry-points", {})
    folder = Path(plugins_pkg.__file__).parent / "zz_folder_probe"
    folder.mkdir()
    try:
        (folder / "__init__.py").write_text("")
        (folder / "plugin.py").write_text(PLUGIN_SRC.format(pid="zz-folder-probe"))
        monkeypatch.setattr(registry, "entry_points", lambda group: [])
        registry.reset()
        assert registry.get_plugin("zz-folder-probe").id == "zz-folder-probe"
        assert registry.plugin_source("zz-folder-probe").startswith("built-in")
        assert registry.get_plugin("sample").id == "sample"
    finally:
        shutil.rmtree(folder)
        registry.reset()


def test_an_entry_point_reusing_a_builtin_id_is_a_duplicate(monkeypatch):
    ep = EntryPoint(name="sample", value="hissuno_airflow.plugins.sample.plugin:plugin",
                    group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    registry.reset()
    try:
        with pytest.raises(registry.DuplicatePluginError, match="built-in"):
            registry.load(strict=True)
    finally:
        registry.reset()
