"""The ``github`` plugin's ``feedback`` stream (issues as sessions) against the fake GitHub on 127.0.0.1:
every page by the ``Link`` header, pull requests left out, ``since`` increments, comments and sender
mapping, label tags, GitHub's primary and secondary rate limits, and a revoked installation or token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hissuno_airflow import registry, settings
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes.github import AUTHOR, FakeGitHub
from tests.fakes.server import FakeClock
from tests.plugins import github_env
from tests.plugins.github_env import enable, rows

FEEDBACK = "feedback:acme/api"
ISSUES = "/repos/{o}/{r}/issues"

# The shared fixtures (a conftest here would be shared with every provider's tests).
app = github_env.app
clock = github_env.clock
gh = github_env.gh


def _sessions(store: Any) -> dict[str, dict[str, Any]]:
    """Live sessions of the feedback stream by external id."""
    found = rows(store, "SELECT r.external_id, s.* FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id"
                        " WHERE r.stream_id = %s AND s.deleted_at IS NULL", FEEDBACK)
    return {r["external_id"]: r for r in found}


def _messages(store: Any, session_id: Any) -> list[tuple[str, str]]:
    return [(m["sender_type"], m["content"]) for m in rows(
        store, "SELECT sender_type, content FROM session_messages WHERE session_id = %s ORDER BY position", session_id)]


def test_first_sync_reads_every_page_without_a_cap_and_leaves_out_pull_requests(
        store: Any, gh: FakeGitHub, app: str) -> None:
    for i in range(1_005):
        gh.add_issue("acme/api", comments=2 if i == 0 else 0, labels=("bug", "ui") if i == 1 else ())
    pulls = [gh.add_issue("acme/api", pull=True) for _ in range(3)]
    enable(store, app, FEEDBACK, settings={"label_tag_map": {"Bug": "bug", "ui": "feature_request",
                                                                 "wontfix": "losses"}})

    result = run_stream_sync(app, FEEDBACK, store=store)

    assert result.status == "success", result.error
    assert result.counts["synced"] == 1_005 and result.counts["failed"] == 0
    sessions = _sessions(store)
    assert len(sessions) == 1_005 and not {str(p["id"]) for p in pulls} & set(sessions)
    # 1,008 items at 100 a page: each page a new ``since`` window from the last update seen (which comes back
    # at its top), never a page number that shifts when an issue is updated mid-sync: 100 + 9 * 99 + 17.
    pages = gh.requests_to(ISSUES)
    assert len(pages) == 11 and all("page" not in r.query for r in pages)
    assert pages[0].query == {"per_page": "100", "state": "all", "sort": "updated", "direction": "asc"}
    assert [r.query.get("since") for r in pages[1:]] == [
        gh.issues["acme/api"][99 * n]["updated_at"] for n in range(1, 11)]
    assert all(r.bearer_token and r.bearer_token.startswith("ghs_77_") for r in pages)
    assert all(r.headers.get("x-github-api-version") == "2022-11-28" for r in pages)

    first = gh.issue_by_number("acme/api", 1)
    s = sessions[str(first["id"])]
    assert s["name"] == "#1 Export fails #1" and s["source"] == "github" and s["status"] == "closed"
    meta = s["user_metadata"]
    assert meta == {"github_issue_id": str(first["id"]), "github_issue_number": 1, "github_repo": "acme/api",
                    "github_issue_url": "https://github.com/acme/api/issues/1", "github_username": "octocat",
                    "name": "octocat"}
    # The body is the author's; the maintainer's comment is an agent's, the author's own reply the user's.
    assert _messages(store, s["id"]) == [("user", "Exporting in acme/api fails (#1)."),
                                         ("human_agent", "Comment 1 on #1"), ("user", "Comment 2 on #1")]
    assert gh.count("/repos/{o}/{r}/issues/{n}/comments") == 1  # only the issue that has comments
    tagged = sessions[str(gh.issue_by_number("acme/api", 2)["id"])]["user_metadata"]
    assert tagged["tags"] == "bug,feature_request"
    assert result.cursor_after is not None


def test_a_second_sync_writes_nothing_and_an_increment_changes_exactly_the_mutated_issues(
        store: Any, gh: FakeGitHub, app: str, clock: FakeClock) -> None:
    for i in range(150):
        gh.add_issue("acme/api", comments=1 if i % 50 == 0 else 0)
    enable(store, app, FEEDBACK)
    assert run_stream_sync(app, FEEDBACK, store=store).counts["synced"] == 150
    before = {k: v["updated_at"] for k, v in _sessions(store).items()}

    again = run_stream_sync(app, FEEDBACK, store=store)
    assert again.status == "success" and again.counts["synced"] == 0 and again.counts["failed"] == 0
    assert {k: v["updated_at"] for k, v in _sessions(store).items()} == before
    # Incremental: GitHub is asked only for what changed at or after the cursor (the boundary issue again).
    since = gh.requests_to(ISSUES)[-1].query["since"]
    assert since == again.cursor_before.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[union-attr]

    clock.advance(3600)
    edited = gh.update_issue("acme/api", 7, title="Export to CSV fails", state="closed")
    gh.add_comment("acme/api", 51, "We shipped a fix.")
    fresh = gh.add_issue("acme/api")
    gh.add_issue("acme/api", pull=True)
    third = run_stream_sync(app, FEEDBACK, store=store)

    assert third.status == "success" and third.counts["synced"] == 3, third.counts
    after = _sessions(store)
    changed = {k for k, v in after.items() if before.get(k) != v["updated_at"]}
    assert changed == {str(edited["id"]), str(gh.issue_by_number("acme/api", 51)["id"]), str(fresh["id"])}
    assert after[str(edited["id"])]["name"] == "#7 Export to CSV fails"
    assert _messages(store, after[str(gh.issue_by_number("acme/api", 51)["id"])]["id"])[-1] == (
        "human_agent", "We shipped a fix.")
    assert len(after) == 151


def test_filters_are_passed_to_github(store: Any, gh: FakeGitHub, app: str) -> None:
    gh.add_issue("acme/api", labels=("bug",))
    gh.add_issue("acme/api", labels=("bug",), state="closed")
    gh.add_issue("acme/api")
    enable(store, app, FEEDBACK, filters={"labels": "bug", "state": "open"})
    result = run_stream_sync(app, FEEDBACK, store=store)
    assert result.counts["synced"] == 1
    assert gh.requests_to(ISSUES)[0].query["labels"] == "bug" and gh.requests_to(ISSUES)[0].query["state"] == "open"


def test_primary_and_secondary_rate_limits_are_waited_out(store: Any, gh: FakeGitHub, app: str,
                                                          clock: FakeClock) -> None:
    for _ in range(250):
        gh.add_issue("acme/api")
    enable(store, app, FEEDBACK)
    reset = int(clock.time()) + 100
    # Primary: a 403 with the budget spent, until x-ratelimit-reset; then the secondary limit, with and
    # without retry-after (GitHub asks for at least a minute then); then a 429 with retry-after.
    gh.inject(ISSUES, 403, json={"message": "API rate limit exceeded for installation ID 77."},
              headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
              when=lambda r: r.query.get("since") is None)
    gh.secondary_limit(ISSUES, retry_after=7)
    # Pages two and three are windows from the last update of the page before (issues 100 and 199).
    page_2, page_3 = (gh.issue_by_number("acme/api", n)["updated_at"] for n in (100, 199))
    gh.inject(ISSUES, 403, json={"message": "You have exceeded a secondary rate limit."},
              when=lambda r: r.query.get("since") == page_2)
    gh.inject_429(ISSUES, retry_after=3, when=lambda r: r.query.get("since") == page_3)

    result = run_stream_sync(app, FEEDBACK, store=store)

    assert result.status == "success", result.error
    assert result.counts["synced"] == 250
    assert clock.sleeps == [100, 7, 60, 3]


def test_a_long_primary_reset_fails_the_run_retriably_and_keeps_the_cursor(store: Any, gh: FakeGitHub, app: str,
                                                                           clock: FakeClock) -> None:
    gh.add_issue("acme/api")
    enable(store, app, FEEDBACK)
    gh.inject(ISSUES, 429, json={"message": "API rate limit exceeded"}, times=None,
              headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(clock.time()) + 3000)})
    result = run_stream_sync(app, FEEDBACK, store=store)
    assert result.status == "error" and result.retriable and "retry after" in (result.error or "")
    assert repo.get_stream(store, app, FEEDBACK).last_sync_at is None and clock.sleeps == []


def test_an_uninstalled_app_marks_the_connection_reconnect_needed(store: Any, gh: FakeGitHub, app: str) -> None:
    gh.add_issue("acme/api")
    enable(store, app, FEEDBACK)
    assert run_stream_sync(app, FEEDBACK, store=store).status == "success"
    token = load_credentials(store, repo.get_connection(store, app))["access_token"]
    gh.installations.clear()  # uninstalled: the token dies and no new one can be minted
    gh.revoke_token(token)
    gone = run_stream_sync(app, FEEDBACK, store=store)
    assert gone.status == "error" and "uninstalled" in (gone.error or "") and "reconnect" in (gone.error or "")
    assert repo.get_connection(store, app).needs_reconnect
    assert token not in (gone.error or "")


def test_a_personal_access_token_connects_syncs_and_a_revoked_one_needs_reconnect(
        store: Any, gh: FakeGitHub) -> None:
    pat = gh.add_pat()
    gh.add_issue("acme/web", comments=1)
    out = connect_api_key(registry.get_plugin("github"), store, project_id=settings.default_project_id(),
                          user_id="tester", credentials={"pat": pat})
    cid = out["connection_id"]
    conn = repo.get_connection(store, cid)
    assert (conn.external_account_id, conn.account_label) == ("pat:dev-dana", "dev-dana (PAT)")
    assert load_credentials(store, conn) == {"auth_method": "pat", "access_token": pat, "account_login": "dev-dana"}
    enable(store, cid, "feedback:acme/web")
    result = run_stream_sync(cid, "feedback:acme/web", store=store)
    assert result.status == "success" and result.counts["synced"] == 1, result.error
    assert gh.requests_to(ISSUES)[0].bearer_token == pat and gh.mints == 0  # a token, never minted
    gh.revoke_token(pat)
    refused = run_stream_sync(cid, "feedback:acme/web", store=store)
    assert refused.status == "error" and "reconnect" in (refused.error or "") and pat not in (refused.error or "")
    assert repo.get_connection(store, cid).needs_reconnect
    assert AUTHOR["login"] == "octocat"


def test_installation_tokens_are_cached_until_shortly_before_expiry(store: Any, gh: FakeGitHub, app: str,
                                                                   caplog: Any, monkeypatch: Any) -> None:
    import logging

    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")  # per-request lines too
    caplog.set_level(logging.DEBUG)
    gh.add_issue("acme/api")
    enable(store, app, FEEDBACK)
    enable(store, app, "feedback:acme/web")
    for stream in (FEEDBACK, "feedback:acme/web", FEEDBACK):
        assert run_stream_sync(app, stream, store=store).status == "success"
    assert gh.mints == 1 and gh.jwt_errors == []
    conn = repo.get_connection(store, app)
    creds = load_credentials(store, conn)
    # Four minutes left: inside the five-minute leeway, so the next run mints a new one first.
    from datetime import UTC, datetime

    from hissuno_airflow.runtime.credentials import save_credentials
    save_credentials(store, conn, {**creds, "expires_at": (datetime.now(UTC) + timedelta(minutes=4)).isoformat()})
    assert run_stream_sync(app, FEEDBACK, store=store).status == "success"
    assert gh.mints == 2
    assert load_credentials(store, conn)["access_token"].endswith("_2")
    # No installation token, app JWT or key in any log line.
    jwts = [r.bearer_token for r in gh.requests_to("/app/installations/{id}/access_tokens")]
    assert caplog.text and all(t and t not in caplog.text for t in jwts)
    assert "ghs_77_" not in caplog.text and "PRIVATE KEY" not in caplog.text


def test_the_app_environment_takes_a_base64_key_and_the_app_name_for_the_slug(
        store: Any, gh: FakeGitHub, monkeypatch: Any) -> None:
    """``GITHUB_APP_PRIVATE_KEY`` as ``base64:`` + the PEM file's base64, and ``GITHUB_APP_NAME`` where
    ``GITHUB_APP_SLUG`` is not set (the reference's fallback); with neither, connect names the variable."""
    import base64
    import os
    from urllib.parse import parse_qs, urlsplit

    from hissuno_airflow.kit.errors import NotConfigured
    from hissuno_airflow.runtime.connect import finish_callback, start_connect

    pem = os.environ["GITHUB_APP_PRIVATE_KEY"]
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", "base64:" + base64.b64encode(pem.encode()).decode())
    monkeypatch.delenv("GITHUB_APP_SLUG")
    monkeypatch.delenv("GITHUB_APP_NAME", raising=False)
    try:
        start_connect("github", {}, store, user_id="tester", redirect_uri="unused")
        raise AssertionError("connect without a slug must fail")
    except NotConfigured as exc:
        assert "GITHUB_APP_SLUG" in str(exc)
    monkeypatch.setenv("GITHUB_APP_NAME", "hissuno-named")
    url = start_connect("github", {}, store, user_id="tester", redirect_uri="unused")["authorize_url"]
    assert url.startswith("https://github.invalid/apps/hissuno-named/installations/new?state=")
    back = finish_callback("github", {"state": parse_qs(urlsplit(url).query)["state"][0],
                                      "installation_id": "77", "setup_action": "install"}, store, user_id="tester")
    assert back.get("connected") == "1", back
    gh.add_issue("acme/api")
    enable(store, str(back["connection"]), FEEDBACK)
    result = run_stream_sync(str(back["connection"]), FEEDBACK, store=store)
    assert result.status == "success" and result.counts["synced"] == 1, result.error
    assert gh.mints == 1 and gh.jwt_errors == []  # the JWT was signed with the base64-given key


def test_with_the_apps_oauth_client_set_only_an_installation_the_returning_user_reaches_connects(
        store: Any, gh: FakeGitHub, monkeypatch: Any) -> None:
    """The reference's gap: any state holder could name another account's installation id of the app. With
    ``GITHUB_APP_CLIENT_ID``/``_SECRET`` set, GitHub's return must carry the installing user's authorization
    code, and ``GET /user/installations`` (as that user) must list the installation."""
    from urllib.parse import parse_qs, urlsplit

    from hissuno_airflow.runtime.connect import finish_callback, start_connect
    from tests.fakes.github import CLIENT_ID, CLIENT_SECRET

    monkeypatch.setenv("HISSUNO_GITHUB_WEB_URL", gh.url)
    monkeypatch.setenv("GITHUB_APP_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("GITHUB_APP_CLIENT_SECRET", CLIENT_SECRET)
    gh.add_installation(88, "other-org")

    def back(**query: str) -> dict[str, str]:
        url = start_connect("github", {}, store, user_id="tester", redirect_uri="unused")["authorize_url"]
        state = parse_qs(urlsplit(url).query)["state"][0]
        return finish_callback("github", {"state": state, "setup_action": "install", **query}, store,
                               user_id="tester")

    assert back(installation_id="77")["error"] == "invalid_input"  # no user authorization code
    assert back(installation_id="77", code="not-a-code")["error"] == "invalid_input"
    # A user of another organization names acme's installation: refused, nothing saved.
    assert back(installation_id="77", code=gh.authorize_user([88]))["error"] == "invalid_input"
    assert repo.list_connections(store, plugin_id="github") == []
    done = back(installation_id="77", code=gh.authorize_user([88, 77]))
    assert done.get("connected") == "1", done
    assert repo.get_connection(store, done["connection"]).external_account_id == "77"
    exchanges = gh.requests_to("/login/oauth/access_token")
    assert len(exchanges) == 3 and all("client_secret=" + CLIENT_SECRET in r.body.decode() for r in exchanges)
    assert all(r.bearer_token and r.bearer_token.startswith("ghu_") for r in gh.requests_to("/user/installations"))
