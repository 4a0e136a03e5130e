"""The registry: built-ins plus entry points, duplicate ids refused, broken plugins reported not fatal."""

from __future__ import annotations

import json
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


SOON_SRC = """
from hissuno_airflow.kit import define_plugin, Icon, ApiKeyAuth, AuthResult, Field, Stream
plugin = define_plugin(id="soonplug", name="Soon", description="d", category="issues", icon=Icon(),
                       coming_soon=True,
                       auth=ApiKeyAuth(fields=(Field(id="key", label="Key"),),
                                       test=lambda c, x: AuthResult(external_account_id="a", account_label="A")),
                       streams={"items": Stream(kind="issues", label="Items", sync=lambda ctx: None)})
"""


def test_a_coming_soon_plugin_is_listed_but_not_available_nor_connectable(entry_points, monkeypatch, capsys):
    from hissuno_airflow import cli
    from hissuno_airflow.runtime.connect import ComingSoon, start_connect
    from hissuno_airflow.web.catalog import plugin_entry

    entry_points("soonplug", "soon_plugin_mod", SOON_SRC)
    entry_points("extplug", "ext_plugin_mod", PLUGIN_SRC.format(pid="extplug"))
    soon = registry.get_plugin("soonplug")
    assert soon.coming_soon
    assert "soonplug" in [p.id for p in registry.list_plugins()]
    available = [p.id for p in registry.list_available_plugins()]
    assert "soonplug" not in available and "extplug" in available and "sample" in available
    # The catalog (the marketplace's cards, ``hissuno plugins``) shows it, marked coming soon.
    assert plugin_entry(soon)["coming_soon"] is True and plugin_entry(registry.get_plugin("extplug"))["coming_soon"] is False
    assert cli.main(["plugins", "--json"]) == 0
    listed = {p["id"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed["soonplug"]["coming_soon"] is True and listed["extplug"]["coming_soon"] is False
    # Connecting it is refused before anything is written (the store is never reached).
    with pytest.raises(ComingSoon, match="'soonplug' is coming soon") as ei:
        start_connect("soonplug", {"credentials": {"key": "k"}}, None, user_id="u",  # type: ignore[arg-type]
                      redirect_uri="http://127.0.0.1/cb")
    assert ei.value.http_status == 409

    def no_store():
        raise AssertionError("connect reached the store")

    monkeypatch.setattr(cli, "_store", no_store)
    assert cli.main(["connect", "soonplug", "--set", "key=k"]) == 2
    assert "error: plugin 'soonplug' is coming soon: it cannot be connected yet" in capsys.readouterr().err


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
