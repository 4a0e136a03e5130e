"""The ``github`` plugin: a GitHub App installation (or a personal access token); each repository's issues as
feedback sessions and its files as codebase knowledge, by sync and by the app's webhooks."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel
from pydantic import Field as PField

from hissuno_airflow.kit import (
    AuthCtx,
    AuthResult,
    Field,
    GitHubAppAuth,
    Icon,
    InputError,
    ListCtx,
    ProviderAuthError,
    ProviderError,
    Request,
    Response,
    RouteCtx,
    Stream,
    StreamInstance,
    SyncCtx,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit.http import BearerAuth, ProviderClient
from hissuno_airflow.kit.signatures import GitHubSignature, WebhookEvent
from hissuno_airflow.kit.types import SessionTag

from .client import HEADERS, GitHubClient, retry_policy
from .codebase import MAX_ID_LENGTH, decode_text, file_id, file_markdown, index_markdown, wanted
from .mapping import is_pull_request, parse_time, session_fields

CLIENT_ID_ENV, CLIENT_SECRET_ENV = "GITHUB_APP_CLIENT_ID", "GITHUB_APP_CLIENT_SECRET"
"""The app's OAuth client: when set, the returning user must be able to access the installation."""
_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
LOGO = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><path fill='#181717' d='M8 0C3.58 0 0 3.58 0 8c0"
    " 3.54 2.29 6.53 5.47 7.59.4.07.55-.17.55-.38 0-.19-.01-.82-.01-1.49-2.01.37-2.53-.49-2.69-.94-.09-.23-.48-.94"
    "-.82-1.13-.28-.15-.68-.52-.01-.53.63-.01 1.08.58 1.23.82.72 1.21 1.87.87 2.33.66.07-.52.28-.87.51-1.07-1.78-.2"
    "-3.64-.89-3.64-3.95 0-.87.31-1.59.82-2.15-.08-.2-.36-1.02.08-2.12 0 0 .67-.21 2.2.82.64-.18 1.32-.27 2-.27.68 0"
    " 1.36.09 2 .27 1.53-1.04 2.2-.82 2.2-.82.44 1.1.16 1.92.08 2.12.51.56.82 1.27.82 2.15 0 3.07-1.87 3.75-3.65"
    " 3.95.29.25.54.73.54 1.48 0 1.07-.01 1.93-.01 2.2 0 .21.15.46.55.38A8.013 8.013 0 0016 8c0-4.42-3.58-8-8-8z'/></svg>"
)


class FeedbackFilters(BaseModel):
    """Which issues the ``feedback`` stream reads."""

    labels: str | None = None
    """Comma-separated labels an issue must all carry (passed to GitHub)."""
    state: Literal["open", "closed", "all"] = "all"
    """Issue state."""


class FeedbackSettings(BaseModel):
    """How issues become sessions."""

    label_tag_map: dict[str, SessionTag] = PField(default_factory=dict)
    """GitHub label -> session tag (``bug``, ``feature_request``, ...), kept in the session's metadata."""


class CodebaseFilters(BaseModel):
    """Which files the ``codebase`` stream reads."""

    branch: str | None = None
    """Branch to read (the ``branch`` setting wins; default: the repository's default branch)."""
    include_globs: list[str] = PField(default_factory=list)
    """Only paths matching one of these (``src/**``, ``*.md``); empty: every path."""
    exclude_globs: list[str] = PField(default_factory=list)
    """Paths matching one of these are left out (``**/vendor/**``, ``*.min.js``)."""


class CodebaseSettings(BaseModel):
    """The tracked branch."""

    branch: str | None = None
    """Branch to read; a push to it refreshes the knowledge."""


# -- auth ------------------------------------------------------------------------------------------


