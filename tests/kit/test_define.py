"""Each definition rule of the contract, fed bad input, must fail with a message naming plugin and field."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from pydantic import BaseModel

from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthResult,
    CustomAuth,
    Field,
    GitHubAppAuth,
    Icon,
    OAuth2Auth,
    PluginDefinitionError,
    Stream,
    define_plugin,
)


def _sync(ctx):
    return None


def _test(creds, ctx):
    return AuthResult(external_account_id="a", account_label="A")


def _base(**over):
    d = dict(
        id="good-plugin_1", name="Good", description="d", category="sessions", icon=Icon(src="/x.svg"),
        auth=ApiKeyAuth(fields=(Field(id="apiKey", label="Key", secret=True, required=True),), test=_test),
        streams={"tickets": Stream(kind="sessions", label="Tickets", sync=_sync)},
    )
    d.update(over)
    return d


def _problems(**over) -> str:
    with pytest.raises(PluginDefinitionError) as ei:
        define_plugin(**_base(**over))
    return str(ei.value)


def test_valid_definition_is_frozen_and_typed():
    p = define_plugin(**_base())
    assert p.id == "good-plugin_1"
    assert p.conn_type == "hissuno_good_plugin_1"
    assert p.secret_fields == ("apiKey",)
    assert p.streams["tickets"].allowed_frequencies == ("manual", "1h", "6h", "24h")
    with pytest.raises(Exception):
        p.name = "other"  # type: ignore[misc]
    with pytest.raises(Exception):
        p.streams["tickets"].label = "other"  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["Bad", "1abc", "a b", "", "a:b", "ABC"])
def test_plugin_id_pattern(bad):
    msg = _problems(id=bad)
    assert f"plugin {bad!r}" in msg and "id: expected lowercase letter" in msg and repr(bad) in msg


def test_reserved_plugin_id():
    assert "'catalog' is reserved" in _problems(id="catalog")


def test_at_least_one_stream():
    msg = _problems(streams={})
    assert "plugin 'good-plugin_1': streams: at least one stream is required" in msg


@pytest.mark.parametrize("key", ["Tickets", "my-stream", "a:b", "9x"])
def test_stream_key_pattern(key):
    msg = _problems(streams={key: Stream(kind="sessions", label="x", sync=_sync)})
    assert f"streams.{key}: stream key expected" in msg


def test_stream_needs_sync_or_webhook():
    msg = _problems(streams={"tickets": Stream(kind="sessions", label="x")})
    assert "streams.tickets: a stream needs a sync or a webhook handler; got neither" in msg


def test_frequencies_subset():
    msg = _problems(streams={"t": Stream(kind="sessions", label="x", sync=_sync, frequencies=("2h",))})
    assert "streams.t.frequencies: expected a non-empty subset of manual, 1h, 6h, 24h, webhook; got ['2h']" in msg


def test_webhook_frequency_needs_webhook_handler():
    msg = _problems(streams={"t": Stream(kind="sessions", label="x", sync=_sync, frequencies=("webhook",))})
    assert "'webhook' needs a webhook handler" in msg


def test_category():
    msg = _problems(category="crm")
    assert "category: expected one of interactive, sessions, issues, knowledge, analytics, customer_data; got 'crm'" in msg


def test_stream_kind():
    msg = _problems(streams={"t": Stream(kind="tickets", label="x", sync=_sync)})  # type: ignore[arg-type]
    assert "streams.t.kind: expected one of sessions, contacts, companies, issues, knowledge, analytics; got 'tickets'" in msg


def test_filters_must_be_pydantic_models():
    msg = _problems(streams={"t": Stream(kind="sessions", label="x", sync=_sync, filters=dict)})
    assert "streams.t.filters: expected a pydantic model class" in msg


def test_filters_need_defaults():
    class F(BaseModel):
        since: str

    msg = _problems(streams={"t": Stream(kind="sessions", label="x", sync=_sync, filters=F)})
    assert "streams.t.filters: every field needs a default; missing for since" in msg


def test_auth_type_checked():
    assert "auth: expected ApiKeyAuth, OAuth2Auth, GitHubAppAuth or CustomAuth; got dict" in _problems(auth={})


def test_oauth_base_must_be_declared():
    auth = OAuth2Auth(authorize_url="{AUTH}/authorize", token_url="{API}/token", client_id_env="X_ID",
                      client_secret_env="X_SECRET", on_token_exchanged=_test)
    msg = _problems(auth=auth, base_urls={"API": "https://api.example.com"})
    assert "auth.authorize_url: base 'AUTH' is not declared in base_urls" in msg
    ok = define_plugin(**_base(auth=auth, base_urls={"API": "https://a", "AUTH": "https://b"}))
    assert ok.auth_type == "oauth2"


def test_every_problem_is_reported_at_once():
    msg = _problems(id="Bad", category="x", streams={})
    assert len(msg.splitlines()) == 3


def test_all_four_auth_types_define():
    for auth in (
        GitHubAppAuth(on_installation=_test),
        CustomAuth(connect=_test),
        ApiKeyAuth(fields=(), test=_test),
    ):
        assert define_plugin(**_base(auth=auth)).auth_type == auth.type


def test_reserved_handler_names():
    assert "custom_handlers.sync: name is reserved" in _problems(custom_handlers={"sync": _sync})


def test_bad_plugin_module_fails_at_import_with_its_name(tmp_path):
    mod = tmp_path / "broken_plugin.py"
    mod.write_text(textwrap.dedent("""
        from hissuno_airflow.kit import define_plugin, Icon, ApiKeyAuth, Stream
        plugin = define_plugin(id="broken", name="B", description="d", category="sessions", icon=Icon(),
                               auth=ApiKeyAuth(fields=(), test=lambda c, x: None),
                               streams={"tickets": Stream(kind="sessions", label="T")})
    """))
    proc = subprocess.run([sys.executable, "-c", "import broken_plugin"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "PluginDefinitionError" in proc.stderr
    assert "plugin 'broken': streams.tickets: a stream needs a sync or a webhook handler" in proc.stderr


def test_rate_limit_must_be_positive():
    msg = _problems(rate_limit_per_minute=0)
    assert "rate_limit_per_minute: Input should be greater than 0; got 0" in msg
    assert define_plugin(**_base(rate_limit_per_minute=700, rate_limit_burst=50)).rate_limit_burst == 50
