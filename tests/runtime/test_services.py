"""ConnectionServices: the one services object behind every context.

- ``ctx.http_client()`` of an OAuth connection signs with the live token by default, and a 401 in the
  middle of a run goes through the one refresh path (one token request) and resends that request: the
  run does not start over.
- Base URL templates are filled from the connection (settings, credentials, or the credentials under
  test while connecting); a connection can never point the server at a private address unless the
  operator overrode the base.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit import ApiKeyAuth, AuthResult, Field, Icon, InputError, Stream, define_plugin
from hissuno_airflow.kit.auth import OAuth2Auth
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.credentials import credential_store
from hissuno_airflow.runtime.services import ConnectionServices
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.settings import default_project_id
from hissuno_airflow.store import connections as repo
from tests.airflow import oauth_probe
from tests.fakes.server import FakeProvider, FakeRequest, Reply, get

PAGES = 4


def _sync_pages(ctx: Any) -> None:
    """Reads PAGES pages with the runtime's default client: no auth of its own."""
    with ctx.http_client("AUTH") as client:
        for page in range(PAGES):
            client.get_json("/me", params={"page": page})
            ctx.ingest.issue(external_id=f"p{page}", name=f"Page {page}")


paged = define_plugin(
    id="svcoauth", name="Svc OAuth", description="d", category="issues", icon=Icon(),
    base_urls={"AUTH": "https://auth.invalid"},
    auth=OAuth2Auth(authorize_url="{AUTH}/authorize", token_url="{AUTH}/oauth/token",
                    client_id_env="AFOAUTH_CLIENT_ID", client_secret_env="AFOAUTH_CLIENT_SECRET",
                    on_token_exchanged=lambda t, c: AuthResult(external_account_id="o", account_label="O")),
    streams={"pages": Stream(kind="issues", label="Pages", sync=_sync_pages)},
)


@pytest.fixture
def svc_plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    registry.unregister(paged.id)
    registry.register(paged, source="tests")
    monkeypatch.setenv("AFOAUTH_CLIENT_ID", oauth_probe.CLIENT_ID)
    monkeypatch.setenv("AFOAUTH_CLIENT_SECRET", oauth_probe.CLIENT_SECRET)
    yield paged
    registry.unregister(paged.id)


