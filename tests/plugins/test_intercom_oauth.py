"""Intercom's OAuth install, end to end: the web connect route, the provider's authorize page and token
endpoint (the Intercom fake on ``tests/fakes/oauth.py``), the public callback, the account from ``/me``,
and a sync with the token it stored. The plugin offers OAuth only when the server has an Intercom app
(``INTERCOM_CLIENT_ID``); without one it keeps the pasted-token form."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit.define import PluginDef
from hissuno_airflow.kit.testing import AuthTarget, auth_test_rejects_bad_credentials
from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes.intercom import APP, Intercom
from tests.fakes.server import FakeClock
from tests.fixtures.fakes import retries_on
from tests.fixtures.web import Web, count

MODULE = "hissuno_airflow.plugins.intercom.plugin"


@pytest.fixture
def fake(serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> Intercom:
    """Seven conversations; the authorize page and the API both on the fake."""
    clock = FakeClock()
    retries_on(monkeypatch, clock)
    fake = serve_fake(Intercom(7, clock=clock.time, max_per_page=3))
    monkeypatch.setenv("HISSUNO_INTERCOM_API_URL", fake.url)
    monkeypatch.setenv("HISSUNO_INTERCOM_AUTH_URL", fake.url)
    return fake


@pytest.fixture
def oauth_plugin(fake: Intercom, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginDef]:
    """The shipped manifest imported on a server with an Intercom app configured, registered in place
    of the one this process loaded; the original is put back afterwards."""
    module = importlib.import_module(MODULE)
    original, source = registry.get_plugin("intercom"), registry.plugin_source("intercom")
    monkeypatch.setenv("INTERCOM_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("INTERCOM_CLIENT_SECRET", fake.client_secret)
    oauth = importlib.reload(module).plugin
    registry.unregister("intercom")
    registry.register(oauth, source)
    try:
        yield oauth
    finally:
        registry.unregister("intercom")
        registry.register(original, source)
        module.plugin = original


def _authorize(web: Web) -> str:
    r = web.client.post("/api/plugins/intercom/connect", json={})
    assert r.status_code == 200, r.text
    return str(r.json()["authorize_url"])


def _follow(web: Web, url: str) -> dict[str, list[str]]:
    """The browser at Intercom's authorize page (granted at once), then back on the public callback."""
    at_provider = httpx.get(url, follow_redirects=False)
    assert at_provider.status_code == 302, at_provider.text
    back = httpx.get(at_provider.headers["Location"], follow_redirects=False,
                     cookies={"hissuno_token": web.client.headers["Authorization"][7:]})
    assert back.status_code == 302, back.text
    return parse_qs(urlsplit(back.headers["Location"]).query)


def test_without_an_intercom_app_the_connect_dialog_asks_for_a_token(fake: Intercom,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERCOM_CLIENT_ID", raising=False)
    assert importlib.import_module("hissuno_airflow.plugins.intercom.auth").auth_mode().type == "api_key"
    monkeypatch.setenv("INTERCOM_CLIENT_ID", " ")
    assert importlib.import_module("hissuno_airflow.plugins.intercom.auth").auth_mode().type == "api_key"


def test_oauth_install_from_the_web_connects_the_workspace_from_me_and_syncs(
    web: Web, fake: Intercom, oauth_plugin: PluginDef
) -> None:
    assert oauth_plugin.auth.type == "oauth2"
    url = _authorize(web)
    parts, q = urlsplit(url), parse_qs(urlsplit(url).query)
    assert f"{parts.scheme}://{parts.netloc}" == fake.url and parts.path == "/oauth"
    assert q["client_id"] == [fake.client_id] and q["response_type"] == ["code"] and q["state"][0]
    assert "scope" not in q, "Intercom's authorize URL takes no scope (permissions are the app's checkboxes)"
    assert q["redirect_uri"][0].endswith("/hissuno/api/plugins/oauth/intercom/callback")

    back = _follow(web, url)

    assert back.get("connected") == ["1"], back
    row = repo.get_connection(web.store, back["connection"][0])
    assert (row.external_account_id, row.account_label) == (APP["id_code"], APP["name"])
    creds = load_credentials(web.store, row)
    issued = fake.access_issued[-1]
    assert creds["access_token"] == issued and creds["region"] == "US"
    assert "refresh_token" not in creds and not creds.get("expires_at"), "Intercom tokens never expire"
    assert fake.exchanges == 1 and fake.refusals == []
    token_call = fake.requests_to("/auth/eagle/token")[-1]
    assert parse_qs(token_call.body.decode())["client_secret"] == [fake.client_secret]
    assert fake.requests_to("/me")[-1].bearer_token == issued, "the account comes from /me with the new token"

    enable_stream(web.store, row.id, "conversations")
    result = run_stream_sync(row.id, "conversations", store=web.store)
    assert result.status == "success" and result.counts["synced"] == 7, result.error
    assert all(r.bearer_token == issued for r in fake.requests_to("/conversations/search"))
    assert count(web.store, "integration_connections") == 1


def test_a_refused_oauth_token_saves_nothing_and_names_the_refusal(
    web: Web, fake: Intercom, oauth_plugin: PluginDef
) -> None:
    """The conformance check for oauth2 plugins: a good token names the account, a revoked one is a
    hissuno error (shown by code on the callback), never an internal error."""
    good = fake.seed_tokens()
    revoked = fake.seed_tokens()
    fake.revoke_token(revoked["access_token"])
    account = auth_test_rejects_bad_credentials(oauth_plugin, web.store, AuthTarget(good=good, bad=revoked))
    assert account == APP["id_code"]

    fake.deny_consent = True
    back = _follow(web, _authorize(web))
    assert back.get("error") == ["access_denied"] and count(web.store, "integration_connections") == 0
