"""A stateful fake of GitHub's REST API for a GitHub App (providers.md §2), served on 127.0.0.1.

On top of ``tests/fakes/github_app.py`` (app JWTs checked against the app's public key, one-hour installation
tokens): ``GET /app/installations/{id}`` with the account, ``GET /installation/repositories`` and
``GET /user/repos`` (the token's repositories), ``GET /user`` (personal access tokens), per repository
``GET /repos/{o}/{r}``, ``/branches``, ``/branches/{b}``, ``/issues`` (``state``, ``labels``, ``since``
inclusive, ``sort=updated``, ``direction``; pull requests included as GitHub does), ``/issues/{n}`` (410
once deleted), ``/issues/{n}/comments``, ``/git/trees/{sha}`` (``recursive``; ``truncate_trees`` truncates
the recursive answer) and ``/git/blobs/{sha}``. Every list pages by ``per_page`` (max 100) and ``page`` with a
``Link`` header; every answer carries ``x-ratelimit-*``. ``secondary_limit(...)`` answers 403 with GitHub's
secondary-limit message, with or without ``retry-after``. Issues are a ``RecordSet`` on the fake's clock
(``update_issue``, ``add_comment``, ``delete_issue``); files live in ``files[repo][branch]`` (``push``).
``event(...)`` builds webhook payloads, signed by ``Signer(GitHubSignature())``. The conformance factories of
``tests/plugins/test_conformance.py`` are at the end.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from tests.fakes.github_app import APP_ID, FakeGitHubApp, new_private_key
from tests.fakes.server import FakeClock, FakeRequest, FakeResponse, RecordSet, Reply, get, iso_z, post
from tests.fakes.webhooks import Signer

INSTALLATION = 77
ACCOUNT = {"login": "acme", "id": 9077, "type": "Organization"}
REPOS = ("acme/api", "acme/web")
AUTHOR = {"login": "octocat", "id": 1, "type": "User"}
MAINTAINER = {"login": "maint", "id": 2, "type": "User"}
PAT_USER = {"login": "dev-dana", "id": 5, "type": "User"}
WEBHOOK_SECRET = "gh-webhook-secret"
CLIENT_ID, CLIENT_SECRET = "Iv1.hissunotest", "gh-app-client-secret"
"""The app's OAuth client (user authorization during installation)."""
LIMIT = 5000