def _obj(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty one (webhook payloads are provider input)."""
    return value if isinstance(value, Mapping) else {}


def _http(ctx: Any, **kwargs: Any) -> ProviderClient:
    """A client for the API with GitHub's headers; its retry policy also recognises secondary limits."""
    client: ProviderClient = ctx.http_client("API", headers=HEADERS, **kwargs)
    client.retry = retry_policy(client.retry)
    return client


def _on_installation(installation_id: int, ctx: AuthCtx) -> AuthResult:
    """The install came back: look the installation up as the app (JWT) and name its account."""
    with GitHubClient(_http(ctx, auth=BearerAuth(ctx.app_jwt()))) as gh:
        found = gh.installation(installation_id)
    account = _obj(found.get("account"))
    login = str(account.get("login") or "")
    if str(found.get("id")) != str(installation_id) or not login:
        msg = f"installation_id: GitHub did not return installation {installation_id} of this app"
        raise InputError(msg, field="installation_id")
    if found.get("suspended_at"):
        raise InputError(f"installation_id: the installation on {login} is suspended; unsuspend it on GitHub",
                         field="installation_id")
    _check_installer(installation_id, ctx)
    return AuthResult(
        external_account_id=str(installation_id), account_label=f"{login} (App)",
        credentials={"auth_method": "app", "account_login": login},
        settings={"account_login": login, "account_id": account.get("id"), "account_type": account.get("type")},
    )


def _check_installer(installation_id: int, ctx: AuthCtx) -> None:
    """With ``GITHUB_APP_CLIENT_ID``/``_SECRET`` set, the installation must be one the returning GitHub user
    can access: the app asks for user authorization during installation, GitHub's redirect carries a
    ``code``, exchanged for the user's token, and ``GET /user/installations`` must list the installation.
    Otherwise anyone holding a state could name another account's installation id of the app."""
    client_id, secret = os.environ.get(CLIENT_ID_ENV, ""), os.environ.get(CLIENT_SECRET_ENV, "")
    if not client_id or not secret:
        return
    code = ctx.callback_query.get("code", "")
    if not code:
        raise InputError(f"code: {CLIENT_ID_ENV} is set, so GitHub must return a user authorization code; enable"
                         " 'Request user authorization (OAuth) during installation' on the app", field="code")
    with ctx.http_client("WEB", headers={"Accept": "application/json"}, secrets=[code, secret]) as web:
        answer = web.post_json("/login/oauth/access_token",
                               data={"client_id": client_id, "client_secret": secret, "code": code})
    user_token = answer.get("access_token") if isinstance(answer, Mapping) else None
    if not isinstance(user_token, str) or not user_token:
        error = str(answer.get("error") or "no access_token") if isinstance(answer, Mapping) else "no answer"
        raise InputError(f"code: GitHub refused the user authorization code ({error[:60]})", field="code")
    with GitHubClient(_http(ctx, auth=BearerAuth(user_token), secrets=[user_token])) as gh:
        reachable = {str(i.get("id")) for i in gh.user_installations()}
    if str(installation_id) not in reachable:
        raise InputError(f"installation_id: the GitHub user who installed cannot access installation "
                         f"{installation_id}", field="installation_id")


def _check_token(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    """The personal-access-token alternative: the token must name a user."""
    token = str(credentials["pat"]).strip()
    try:
        with GitHubClient(_http(ctx, auth=BearerAuth(token))) as gh:
            user = gh.user()
    except ProviderAuthError as exc:
        raise ProviderAuthError("Invalid or expired personal access token: GitHub refused it", provider="github",
                                status=exc.status) from None
    login = str(user.get("login") or "")
    if not login:
        raise ProviderAuthError("Invalid or expired personal access token: GitHub named no user",
                                provider="github", status=401)
    return AuthResult(external_account_id=f"pat:{login}", account_label=f"{login} (PAT)",
                      credentials={"auth_method": "pat", "access_token": token, "account_login": login},
                      settings={"account_login": login})


def _is_app(credentials: Mapping[str, Any] | None) -> bool:
    return bool(credentials) and credentials.get("auth_method") != "pat"  # type: ignore[union-attr]


# -- repositories ------------------------------------------------------------------------------------


def _repo_entry(repo: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": repo.get("id"), "full_name": repo.get("full_name"), "private": repo.get("private"),
            "default_branch": repo.get("default_branch"), "url": repo.get("html_url")}


def _list_repos(ctx: ListCtx) -> list[StreamInstance]:
    """One instance per repository the installation (or the token's user) reaches."""
    with GitHubClient(_http(ctx)) as gh:
        repos = list(gh.repositories(app=_is_app(ctx.credentials)))
    return [StreamInstance(id=str(r["full_name"]), label=str(r["full_name"]),
                           metadata={"id": r.get("id"), "defaultBranch": r.get("default_branch"),
                                     "private": r.get("private"), "url": r.get("html_url")})
            for r in repos if r.get("full_name")]


def _repo_of(ctx: SyncCtx | WebhookCtx) -> str:
    repo = ctx.instance_id or ""
    if not _REPO.fullmatch(repo):
        raise InputError(f"stream_id: expected {ctx.stream_key}:owner/repo; got instance {repo[:120]!r}",
                         field="stream_id")
    return repo


# -- feedback ----------------------------------------------------------------------------------------


def _ingest_issue(ctx: SyncCtx | WebhookCtx, gh: GitHubClient, repo: str, issue: Mapping[str, Any]) -> None:
    comments = list(gh.comments(repo, int(issue["number"]))) if issue.get("comments") else []
    settings = ctx.settings if isinstance(ctx.settings, FeedbackSettings) else FeedbackSettings()
    ctx.ingest.session(**session_fields(repo, issue, comments, settings.label_tag_map))


def _sync_feedback(ctx: SyncCtx) -> None:
    """Issues updated since the cursor, oldest update first, every page (no cap); pull requests left out."""
    repo = _repo_of(ctx)
    with GitHubClient(_http(ctx)) as gh:
        for issue in gh.issues(repo, since=ctx.since(), state=ctx.filters.state, labels=ctx.filters.labels):
            ctx.signal.raise_if_cancelled()
            updated = parse_time(issue.get("updated_at"))
            if ctx.until is not None and updated is not None and updated >= ctx.until:
                continue
            if is_pull_request(issue):
                if updated is not None:
                    ctx.advance_cursor(updated)
                continue
            ctx.progress("found", external_id=str(issue["id"]))
            _ingest_issue(ctx, gh, repo, issue)


def _wanted_by_filters(ctx: WebhookCtx, issue: Mapping[str, Any]) -> bool:
    filters = ctx.filters if isinstance(ctx.filters, FeedbackFilters) else FeedbackFilters()
    if filters.state != "all" and issue.get("state") != filters.state:
        return False
    names = {str(lb.get("name")) for lb in issue.get("labels") or [] if isinstance(lb, Mapping)}
    required = {x.strip() for x in (filters.labels or "").split(",") if x.strip()}
    return required <= names


def _on_feedback_event(ctx: WebhookCtx) -> None:
    """``issues`` and ``issue_comment`` events of this stream's repository: the issue is read again with its
    comments and its session updated; ``issues`` ``deleted`` (or ``transferred`` away) deletes it."""
    event = str(ctx.headers.get("x-github-event") or "")
    payload = _obj(ctx.payload)
    repository = _obj(payload.get("repository"))
    if event not in ("issues", "issue_comment") or repository.get("full_name") != _repo_of(ctx):
        return  # another repository's stream, or an event this stream does not take
    issue = payload.get("issue")
    if not isinstance(issue, Mapping) or "id" not in issue or is_pull_request(issue):
        return
    action = payload.get("action")
    if event == "issues" and action in ("deleted", "transferred"):
        ctx.ingest.delete("sessions", str(issue["id"]))
        return
    repo = _repo_of(ctx)
    with GitHubClient(_http(ctx)) as gh:
        current = gh.issue(repo, int(issue["number"]))
        if current is None:
            ctx.ingest.delete("sessions", str(issue["id"]))
        elif _wanted_by_filters(ctx, current):
            _ingest_issue(ctx, gh, repo, current)


# -- codebase ----------------------------------------------------------------------------------------


def _refresh_codebase(ctx: SyncCtx | WebhookCtx) -> None:
    """Read the branch's tree; ingest new file versions, delete replaced or removed ones, update the index."""
    repo = _repo_of(ctx)
    filters = ctx.filters if isinstance(ctx.filters, CodebaseFilters) else CodebaseFilters()
    settings = ctx.settings if isinstance(ctx.settings, CodebaseSettings) else CodebaseSettings()
    progress = getattr(ctx, "progress", None)
    web = ctx.base_url("WEB")
    with GitHubClient(_http(ctx)) as gh:
        info = gh.repository(repo)
        branch = settings.branch or filters.branch or str(info.get("default_branch") or "main")
        head = gh.branch(repo, branch)
        commit = head["commit"]
        committed = parse_time(commit["commit"]["committer"]["date"])
        files = [e for e in gh.tree(repo, str(commit["commit"]["tree"]["sha"]))
                 if wanted(e, filters.include_globs, filters.exclude_globs) is None and e.get("mode") != "120000"]
        files = [e for e in files if len(file_id(repo, e["path"], e["sha"])) <= MAX_ID_LENGTH]
        ctx.ingest.knowledge(
            external_id=repo, type="codebase", name=repo, url=f"{web}/{repo}", origin="github_sync",
            content=index_markdown(repo, branch, str(commit["sha"]), [e["path"] for e in files]),
            custom_fields={"repo_full_name": repo, "branch": branch, "commit_sha": commit["sha"]},
            updated_at=committed)
        keep: set[str] = set()
        for entry in files:
            if isinstance(ctx, SyncCtx):
                ctx.signal.raise_if_cancelled()
            path, sha = str(entry["path"]), str(entry["sha"])
            fid = file_id(repo, path, sha)
            keep.add(fid)
            if ctx.is_synced(fid):
                continue  # same blob SHA: neither fetched nor embedded again
            text = decode_text(gh.blob(repo, sha))
            if text is None:
                keep.discard(fid)
                if progress is not None:
                    progress("skipped", "binary content", external_id=fid)
                continue
            ctx.ingest.knowledge(
                external_id=fid, type="codebase", name=path, url=f"{web}/{repo}/blob/{branch}/{path}",
                content=file_markdown(path, text), origin="github_sync", parent_external_id=repo,
                custom_fields={"repo_full_name": repo, "path": path, "blob_sha": sha, "branch": branch},
                updated_at=committed)
        for old in sorted(ctx.services.get_synced_ids()):
            if old.startswith(repo + ":") and old not in keep:
                ctx.ingest.delete("knowledge", old)


def _on_codebase_event(ctx: WebhookCtx) -> None:
    """A ``push`` to the tracked branch of this stream's repository refreshes the codebase knowledge."""
    payload = _obj(ctx.payload)
    repository = _obj(payload.get("repository"))
    if ctx.headers.get("x-github-event") != "push" or repository.get("full_name") != _repo_of(ctx):
        return
    settings = ctx.settings if isinstance(ctx.settings, CodebaseSettings) else CodebaseSettings()
    filters = ctx.filters if isinstance(ctx.filters, CodebaseFilters) else CodebaseFilters()
    branch = settings.branch or filters.branch or repository.get("default_branch")
    if payload.get("ref") != f"refs/heads/{branch}":
        return
    _refresh_codebase(ctx)


# -- webhooks and handlers ---------------------------------------------------------------------------


def _resolve(event: WebhookEvent, ctx: Any) -> Any:
    """The app posts every installation's events to one URL: the installation id names the connections.

    ``installation`` events change the connections' state here and are not queued to any stream: an
    uninstalled or suspended installation can mint no token, so its connections are marked "reconnect
    needed" (their runs then fail with GitHub's refusal instead of retrying); an unsuspend clears it.
    """
    payload = _obj(event.payload)
    installation = _obj(payload.get("installation"))
    if installation.get("id") is None:
        if "zen" in payload:  # the ping GitHub sends when the webhook is set up
            return Response(body={"success": True, "ping": True})
        return None
    found = ctx.find_connections(str(installation["id"]))
    headers = {k.lower(): v for k, v in event.headers.items()}
    if headers.get("x-github-event") == "installation":
        return _on_installation_event(ctx, str(payload.get("action") or ""), installation, found)
    return found or None


def _on_installation_event(ctx: Any, action: str, installation: Mapping[str, Any], found: list[str]) -> Response:
    login = str(_obj(installation.get("account")).get("login") or "its account")
    reason = {"deleted": f"github: the app was uninstalled from {login} (installation {installation['id']})",
              "suspend": f"github: the app's installation on {login} (installation {installation['id']}) was "
                         "suspended; unsuspend it on GitHub"}.get(action)
    for cid in found:
        if reason is not None:
            ctx.mark_reconnect_needed(cid, reason)
        elif action == "unsuspend":
            ctx.clear_reconnect_needed(cid)
    return Response(body={"success": True, "installation": action, "connections": len(found)})


def _repos(request: Request, ctx: RouteCtx) -> Any:
    """``{repos}``: what the installation (or the token's user) reaches."""
    with GitHubClient(_http(ctx)) as gh:
        return {"repos": [_repo_entry(r) for r in gh.repositories(app=_is_app(ctx.credentials))]}


def _branches(request: Request, ctx: RouteCtx) -> Any:
    """``{branches}`` of ``?owner=&repo=``; GitHub's refusal status is passed through."""
    owner, name = request.query.get("owner", ""), request.query.get("repo", "")
    for field, value in (("owner", owner), ("repo", name)):
        if not _NAME.fullmatch(value):
            raise InputError(f"{field}: required, letters, digits, '.', '_' or '-'", field=field)
    try:
        with GitHubClient(_http(ctx)) as gh:
            branches = [{"name": b.get("name"), "sha": (b.get("commit") or {}).get("sha"),
                         "protected": b.get("protected")} for b in gh.branches(f"{owner}/{name}")]
    except ProviderError as exc:
        status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 600 else 502
        return Response(body={"error": str(exc)}, status=status)
    return {"branches": branches}


plugin = define_plugin(
    id="github",
    name="GitHub",
    description="Sync GitHub issues as feedback and codebase as knowledge.",
    category="issues",
    icon=Icon(inline_svg=LOGO, invert_in_dark=True),
    base_urls={"API": "https://api.github.com", "WEB": "https://github.com"},
    auth=GitHubAppAuth(
        app_slug_fallback_env="GITHUB_APP_NAME",
        on_installation=_on_installation,
        fields=(Field(id="pat", label="Personal access token", secret=True, required=True,
                      help_text="Instead of installing the app: a token with repo (or Issues + Contents: read)"),),
        test=_check_token,
    ),
    # One URL and one secret for the whole app; X-GitHub-Delivery dedupes redeliveries. SHA-256 only.
    webhook_signature=GitHubSignature(fallback=None),
    resolve_connection=_resolve,
    custom_handlers={"repos": _repos, "branches": _branches},
    connection_handlers=frozenset({"repos", "branches"}),
    docs_url="https://github.com/hissuno/hissuno-airflow/blob/main/docs/plugins/github.md",
    streams={
        "feedback": Stream(kind="sessions", label="Issue feedback", description="Repository issues as feedback sessions.",
                           sync=_sync_feedback, webhook=_on_feedback_event, instances=_list_repos,
                           filters=FeedbackFilters, settings=FeedbackSettings),
        "codebase": Stream(kind="knowledge", label="Codebase", description="Repository contents analyzed as knowledge.",
                           sync=_refresh_codebase, webhook=_on_codebase_event, instances=_list_repos,
                           filters=CodebaseFilters, settings=CodebaseSettings),
    },
)
