"""The ``github`` plugin through the real web routes: the app's single webhook URL (signature, replay,
forgery, resolution by installation), events updating and deleting sessions, a push refreshing the codebase,
the install return leg, instances and the ``repos``/``branches`` handlers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from hissuno_airflow.kit.signatures import GitHubSignature
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.runtime.webhooks import process_inbox
from hissuno_airflow.store import connections as repo
from tests.fakes.github import INSTALLATION, WEBHOOK_SECRET, FakeGitHub
from tests.fakes.webhooks import Signer
from tests.fixtures.web import ADMIN_TOKEN, Web, count
from tests.plugins import github_env
from tests.plugins.github_env import enable, one, rows

FEEDBACK, CODEBASE = "feedback:acme/api", "codebase:acme/api"
SIGNER = Signer(GitHubSignature(fallback=None)).with_secret(WEBHOOK_SECRET)

# The shared fixtures (a conftest here would be shared with every provider's tests).
app = github_env.app
clock = github_env.clock
gh = github_env.gh


def _post(web: Web, payload: Any, headers: dict[str, str], *, signer: Signer = SIGNER,
          body: bytes | None = None) -> httpx.Response:
    url = f"{web.url}/api/plugins/webhook/github"
    raw = body if body is not None else json.dumps(payload).encode()
    signed = dict(signer(raw, url=url, event_id=headers["X-GitHub-Delivery"]).headers)
    return web.anon.post("/api/plugins/webhook/github", content=raw, headers={**headers, **signed})


def _session(store: Any, issue_id: Any) -> dict[str, Any] | None:
    found = rows(store, "SELECT s.* FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id"
                        " WHERE r.stream_id = %s AND r.external_id = %s", FEEDBACK, str(issue_id))
    return found[0] if found else None


def test_issue_events_update_and_delete_sessions_once_each(web: Web, gh: FakeGitHub, app: str) -> None:
    store = web.store
    issue = gh.add_issue("acme/api", comments=1)
    other = gh.add_issue("acme/web")
    enable(store, app, FEEDBACK)
    enable(store, app, "feedback:acme/web")
    assert run_stream_sync(app, FEEDBACK, store=store).counts["synced"] == 1

    # Edited on GitHub, then the event: valid once, the redelivery (same X-GitHub-Delivery) a duplicate.
    gh.update_issue("acme/api", 1, title="Export crashes")
    payload, headers = gh.event("issues", "edited", "acme/api", issue=gh.issue_by_number("acme/api", 1))
    first = _post(web, payload, headers)
    assert first.status_code == 200 and first.json()["queued"] == 2, first.text  # both repositories' streams
    again = _post(web, payload, headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    # The same bytes under another X-GitHub-Delivery are another delivery (the id dedupes, not the body).
    other_delivery = _post(web, payload, {**headers, "X-GitHub-Delivery": "another-delivery"})
    assert other_delivery.status_code == 200 and other_delivery.json()["queued"] == 2, other_delivery.text
    # Forged, tampered, unsigned: 401, nothing stored. GitHub signs no timestamp: a replay is caught by the
    # delivery id above, not by age.
    events = count(store, "webhook_events")
    forged = _post(web, payload, {**headers, "X-GitHub-Delivery": "forged-1"}, signer=SIGNER.forged())
    raw = json.dumps(payload).encode()
    signed = dict(SIGNER(raw, url=f"{web.url}/api/plugins/webhook/github", event_id="t-1").headers)
    tampered = web.anon.post("/api/plugins/webhook/github", content=raw + b" ", headers={**headers, **signed})
    unsigned = web.anon.post("/api/plugins/webhook/github", content=raw, headers=headers)
    assert [r.status_code for r in (forged, tampered, unsigned)] == [401, 401, 401]
    assert "Traceback" not in forged.text and WEBHOOK_SECRET not in forged.text
    assert count(store, "webhook_events") == events
    # Another installation (not connected): 404, nothing stored.
    stranger, sh = gh.event("issues", "edited", "acme/api", issue=issue, installation=999)
    assert _post(web, stranger, sh).status_code == 404 and count(store, "webhook_events") == events

    assert set(web.dispatcher.targets) == {(app, FEEDBACK), (app, "feedback:acme/web")}
    done = process_inbox(app, FEEDBACK, store=store)
    assert (done.done, done.failed) == (2, 0)
    assert process_inbox(app, "feedback:acme/web", store=store).done == 2  # another repository: ignored
    assert one(store, "SELECT count(*) FROM integration_synced_records WHERE stream_id = 'feedback:acme/web'") == 0
    assert _session(store, other["id"]) is None
    assert _session(store, issue["id"])["name"] == "#1 Export crashes"  # type: ignore[index]

    # A new comment.
    gh.add_comment("acme/api", 1, "Fixed in 2.3.")
    p2, h2 = gh.event("issue_comment", "created", "acme/api", issue=gh.issue_by_number("acme/api", 1))
    assert _post(web, p2, h2).status_code == 200
    assert process_inbox(app, FEEDBACK, store=store).done == 1
    msgs = rows(store, "SELECT content FROM session_messages WHERE session_id = %s ORDER BY position",
                _session(store, issue["id"])["id"])  # type: ignore[index]
    assert msgs[-1]["content"] == "Fixed in 2.3."

    # Deleted on GitHub: the session is marked deleted through the kit's delete primitive.
    deleted = gh.delete_issue("acme/api", 1)
    p3, h3 = gh.event("issues", "deleted", "acme/api", issue=deleted)
    assert _post(web, p3, h3).status_code == 200
    reads = len(gh.requests)
    assert process_inbox(app, FEEDBACK, store=store).done == 1
    assert len(gh.requests) == reads  # the event says it all: nothing is asked of GitHub
    assert _session(store, issue["id"])["deleted_at"] is not None  # type: ignore[index]

    # A pull request's conversation comment arrives as ``issue_comment`` too: not an issue, no session.
    pull = gh.add_issue("acme/api", pull=True, comments=1)
    p4, h4 = gh.event("issue_comment", "created", "acme/api", issue=pull)
    assert _post(web, p4, h4).status_code == 200
    assert process_inbox(app, FEEDBACK, store=store).done == 1
    assert _session(store, pull["id"]) is None

    # The ping GitHub sends when the webhook is created.
    ping = {"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "App"}}
    pong = _post(web, ping, {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "ping-1"})
    assert pong.status_code == 200 and pong.json()["ping"] is True


def test_a_push_to_the_tracked_branch_refreshes_the_codebase(web: Web, gh: FakeGitHub, app: str) -> None:
    store = web.store
    gh.push("acme/api", {"src/app.py": "print(1)\n"})
    gh.push("acme/api", {"src/app.py": "print(1)\n"}, branch="dev")
    enable(store, app, CODEBASE, filters={"exclude_globs": ["**/skip/**"]})
    assert run_stream_sync(app, CODEBASE, store=store).status == "success"

    def names() -> set[str]:
        return {r["name"] for r in rows(
            store, "SELECT k.name FROM knowledge_sources k JOIN integration_synced_records r ON r.hissuno_id = k.id"
                   " WHERE r.stream_id = %s AND k.deleted_at IS NULL", CODEBASE)}
    assert names() == {"acme/api", "src/app.py"}

    gh.push("acme/api", {"src/other.py": "x = 1\n"}, branch="dev")
    p, h = gh.event("push", None, "acme/api", ref="refs/heads/dev")
    assert _post(web, p, h).status_code == 200
    assert (app, CODEBASE) in web.dispatcher.targets  # the stream's consumer is woken (a queued run)
    reads = len(gh.requests)
    assert process_inbox(app, CODEBASE, store=store).done == 1
    assert names() == {"acme/api", "src/app.py"} and len(gh.requests) == reads  # not the tracked branch

    gh.push("acme/api", {"src/new.py": "y = 2\n", "src/skip/gen.py": "z = 3\n"})  # the stream's globs apply
    p, h = gh.event("push", None, "acme/api", ref="refs/heads/main")
    assert _post(web, p, h).status_code == 200
    assert process_inbox(app, CODEBASE, store=store).done == 1
    assert names() == {"acme/api", "src/app.py", "src/new.py"}


def test_install_return_through_the_web_routes(web: Web, gh: FakeGitHub) -> None:
    # The token alternative through the same route: a refused token is a 400 naming the problem, no row.
    bad = web.client.post("/api/plugins/github/connect", json={"credentials": {"pat": "ghp_nope"}})
    assert bad.status_code == 400 and "Invalid or expired personal access token" in bad.text
    assert "ghp_nope" not in bad.text and count(web.store, "integration_connections") == 0
    r = web.client.post("/api/plugins/github/connect", json={})
    url = r.json()["authorize_url"]
    assert url.startswith("https://github.invalid/apps/hissuno-test/installations/new?state=")
    cb = f"{web.url}/api/plugins/oauth/github/callback"

    def back(query: str) -> dict[str, list[str]]:
        resp = httpx.get(f"{cb}?{query}", cookies={"hissuno_token": ADMIN_TOKEN}, follow_redirects=False)
        assert resp.status_code == 302, resp.text
        return parse_qs(urlsplit(resp.headers["Location"]).query)

    def state() -> str:
        start = web.client.post("/api/plugins/github/connect", json={}).json()["authorize_url"]
        return str(parse_qs(urlsplit(start).query)["state"][0])

    # An installation GitHub does not know for this app, a pending request, a suspended installation.
    assert back(f"installation_id=31337&setup_action=install&state={state()}")["error"] == ["invalid_input"]
    assert back(f"setup_action=request&state={state()}")["error"] == ["install_requested"]
    gh.installations[str(INSTALLATION)]["suspended_at"] = "2025-01-01T00:00:00Z"
    assert back(f"installation_id={INSTALLATION}&setup_action=install&state={state()}")["error"] == ["invalid_input"]
    assert count(web.store, "integration_connections") == 0
    gh.installations[str(INSTALLATION)]["suspended_at"] = None

    done = back(f"installation_id={INSTALLATION}&setup_action=install&state={state()}")
    assert done.get("connected") == ["1"], done
    conn = repo.get_connection(web.store, done["connection"][0])
    assert (conn.external_account_id, conn.account_label) == (str(INSTALLATION), "acme (App)")
    assert conn.settings["setup_action"] == "install" and conn.settings["account_login"] == "acme"
    assert gh.jwt_errors == [] and gh.count("/app/installations/{id}") == 3

    # Instances and the custom handlers, with the installation's minted token.
    inst = web.client.get(f"/api/plugins/github/{conn.id}/instances/feedback").json()
    assert [i["id"] for i in inst["instances"]] == ["acme/api", "acme/web"]
    repos = web.client.get(f"/api/plugins/github/{conn.id}/repos").json()["repos"]
    assert [r["full_name"] for r in repos] == ["acme/api", "acme/web"] and repos[0]["private"] is True
    gh.push("acme/api", {"x": "1"}, branch="dev")
    branches = web.client.get(f"/api/plugins/github/{conn.id}/branches", params={"owner": "acme", "repo": "api"})
    assert [b["name"] for b in branches.json()["branches"]] == ["dev", "main"]
    missing = web.client.get(f"/api/plugins/github/{conn.id}/branches", params={"owner": "acme"})
    assert missing.status_code == 400 and missing.json()["field"] == "repo"
    unknown = web.client.get(f"/api/plugins/github/{conn.id}/branches", params={"owner": "acme", "repo": "nope"})
    assert unknown.status_code == 404 and "Traceback" not in unknown.text  # GitHub's status passed through
    assert all(r.bearer_token and r.bearer_token.startswith("ghs_") for r in gh.requests_to("/repos/{o}/{r}/branches"))


def test_an_uninstalled_or_suspended_installation_needs_a_reconnect_and_its_syncs_stop(
    web: Web, gh: FakeGitHub, app: str
) -> None:
    """``installation`` events through the app's signed URL: ``suspend`` and ``deleted`` mark the connection
    "reconnect needed" and its next run fails at once with GitHub's reason (no retry, no data request);
    ``unsuspend`` clears the mark and syncing resumes."""
    store = web.store
    gh.add_issue("acme/api")
    enable(store, app, FEEDBACK)
    assert run_stream_sync(app, FEEDBACK, store=store).status == "success"
    events = count(store, "webhook_events")

    def state() -> list[bool]:
        listed = web.client.get("/api/plugins/github").json()["connections"]
        return [c["needs_reconnect"] for c in listed]

    def data_requests() -> int:
        return len([r for r in gh.requests if r.path.startswith("/repos/")])

    # A forged event changes nothing.
    forged = _post(web, *gh.installation_event("suspend"), signer=SIGNER.forged())
    assert forged.status_code == 401 and state() == [False]

    gh.suspend_installation(INSTALLATION)
    suspended = _post(web, *gh.installation_event("suspend"))
    assert suspended.status_code == 200 and suspended.json()["connections"] == 1, suspended.text
    assert state() == [True] and "suspended" in (repo.get_connection(store, app).auth_error or "")
    before = data_requests()
    stopped = run_stream_sync(app, FEEDBACK, store=store)
    assert stopped.status == "error" and not stopped.retriable, stopped
    assert "suspended" in (stopped.error or "") and data_requests() == before
    assert f"hissuno connect github --update {app}" in (repo.get_connection(store, app).auth_error or "")

    gh.suspend_installation(INSTALLATION, suspended=False)
    back = _post(web, *gh.installation_event("unsuspend"))
    assert back.status_code == 200 and state() == [False]
    assert run_stream_sync(app, FEEDBACK, store=store).status == "success"

    gh.delete_installation(INSTALLATION)
    deleted = _post(web, *gh.installation_event("deleted"))
    assert deleted.status_code == 200 and state() == [True]
    assert "uninstalled" in (repo.get_connection(store, app).auth_error or "")
    before = data_requests()
    gone = run_stream_sync(app, FEEDBACK, store=store)
    assert gone.status == "error" and not gone.retriable and "uninstalled" in (gone.error or ""), gone
    assert data_requests() == before
    assert count(store, "webhook_events") == events, "installation events are not queued to any stream"