def blob_sha(data: bytes) -> str:
    """Git's blob id: SHA-1 of ``blob <len>\\0<data>``."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


class FakeGitHub(FakeGitHubApp):
    """GitHub for one app; see the module docstring."""

    name = "github"
    truncate_trees = False

    def __init__(self, public_key: bytes, *, clock: Any = None) -> None:
        super().__init__(public_key)
        if clock is not None:
            self.clock = clock
        self.pat_users: dict[str, dict[str, Any]] = {}
        self.user_codes: dict[str, list[int]] = {}
        self.user_tokens: dict[str, list[int]] = {}
        self.issues: dict[str, RecordSet] = {}
        self.numbers: dict[str, int] = {}
        self.comments: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.files: dict[str, dict[str, dict[str, bytes]]] = {}
        self.commits: dict[tuple[str, str], int] = {}
        self.blobs: dict[str, bytes] = {}
        self.remaining = LIMIT
        self._ids = 1000
        self.repos = []
        for i, full in enumerate(REPOS):
            self.add_repo(full, private=i == 0)
        self.add_installation(INSTALLATION, str(ACCOUNT["login"]))

    # -- data ----------------------------------------------------------------------------------------

    def add_installation(self, installation_id: int, login: str) -> None:
        self.installations[str(installation_id)] = {
            "id": installation_id, "account": {**ACCOUNT, "login": login}, "app_id": int(APP_ID),
            "app_slug": "hissuno-test", "target_type": "Organization", "repository_selection": "selected",
            "permissions": {"issues": "read", "contents": "read", "metadata": "read"}, "suspended_at": None}

    def add_repo(self, full: str, private: bool = False) -> None:
        owner = full.split("/")[0]
        self._ids += 1
        self.repos.append({"id": self._ids, "node_id": f"R_{self._ids}", "name": full.split("/")[1], "full_name": full,
                           "private": private, "owner": {"login": owner, "id": ACCOUNT["id"], "type": "Organization"},
                           "html_url": f"https://github.com/{full}", "default_branch": "main", "archived": False})
        self.issues[full] = RecordSet(self.clock, resolution=60)
        self.numbers[full] = 0
        self.files[full] = {"main": {}}

    def add_pat(self, token: str | None = None, user: dict[str, Any] | None = None) -> str:
        """A personal access token of ``user`` (default ``PAT_USER``)."""
        token = self.issue_token(token or f"ghp_{uuid.uuid4().hex}")
        self.pat_users[token] = user or PAT_USER
        return token

    def add_issue(self, repo: str, *, comments: int = 0, labels: tuple[str, ...] = (), pull: bool = False,
                  body: str | None = None, state: str = "open") -> dict[str, Any]:
        """A new issue (or pull request) by ``AUTHOR``; ``comments`` alternate maintainer / author."""
        self.numbers[repo] += 1
        self._ids += 1
        number = self.numbers[repo]
        issue = self.issues[repo].add(
            id=self._ids, node_id=f"I_{self._ids}", number=number, title=f"Export fails #{number}",
            body=f"Exporting in {repo} fails (#{number})." if body is None else body, state=state,
            state_reason=None, user=dict(AUTHOR), labels=[{"id": hash(n) % 10_000, "name": n, "color": "ededed"}
                                                          for n in labels],
            assignee=None, assignees=[], milestone=None, comments=0, closed_at=None, locked=False,
            author_association="NONE", html_url=f"https://github.com/{repo}/issues/{number}",
            url=f"https://api.github.com/repos/{repo}/issues/{number}",
            repository_url=f"https://api.github.com/repos/{repo}")
        if pull:
            issue["pull_request"] = {"url": f"https://api.github.com/repos/{repo}/pulls/{number}",
                                     "html_url": f"https://github.com/{repo}/pull/{number}"}
        self.comments[(repo, number)] = []
        for i in range(comments):
            self._comment(repo, number, MAINTAINER if i % 2 == 0 else AUTHOR, f"Comment {i + 1} on #{number}")
        issue["comments"] = comments
        return issue

    def _comment(self, repo: str, number: int, who: dict[str, Any], body: str) -> dict[str, Any]:
        self._ids += 1
        at = iso_z(self.clock())
        comment = {"id": self._ids, "node_id": f"IC_{self._ids}", "body": body, "user": dict(who), "created_at": at,
                   "updated_at": at, "author_association": "MEMBER" if who is MAINTAINER else "NONE",
                   "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{self._ids}",
                   "issue_url": f"https://api.github.com/repos/{repo}/issues/{number}"}
        self.comments[(repo, number)].append(comment)
        return comment

    def authorize_user(self, installations: list[int]) -> str:
        """A user authorization code GitHub hands back with the install redirect, of a user who can access
        ``installations``."""
        code = f"code-{uuid.uuid4().hex[:12]}"
        self.user_codes[code] = list(installations)
        return code

    def issue_by_number(self, repo: str, number: int) -> dict[str, Any]:
        return next(i for i in self.issues[repo] if i["number"] == number)

    def update_issue(self, repo: str, number: int, **fields: Any) -> dict[str, Any]:
        """Change an issue; its ``updated_at`` moves on."""
        return self.issues[repo].update(self.issue_by_number(repo, number)["id"], **fields)

    def add_comment(self, repo: str, number: int, body: str, who: dict[str, Any] = MAINTAINER) -> dict[str, Any]:
        """A new comment; the issue's count and ``updated_at`` move on."""
        comment = self._comment(repo, number, who, body)
        self.update_issue(repo, number, comments=len(self.comments[(repo, number)]))
        return comment

    def delete_issue(self, repo: str, number: int) -> dict[str, Any]:
        """Delete an issue (GitHub answers 410 for it afterwards and never lists it again)."""
        issue = self.issue_by_number(repo, number)
        return self.issues[repo].delete(issue["id"])

    def push(self, repo: str, files: Mapping[str, str | bytes | None], branch: str = "main") -> None:
        """Commit changes to ``branch`` (None removes a file)."""
        tree = self.files[repo].setdefault(branch, {})
        for path, content in files.items():
            if content is None:
                tree.pop(path, None)
            else:
                tree[path] = content.encode() if isinstance(content, str) else content
        self.commits[(repo, branch)] = self.commits.get((repo, branch), 0) + 1

    def blob_requests(self) -> list[FakeRequest]:
        return self.requests_to("/repos/{o}/{r}/git/blobs/{sha}")

    def secondary_limit(self, path: str, *, retry_after: int | None = None, times: int = 1) -> Any:
        """403 with GitHub's secondary-limit message (and ``retry-after`` when given)."""
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        return self.inject(path, 403, times=times, headers=headers, json={
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"})

    # -- auth, headers, paging ------------------------------------------------------------------------

    def check_auth(self, req: FakeRequest) -> Reply | None:
        if req.path.startswith(("/app/", "/login/")):
            return None  # the app JWT routes check it themselves; the code exchange authenticates by client
        refused = self.check_bearer(req)
        if refused is not None:
            return FakeResponse(401, {"message": "Bad credentials",
                                      "documentation_url": "https://docs.github.com/rest"})
        return None

    def handle(self, req: FakeRequest) -> FakeResponse:
        resp = super().handle(req)
        headers = dict(resp.headers)
        if not req.path.startswith("/app/"):
            self.remaining = max(self.remaining - 1, 0)
        headers.setdefault("x-ratelimit-limit", str(LIMIT))
        headers.setdefault("x-ratelimit-remaining", str(self.remaining))
        headers.setdefault("x-ratelimit-used", str(LIMIT - self.remaining))
        headers.setdefault("x-ratelimit-reset", str(int(self.clock()) + 3600))
        headers.setdefault("x-ratelimit-resource", "core")
        return FakeResponse(resp.status, resp.json, headers, resp.body, resp.content_type)

    def _paged(self, req: FakeRequest, rows: list[Any], key: str | None = None, extra: dict[str, Any] | None = None,
               ) -> FakeResponse:
        per_page = min(int(req.query.get("per_page") or 30), 100)
        page = int(req.query.get("page") or 1)
        chunk = rows[(page - 1) * per_page: page * per_page]
        last = max(1, -(-len(rows) // per_page))
        links = []
        query = {k: v for k, v in req.query.items() if k != "page"}
        if page < last:
            links.append(f'<{req.url_for(req.path)}?{urlencode({**query, "page": page + 1})}>; rel="next"')
            links.append(f'<{req.url_for(req.path)}?{urlencode({**query, "page": last})}>; rel="last"')
        if page > 1:
            links.append(f'<{req.url_for(req.path)}?{urlencode({**query, "page": 1})}>; rel="first"')
        headers = {"Link": ", ".join(links)} if links else {}
        body: Any = chunk if key is None else {**(extra or {}), key: chunk}
        return FakeResponse(200, body, headers)

    def _repo(self, owner: str, repo: str) -> dict[str, Any] | None:
        return next((r for r in self.repos if r["full_name"] == f"{owner}/{repo}"), None)

    # -- routes --------------------------------------------------------------------------------------

    @get("/installation/repositories")
    def repositories(self, req: FakeRequest) -> Reply:
        if req.bearer_token in self.pat_users:
            return 403, {"message": "You must authenticate with an installation access token"}
        return self._paged(req, self.repos, "repositories",
                           {"total_count": len(self.repos), "repository_selection": "selected"})

    @post("/login/oauth/access_token")
    def user_token(self, req: FakeRequest) -> Reply:
        """The user-to-server code exchange: 200 with ``error`` when refused, as GitHub answers."""
        form = {k: v[-1] for k, v in parse_qs(req.body.decode()).items()}
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return {"error": "incorrect_client_credentials", "error_description": "The client_id and/or "
                    "client_secret passed are incorrect."}
        granted = self.user_codes.pop(form.get("code", ""), None)
        if granted is None:
            return {"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}
        token = self.issue_token(f"ghu_{uuid.uuid4().hex}")
        self.user_tokens[token] = granted
        return {"access_token": token, "token_type": "bearer", "scope": ""}

    @get("/user/installations")
    def user_installations(self, req: FakeRequest) -> Reply:
        granted = self.user_tokens.get(req.bearer_token or "")
        if granted is None:
            return 403, {"message": "You must authenticate with an access token authorized to a GitHub App"}
        rows = [self.installations[str(i)] for i in granted if str(i) in self.installations]
        return self._paged(req, rows, "installations", {"total_count": len(rows)})

    @get("/user")
    def user(self, req: FakeRequest) -> Reply:
        who = self.pat_users.get(req.bearer_token or "")
        if who is None:
            return 403, {"message": "Resource not accessible by integration"}
        return dict(who)

    @get("/user/repos")
    def user_repos(self, req: FakeRequest) -> Reply:
        if req.bearer_token not in self.pat_users:
            return 403, {"message": "Resource not accessible by integration"}
        return self._paged(req, self.repos)

    @get("/repos/{owner}/{repo}")
    def repository(self, req: FakeRequest, owner: str, repo: str) -> Reply:
        found = self._repo(owner, repo)
        return found if found else (404, {"message": "Not Found"})

    def _branch(self, full: str, name: str) -> dict[str, Any]:
        n = self.commits.get((full, name), 0)
        sha = hashlib.sha1(f"{full}@{name}#{n}".encode()).hexdigest()
        return {"name": name, "protected": name == "main",
                "commit": {"sha": sha, "commit": {"tree": {"sha": f"tree-{name}-{n}"},
                                                  "committer": {"date": iso_z(1_700_000_000 + n * 60)}}}}

    @get("/repos/{owner}/{repo}/branches")
    def branches(self, req: FakeRequest, owner: str, repo: str) -> Reply:
        full = f"{owner}/{repo}"
        if full not in self.files:
            return 404, {"message": "Not Found"}
        return self._paged(req, [self._branch(full, b) for b in sorted(self.files[full])])

    @get("/repos/{owner}/{repo}/branches/{branch}")
    def branch(self, req: FakeRequest, owner: str, repo: str, branch: str) -> Reply:
        full = f"{owner}/{repo}"
        if branch not in self.files.get(full, {}):
            return 404, {"message": "Branch not found"}
        return self._branch(full, branch)

    @get("/repos/{owner}/{repo}/issues")
    def list_issues(self, req: FakeRequest, owner: str, repo: str) -> Reply:
        full = f"{owner}/{repo}"
        if full not in self.issues:
            return 404, {"message": "Not Found"}
        q = req.query
        rows = self.issues[full].by_updated()
        if q.get("since"):
            since = _epoch(q["since"])
            rows = [r for r in rows if self.issues[full].stamps[str(r["id"])] >= since]  # at or after
        state = q.get("state", "open")
        if state != "all":
            rows = [r for r in rows if r["state"] == state]
        if q.get("labels"):
            want = set(q["labels"].split(","))
            rows = [r for r in rows if want <= {lb["name"] for lb in r["labels"]}]
        if q.get("direction", "desc") == "desc":
            rows = rows[::-1]
        return self._paged(req, rows)

    @get("/repos/{owner}/{repo}/issues/{number}")
    def show_issue(self, req: FakeRequest, owner: str, repo: str, number: str) -> Reply:
        full = f"{owner}/{repo}"
        found = next((i for i in self.issues.get(full, []) if str(i["number"]) == number), None)
        if found is None:
            gone = int(number) <= self.numbers.get(full, 0)
            return (410, {"message": "This issue was deleted"}) if gone else (404, {"message": "Not Found"})
        return dict(found)

    @get("/repos/{owner}/{repo}/issues/{number}/comments")
    def list_comments(self, req: FakeRequest, owner: str, repo: str, number: str) -> Reply:
        rows = self.comments.get((f"{owner}/{repo}", int(number)))
        return (404, {"message": "Not Found"}) if rows is None else self._paged(req, rows)

    @get("/repos/{owner}/{repo}/git/trees/{sha}")
    def tree(self, req: FakeRequest, owner: str, repo: str, sha: str) -> Reply:
        full = f"{owner}/{repo}"
        m = re.fullmatch(r"tree-(.+)-(\d+)(?::(.*))?", sha)
        if full not in self.files or m is None or m.group(1) not in self.files[full]:
            return 404, {"message": "Not Found"}
        files = self.files[full][m.group(1)]
        prefix = (m.group(3).replace("~", "/") + "/") if m.group(3) else ""  # a subtree's "sha" names its path
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                d = "/".join(parts[:depth])
                entries.setdefault(d, {"path": d, "mode": "040000", "type": "tree",
                                       "sha": f"tree-{m.group(1)}-{m.group(2)}:{(prefix + d).replace('/', '~')}"})
            sha_ = blob_sha(data)
            self.blobs[sha_] = data
            entries[rest] = {"path": rest, "mode": "100644", "type": "blob", "sha": sha_, "size": len(data)}
        recursive = "recursive" in req.query
        rows = [e for p, e in entries.items() if recursive or "/" not in p]
        truncated = recursive and self.truncate_trees
        if truncated:
            rows = rows[: max(1, len(rows) // 2)]
        return {"sha": sha, "url": req.url_for(req.path), "tree": rows, "truncated": truncated}

    @get("/repos/{owner}/{repo}/git/blobs/{sha}")
    def blob(self, req: FakeRequest, owner: str, repo: str, sha: str) -> Reply:
        data = self.blobs.get(sha)
        if data is None:
            return 404, {"message": "Not Found"}
        encoded = base64.encodebytes(data).decode()  # GitHub wraps the base64 at 60 characters
        return {"sha": sha, "size": len(data), "encoding": "base64", "content": encoded}

    # -- webhooks --------------------------------------------------------------------------------------

    def event(self, name: str, action: str | None, repo: str, *, issue: dict[str, Any] | None = None,
              ref: str | None = None, installation: int = INSTALLATION) -> tuple[dict[str, Any], dict[str, str]]:
        """A webhook payload and its ``X-GitHub-*`` headers (sign the body with ``Signer(GitHubSignature())``)."""
        repository = next(r for r in self.repos if r["full_name"] == repo)
        payload: dict[str, Any] = {"repository": repository, "sender": dict(MAINTAINER),
                                   "installation": {"id": installation, "node_id": f"MDIn{installation}"}}
        if action is not None:
            payload["action"] = action
        if issue is not None:
            payload["issue"] = dict(issue)
        if name == "issue_comment" and issue is not None:
            payload["comment"] = (self.comments.get((repo, issue["number"])) or [{}])[-1]
        if name == "push":
            payload.update(ref=ref or "refs/heads/main", before="0" * 40, after=uuid.uuid4().hex + "0" * 8,
                           commits=[], pusher={"name": "maint"})
        headers = {"X-GitHub-Event": name, "X-GitHub-Delivery": str(uuid.uuid4()),
                   "X-GitHub-Hook-Installation-Target-Type": "integration",
                   "X-GitHub-Hook-Installation-Target-ID": APP_ID, "Content-Type": "application/json"}
        return payload, headers


    def installation_event(self, action: str, installation: int = INSTALLATION) -> tuple[dict[str, Any], dict[str, str]]:
        """An ``installation`` webhook (``created``, ``deleted``, ``suspend``, ``unsuspend``) and its headers."""
        found = self.installations.get(str(installation)) or {"id": installation, "account": dict(ACCOUNT)}
        payload = {"action": action, "installation": {**found, "id": installation, "node_id": f"MDIn{installation}"},
                   "repositories": [{k: r[k] for k in ("id", "name", "full_name", "private")} for r in self.repos],
                   "sender": dict(MAINTAINER)}
        headers = {"X-GitHub-Event": "installation", "X-GitHub-Delivery": str(uuid.uuid4()),
                   "X-GitHub-Hook-Installation-Target-Type": "integration",
                   "X-GitHub-Hook-Installation-Target-ID": APP_ID, "Content-Type": "application/json"}
        return payload, headers


def _epoch(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# -- serving and connecting --------------------------------------------------------------------------


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, clock: Any = None) -> FakeGitHub:
    """Start the fake, point the plugin's ``API`` base at it and set the app's environment variables."""
    private, public = new_private_key()
    fake: FakeGitHub = serve_fake(FakeGitHub(public, clock=clock or FakeClock().time))
    monkeypatch.setenv("HISSUNO_GITHUB_API_URL", fake.url)
    monkeypatch.setenv("HISSUNO_GITHUB_WEB_URL", "https://github.invalid")
    monkeypatch.setenv("GITHUB_APP_SLUG", "hissuno-test")
    monkeypatch.setenv("GITHUB_APP_ID", APP_ID)
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", private)
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
    return fake


def install(store: Any, installation: int = INSTALLATION, *, user: str = "tester") -> str:
    """The install flow through the runtime: the install URL's state, GitHub's redirect back; the connection id."""
    from urllib.parse import parse_qs, urlsplit

    from hissuno_airflow.runtime.connect import finish_callback, start_connect

    out = start_connect("github", {}, store, user_id=user, redirect_uri="unused")
    state = parse_qs(urlsplit(out["authorize_url"]).query)["state"][0]
    back = finish_callback("github", {"state": state, "installation_id": str(installation),
                                      "setup_action": "install"}, store, user_id=user)
    assert back.get("connected") == "1", back
    return str(back["connection"])


def seed(fake: FakeGitHub, repo: str = "acme/api", issues: int = 3) -> None:
    """A few issues (one with comments) and two files on ``main``."""
    for i in range(issues):
        fake.add_issue(repo, comments=2 if i == 0 else 0)
    fake.push(repo, {"README.md": "# API\n\nHow to export.\n", "src/app.py": "print('hello')\n"})


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """An app installation with issues and files in ``acme/api``."""
    fake = serve(monkeypatch, serve_fake)
    seed(fake)
    return ConformanceTarget(connection_id=install(store), stream_ids=("feedback:acme/api", "codebase:acme/api"))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A personal access token the fake knows, and one it revoked."""
    fake = serve(monkeypatch, serve_fake)
    good = fake.add_pat()
    bad = fake.add_pat()
    fake.revoke_token(bad)
    return AuthTarget(good={"pat": good}, bad={"pat": bad})


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """The app-wide secret; payloads are ``issues`` events of the installation."""
    from hissuno_airflow.kit.signatures import GitHubSignature

    fake = serve(monkeypatch, serve_fake)
    seed(fake, issues=1)
    from hissuno_airflow.runtime.streams import enable_stream

    enable_stream(store, install(store), "feedback:acme/api")
    signer = Signer(GitHubSignature(fallback=None)).with_secret(WEBHOOK_SECRET)

    def payload(event_id: str) -> Any:
        body, _ = fake.event("issues", "edited", "acme/api", issue=fake.issue_by_number("acme/api", 1))
        return {**body, "delivery_hint": event_id}

    return WebhookTarget(sign=signer, forge=signer.forged(), payload=payload, stream_ids=("feedback:acme/api",))

