"""``github_app`` end to end: install, resolve the installation as the app, sync with minted tokens.

The ``ghapp`` plugin below is written with the kit alone. Its fake (``tests/fakes/github_app.py``)
verifies the app JWT against the app's public key, mints one-hour installation tokens and serves
``/installation/repositories`` only to a live token. Nothing in the plugin handles a JWT or a token:
the runtime mints before the first call, reuses a live token, mints again on a 401, and says
"reconnect" when the app was uninstalled.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit import AuthCtx, AuthResult, Icon, Stream, SyncCtx, define_plugin
from hissuno_airflow.kit.auth import GitHubAppAuth
from hissuno_airflow.kit.http import BearerAuth
from hissuno_airflow.runtime.connect import finish_callback, start_github_app
from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes.github_app import APP_ID, FakeGitHubApp, new_private_key


def _on_installation(installation_id: int, ctx: AuthCtx) -> AuthResult:
    with ctx.http_client("API", auth=BearerAuth(ctx.app_jwt())) as client:
        found = client.get_json(f"/app/installations/{installation_id}")
    return AuthResult(external_account_id=str(found["account"]["id"]), account_label=found["account"]["login"])


def _sync_repos(ctx: SyncCtx) -> None:
    with ctx.http_client("API", auth=BearerAuth(ctx.credentials["access_token"])) as client:
        # An absolute URL from the named base works as well as a path.
        for repo_ in client.get_json(ctx.base_url("API") + "/installation/repositories")["repositories"]:
            ctx.ingest.issue(external_id=str(repo_["id"]), name=repo_["full_name"], description="")


PLUGIN = define_plugin(
    id="ghapp", name="GH App", description="GitHub App test plugin", category="issues", icon=Icon(),
    base_urls={"API": "https://api.github.invalid", "WEB": "https://github.invalid"},
    auth=GitHubAppAuth(app_slug_env="GHAPP_SLUG", app_id_env="GHAPP_APP_ID", private_key_env="GHAPP_PRIVATE_KEY",
                       on_installation=_on_installation),
    streams={"repos": Stream(kind="issues", label="Repositories", sync=_sync_repos)},
)


@pytest.fixture
def github(store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHubApp]:
    private, public = new_private_key()
    fake = serve_fake(FakeGitHubApp(public))
    fake.add_installation(77, "acme")
    monkeypatch.setenv("HISSUNO_GHAPP_API_URL", fake.url)
    monkeypatch.setenv("GHAPP_SLUG", "hissuno-test")
    monkeypatch.setenv("GHAPP_APP_ID", APP_ID)
    # As operators often store it: one line, with literal \n sequences.
    monkeypatch.setenv("GHAPP_PRIVATE_KEY", private.replace("\n", "\\n"))
    registry.register(PLUGIN)
    try:
        yield fake
    finally:
        registry.unregister("ghapp")


def _install(store: Any, installation_id: int) -> str:
    project = settings.default_project_id()
    url = start_github_app(PLUGIN, store, project_id=project, user_id="u1")["authorize_url"]
    assert url.startswith("https://github.invalid/apps/hissuno-test/installations/new?state=")
    state = parse_qs(urlsplit(url).query)["state"][0]
    back = finish_callback("ghapp", {"state": state, "installation_id": str(installation_id),
                                     "setup_action": "install"}, store, user_id="u1")
    assert back.get("connected") == "1", back
    return back["connection"]


def test_install_then_sync_with_minted_installation_tokens(store: Any, github: FakeGitHubApp) -> None:
    cid = _install(store, 77)
    conn = repo.get_connection(store, cid)
    assert (conn.external_account_id, conn.account_label) == ("9077", "acme")
    assert load_credentials(store, conn) == {"installation_id": 77}
    assert github.count("/app/installations/{id}") == 1 and github.jwt_errors == []

    enable_stream(store, cid, "repos")
    first = run_stream_sync(cid, "repos", store=store)
    assert first.status == "success" and first.counts["synced"] == 2, first.error
    creds = load_credentials(store, conn)
    assert github.mints == 1 and creds["access_token"] == "ghs_77_1" and creds["installation_id"] == 77
    assert creds["expires_at"] > "2026"

    # A live token is reused, not minted again.
    assert run_stream_sync(cid, "repos", store=store).status == "success" and github.mints == 1

    # Revoked early (permissions changed): the 401 mints once and the run is retried.
    github.revoke_token("ghs_77_1")
    again = run_stream_sync(cid, "repos", store=store)
    assert again.status == "success", again.error
    assert github.mints == 2 and load_credentials(store, conn)["access_token"] == "ghs_77_2"

    # Uninstalled: the run fails with what to do, and no token or key in the message.
    github.installations.clear()
    github.revoke_token("ghs_77_2")
    gone = run_stream_sync(cid, "repos", store=store)
    assert gone.status == "error" and "uninstalled" in (gone.error or "") and "reconnect" in (gone.error or "")
    assert "ghs_" not in (gone.error or "") and "PRIVATE" not in (gone.error or "")
    assert github.jwt_errors == []


def test_a_missing_or_broken_app_key_is_named(store: Any, github: FakeGitHubApp,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cid = _install(store, 77)
    enable_stream(store, cid, "repos")
    monkeypatch.setenv("GHAPP_PRIVATE_KEY", "not a key")
    broken = run_stream_sync(cid, "repos", store=store)
    assert broken.status == "error" and "GHAPP_PRIVATE_KEY: private key: expected the app's PEM" in (broken.error or "")
    monkeypatch.delenv("GHAPP_APP_ID")
    missing = run_stream_sync(cid, "repos", store=store)
    assert missing.status == "error" and "GHAPP_APP_ID is not set on the server" in (missing.error or "")
    assert github.mints == 0
