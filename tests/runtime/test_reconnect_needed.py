"""A revoked or rotated key: the run fails without retry, says how to reconnect, and the connection shows
"reconnect needed" (CLI, API) until a reconnect or a successful run clears it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hissuno_airflow import cli, registry
from hissuno_airflow.kit import ApiKeyAuth, AuthResult, Field, Icon, Stream, define_plugin
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.settings import default_project_id
from hissuno_airflow.store import connections as repo
from tests.web.plugins import FakeKeyProvider

KEY, NEW_KEY = "rc-key-0123456789", "rc-key-rotated-98765"


def _me(ctx: Any, key: str) -> dict[str, Any]:
    with ctx.http_client(headers={"X-Api-Key": key}) as http:
        body: dict[str, Any] = http.get_json("/me")
    return body


def _test(creds: Any, ctx: Any) -> AuthResult:
    acct = _me(ctx, creds["api_key"])
    return AuthResult(external_account_id=acct["id"], account_label=acct["name"])


def _sync(ctx: Any) -> None:
    acct = _me(ctx, ctx.credentials["api_key"])
    ctx.ingest.issue(external_id="me", name=f"Reached {acct['name']}")


probe = define_plugin(
    id="rcprobe", name="Reconnect Probe", description="d", category="issues", icon=Icon(),
    base_urls={"API": "https://rc.invalid"},
    auth=ApiKeyAuth(fields=(Field(id="api_key", label="API key", secret=True),), test=_test),
    streams={"items": Stream(kind="issues", label="Items", sync=_sync)},
)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Any:
    registry.unregister(probe.id)
    registry.register(probe, source="tests")
    with FakeKeyProvider() as fake:
        fake.add_account(KEY, "acct-9", "Acme")
        monkeypatch.setenv("HISSUNO_RCPROBE_API_URL", fake.url)
        yield fake
    registry.unregister(probe.id)


def _cli_connections(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["connections", *args]) == 0
    return capsys.readouterr().out


def test_a_revoked_key_marks_the_connection_until_a_reconnect(store: Any, provider: Any,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cid = connect_api_key(probe, store, project_id=default_project_id(), user_id="u",
                          credentials={"api_key": KEY})["connection_id"]
    enable_stream(store, cid, "items")
    assert run_stream_sync(cid, "items", store=store).status == "success"
    assert not repo.get_connection(store, cid).needs_reconnect

    del provider.accounts[KEY]  # the key was revoked at the provider
    calls = provider.count("/me")
    failed = run_stream_sync(cid, "items", store=store)
    assert failed.status == "error" and failed.error_code == "provider_auth" and not failed.retriable
    assert f"reconnect needed: run `hissuno connect rcprobe --update {cid}`" in failed.error
    assert KEY not in failed.error
    assert provider.count("/me") == calls + 1  # refused once, not retried
    row = repo.get_connection(store, cid)
    assert row.needs_reconnect and row.public()["needs_reconnect"] and "401" in (row.auth_error or "")
    assert f"RECONNECT NEEDED (hissuno connect rcprobe --update {cid})" in _cli_connections(capsys)
    listed = json.loads(_cli_connections(capsys, "--json"))
    assert listed[0]["needs_reconnect"] is True and KEY not in json.dumps(listed)

    provider.add_account(NEW_KEY, "acct-9", "Acme")  # the user made a new key and reconnects with it
    connect_api_key(probe, store, project_id=default_project_id(), user_id="u", credentials={"api_key": NEW_KEY},
                    reconnect_id=cid)
    assert not repo.get_connection(store, cid).needs_reconnect
    assert "RECONNECT NEEDED" not in _cli_connections(capsys)
    assert run_stream_sync(cid, "items", store=store).status == "success"


def test_a_successful_run_clears_the_mark(store: Any, provider: Any) -> None:
    cid = connect_api_key(probe, store, project_id=default_project_id(), user_id="u",
                          credentials={"api_key": KEY})["connection_id"]
    enable_stream(store, cid, "items")
    account = provider.accounts.pop(KEY)
    assert run_stream_sync(cid, "items", store=store).error_code == "provider_auth"
    assert repo.get_connection(store, cid).needs_reconnect
    provider.accounts[KEY] = account  # the provider's outage of its key check is over
    assert run_stream_sync(cid, "items", store=store).status == "success"
    assert not repo.get_connection(store, cid).needs_reconnect