def test_default_client_signs_with_the_live_token_and_a_401_mid_run_refreshes_once(
    store: Any, svc_plugin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with oauth_probe.TokenServer("refresh-0") as fake:
        monkeypatch.setenv("HISSUNO_SVCOAUTH_AUTH_URL", fake.url)
        first = fake.seed_tokens()
        row, _ = repo.upsert_connection(store, project_id=default_project_id(), plugin_id=paged.id,
                                        external_account_id="o", account_label="O", settings={})
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        credential_store(store, "db").save(row, {"access_token": first["access_token"], "refresh_token": "refresh-0",
                                                 "expires_at": future})
        enable_stream(store, row.id, "pages")
        # The provider expires the token while serving page 2: only the 401 on page 3 can tell.
        fake.before_request("/me", lambda req: fake.expire_access_token(first["access_token"]),
                            when=lambda req: req.query.get("page") == "2")
        result = run_stream_sync(row.id, "pages", store=store)
        assert result.status == "success", result.error
        assert result.counts["synced"] == PAGES and fake.refreshes == 1
        # Page 3 was resent with the new token, not the whole run: /me saw PAGES + 1 requests.
        me_calls = [r for r in fake.requests if r.path == "/me"]
        assert len(me_calls) == PAGES + 1
        saved = credential_store(store, "db").load(row)
        assert saved["access_token"] != first["access_token"] and saved["refresh_token"] != "refresh-0"
        assert me_calls[-1].bearer_token == saved["access_token"]


class Desk(FakeProvider):
    """A helpdesk on a per-account host; answers who the token belongs to."""

    name = "svcdesk"

    @get("/api/me")
    def me(self, req: FakeRequest) -> Reply:
        return {"account": req.headers.get("host", "")}


def _test(creds: Any, ctx: Any) -> AuthResult:
    with ctx.http_client() as client:
        client.get_json("/api/me")
    return AuthResult(external_account_id=creds["subdomain"], account_label=ctx.base_url("API"))


desk = define_plugin(
    id="svcdesk", name="Svc Desk", description="d", category="sessions", icon=Icon(),
    base_urls={"API": "https://{subdomain}.desk.example", "HOST": "{host_url}"},
    auth=ApiKeyAuth(fields=(Field(id="subdomain", label="Subdomain"), Field(id="token", label="Token", secret=True)),
                    test=_test),
    streams={"s": Stream(kind="sessions", label="S", sync=lambda ctx: None)},
)


@pytest.fixture
def desk_plugin() -> Any:
    registry.unregister(desk.id)
    registry.register(desk, source="tests")
    yield desk
    registry.unregister(desk.id)


def test_a_templated_base_fills_from_the_connection_and_refuses_private_hosts(
    store: Any, desk_plugin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:

    from hissuno_airflow.kit import urls as kit_urls

    monkeypatch.delenv("HISSUNO_SVCDESK_API_URL", raising=False)
    # No DNS here: names resolve through a table (a public address for the provider's hosts).
    table = {"acme.desk.example": "203.0.114.7", "inside.example": "10.1.2.3"}
    monkeypatch.setattr(kit_urls, "resolve_host",
                        lambda host, port: [table.get(host, host)])
    # Connecting: the credentials under test fill the template.
    services = ConnectionServices(desk, credentials={"subdomain": "acme", "token": "t"})
    assert services.base_url("API") == "https://acme.desk.example"
    # A subdomain that is not one host label is refused, naming the field.
    with pytest.raises(InputError, match="subdomain"):
        ConnectionServices(desk, credentials={"subdomain": "evil.com/x", "token": "t"}).base_url("API")
    # A whole-URL field pointing at this machine or a private network is refused.
    for url in ("http://127.0.0.1:8080", "http://10.0.0.5", "http://169.254.169.254/latest", "http://[::1]/",
                "https://inside.example"):
        with pytest.raises(InputError) as err:
            ConnectionServices(desk, credentials={"host_url": url}).base_url("HOST")
        assert err.value.field == "host_url", url
    # A stored connection: its settings and credentials fill it.
    row, _ = repo.upsert_connection(store, project_id=default_project_id(), plugin_id=desk.id,
                                    external_account_id="acme", account_label="Acme", settings={"subdomain": "acme"})
    assert ConnectionServices(desk, store=store, connection=row).base_url("API") == "https://acme.desk.example"


def test_the_operator_override_may_point_anywhere_and_connect_uses_it(
    store: Any, desk_plugin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Desk() as fake:
        monkeypatch.setenv("HISSUNO_SVCDESK_API_URL", fake.url)
        out = connect_api_key(desk, store, project_id=default_project_id(), user_id="u",
                              credentials={"subdomain": "acme", "token": "secret-token-1"})
        assert out["account_label"] == fake.url.rstrip("/")
        assert [r.path for r in fake.requests] == ["/api/me"]


def test_a_refused_refresh_is_not_asked_again_in_the_same_run(
    store: Any, svc_plugin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with oauth_probe.TokenServer("refresh-0") as fake:
        monkeypatch.setenv("HISSUNO_SVCOAUTH_AUTH_URL", fake.url)
        first = fake.seed_tokens()
        row, _ = repo.upsert_connection(store, project_id=default_project_id(), plugin_id=paged.id,
                                        external_account_id="o", account_label="O", settings={})
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        credential_store(store, "db").save(row, {"access_token": first["access_token"], "refresh_token": "revoked-rt",
                                                 "expires_at": future})
        enable_stream(store, row.id, "pages")
        fake.expire_access_token(first["access_token"])  # a 401, and the grant behind it is gone
        result = run_stream_sync(row.id, "pages", store=store)
        assert result.status == "error" and result.error_code == "provider_auth" and not result.retriable
        # One refresh grant, refused; the run does not present the dead refresh token a second time.
        assert fake.count("/oauth/token") == 1
        assert repo.get_connection(store, row.id).needs_reconnect
