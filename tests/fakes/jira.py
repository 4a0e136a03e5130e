"""A stateful fake of Jira Cloud behind the Atlassian API gateway, with its 3LO authorization server
(providers.md §4), served on 127.0.0.1.

One server plays ``auth.atlassian.com`` and ``api.atlassian.com`` (point ``HISSUNO_JIRA_AUTH_URL`` and
``HISSUNO_JIRA_API_URL`` at it):

- ``GET /authorize`` requires ``audience=api.atlassian.com``, ``prompt=consent`` and space-separated
  scopes; ``POST /oauth/token`` takes only a JSON body (client id and secret inside it; a form body is
  ``invalid_request``, HTTP 400) and answers a refresh token only when ``offline_access``
  was granted, rotates refresh tokens (a used or revoked one is ``invalid_grant`` with HTTP 403, as
  Atlassian answers);
- ``GET /oauth/token/accessible-resources``: every site of the grant, plus a Confluence-only site;
- ``GET /ex/jira/{cloudId}/rest/api/3/myself`` (``timeZone`` is the fake user's zone, in which JQL date
  literals are read), ``/project/search`` (page bean, ``startAt``/``maxResults``/``isLast``),
  ``/search/jql`` (``jql``, ``fields`` — only ``id`` unless asked —, ``maxResults``, ``nextPageToken``,
  ``isLast``; the JQL subset the plugin writes is parsed, anything else is a 400 as Jira answers),
  ``/issue/{id}`` (404 once deleted), ``/issue/createmeta/{key}/issuetypes``; the removed
  ``/rest/api/3/search`` answers 410 Gone.

Issues are ``RecordSet`` records per site, stamped on the fake clock in Jira's
``2024-05-01T12:34:56.789+0000`` format; ``update_issue`` and ``delete_issue`` mutate them, ``event``
builds an admin-webhook body (``X-Hub-Signature`` signing via ``tests.fakes.webhooks.Signer``). The
conformance factories of ``tests/plugins/test_conformance.py`` are at the end.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit.auth import OAuthTokens
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from hissuno_airflow.store import connections as repo
from tests.fakes.oauth import FakeOAuthServer
from tests.fakes.server import FakeRequest, FakeResponse, RecordSet, Reply, get
from tests.fakes.webhooks import Signer

API = "/ex/jira/{cloud}/rest/api/3"
SITE_A = {"id": "a1a1a1a1-0000-4000-8000-00000000000a", "url": "https://acme.atlassian.net", "name": "acme",
          "scopes": ["read:jira-work", "read:jira-user"], "avatarUrl": "https://site-admin-avatar-cdn/a.png"}
SITE_B = {"id": "b2b2b2b2-0000-4000-8000-00000000000b", "url": "https://beta-labs.atlassian.net", "name": "beta-labs",
          "scopes": ["read:jira-work", "read:jira-user"], "avatarUrl": "https://site-admin-avatar-cdn/b.png"}
CONFLUENCE = {"id": "c3c3c3c3-0000-4000-8000-00000000000c", "url": "https://acme.atlassian.net/wiki",
              "name": "acme wiki", "scopes": ["read:confluence-content.all"], "avatarUrl": ""}
USER = {"accountId": "5b10a2844c20165700ede21g", "accountType": "atlassian", "displayName": "Ada Atlas",
        "emailAddress": "ada@acme.example", "active": True, "timeZone": "America/Los_Angeles", "locale": "en_US"}
TYPES = [{"id": "10001", "name": "Bug", "subtask": False}, {"id": "10002", "name": "Story", "subtask": False},
         {"id": "10003", "name": "Task", "subtask": False}]
STATUSES = {"new": ("To Do", "To Do"), "indeterminate": ("In Progress", "In Progress"), "done": ("Done", "Done")}
SCOPES = ("read:jira-work", "read:jira-user", "offline_access")


def jira_time(ts: float) -> str:
    """Epoch seconds as Jira writes times: ``2024-05-01T12:34:56.789+0000``."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


def adf(text: str) -> dict[str, Any]:
    """``text`` as an Atlassian Document Format document: a paragraph and a bullet list."""
    return {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": text}]},
        {"type": "bulletList", "content": [
            {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "steps"}]}]}]},
    ]}


def _token(position: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode()


class FakeJira(FakeOAuthServer):
    """Atlassian's authorization server and Jira Cloud REST v3 for two sites; see the module docstring."""

    name = "jira"
    client_id = "jira-client"
    client_secret = "jira-client-secret"
    authorize_path = "/authorize"
    token_path = "/oauth/token"
    token_body = "json"
    revoke_path = None
    userinfo_path = None
    required_authorize_params = {"audience": "api.atlassian.com", "prompt": "consent"}
    allowed_scopes = frozenset({*SCOPES, "manage:jira-webhook", "write:jira-work"})
    access_ttl = 3600

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sites: dict[str, dict[str, Any]] = {SITE_A["id"]: dict(SITE_A), SITE_B["id"]: dict(SITE_B)}
        self.granted = [SITE_A["id"], SITE_B["id"], CONFLUENCE["id"]]
        """Resources the grant reaches, in Atlassian's order."""
        self.user = dict(USER)
        self.projects: dict[str, list[dict[str, Any]]] = {
            SITE_A["id"]: [{"id": "10000", "key": "ENG", "name": "Engineering", "projectTypeKey": "software"},
                           {"id": "10001", "key": "OPS", "name": "Operations", "projectTypeKey": "business"}],
            SITE_B["id"]: [{"id": "10000", "key": "ENG", "name": "Beta Engineering", "projectTypeKey": "software"}],
        }
        self.issues = {cid: RecordSet(self.clock, created_field="created", updated_field="updated", fmt=jira_time,
                                      resolution=7) for cid in self.sites}
        self._offline = True

    # --- data -----------------------------------------------------------------------------------

    def add_issues(self, n: int, *, site: str = SITE_A["id"], project: str = "ENG") -> list[dict[str, Any]]:
        """``n`` issues of ``project`` on ``site``, cycling through types, statuses and priorities."""
        rs = self.issues[site]
        out = []
        for _ in range(n):
            number = len(rs) + len(rs.deleted) + 1
            nid = str(10000 + number)
            kinds = ["Bug", "Story", "Task"]
            cats = ["new", "indeterminate", "done"]
            prios = ["Highest", "Medium", "Low", None]
            out.append(rs.add(id=nid, key=f"{project}-{number}", project=project, summary=f"{project} issue {number}",
                              description=adf(f"Issue {number} of {project}: the export times out."),
                              issuetype=kinds[number % 3], category=cats[number % 3], priority=prios[number % 4],
                              labels=["customer"] if number % 2 else []))
        return out

    def update_issue(self, issue_id: str, *, site: str = SITE_A["id"], **fields: Any) -> dict[str, Any]:
        return self.issues[site].update(issue_id, **fields)

    def delete_issue(self, issue_id: str, *, site: str = SITE_A["id"]) -> dict[str, Any]:
        return self.issues[site].delete(issue_id)

    def project_issues(self, site: str, project: str) -> list[dict[str, Any]]:
        return [r for r in self.issues[site] if r["project"] == project]

    def render(self, rec: dict[str, Any], site: str, fields: set[str] | None = None) -> dict[str, Any]:
        """An issue as Jira answers it, with ``fields`` (None: all)."""
        project = next(p for p in self.projects[site] if p["key"] == rec["project"])
        status_name, cat_name = STATUSES[rec["category"]]
        every = {
            "summary": rec["summary"], "description": rec["description"],
            "status": {"id": "1", "name": status_name, "statusCategory": {"key": rec["category"], "name": cat_name}},
            "issuetype": next(t for t in TYPES if t["name"] == rec["issuetype"]),
            "project": {"id": project["id"], "key": project["key"], "name": project["name"]},
            "priority": {"id": "3", "name": rec["priority"]} if rec["priority"] else None,
            "labels": rec["labels"], "created": rec["created"], "updated": rec["updated"],
            "reporter": {"accountId": USER["accountId"], "displayName": USER["displayName"]},
        }
        chosen = every if fields is None else {k: v for k, v in every.items() if k in fields}
        return {"id": rec["id"], "key": rec["key"], "self": f"{self.url}{API.format(cloud=site)}/issue/{rec['id']}",
                "fields": chosen}

    def event(self, kind: str, issue_id: str, *, site: str = SITE_A["id"], at: float | None = None,
              project: str | None = None) -> dict[str, Any]:
        """An admin-webhook body (``jira:issue_updated``...) for an issue, live or deleted.

        Like Jira's webhooks it carries API v2 fields: the description is wiki markup, not ADF.
        """
        rec = self.issues[site].get(issue_id) or {"id": issue_id, "key": f"{project or 'ENG'}-0",
                                                  "project": project or "ENG", "summary": "gone"}
        site_url = self.sites[site]["url"]
        return {"timestamp": int((self.clock() if at is None else at) * 1000), "webhookEvent": kind,
                "issue_event_type_name": kind.removeprefix("jira:"),
                "user": {"accountId": USER["accountId"], "displayName": USER["displayName"]},
                "issue": {"id": rec["id"], "key": rec["key"], "self": f"{site_url}/rest/api/2/issue/{rec['id']}",
                          "fields": {"summary": rec["summary"], "description": "h1. wiki markup",
                                     "project": {"key": project or rec["project"]}}}}

    # --- OAuth: offline_access decides the refresh token; invalid_grant is a 403 ----------------------

    def _exchange(self, form: Any) -> Reply:
        grant = self.codes.get(form.get("code", ""))
        self._offline = grant is None or "offline_access" in grant.scopes
        try:
            return super()._exchange(form)
        finally:
            self._offline = True

    def _issue(self, account: dict[str, Any], scopes: tuple[str, ...], *, refresh: bool = True) -> dict[str, Any]:
        return super()._issue(account, scopes, refresh=refresh and self._offline)

    def _refresh(self, form: Any) -> Reply:
        answer = super()._refresh(form)
        if isinstance(answer, FakeResponse) and answer.status == 400:
            return FakeResponse(403, answer.body)
        return answer

    # --- gateway ----------------------------------------------------------------------------------

    def handle(self, req: FakeRequest) -> FakeResponse:
        response = super().handle(req)
        response.headers.setdefault("X-RateLimit-Limit", "350")
        response.headers.setdefault("X-RateLimit-Remaining", "349")
        return response

    def _site(self, req: FakeRequest, cloud: str) -> Reply | None:
        refused = self.check_bearer(req)
        if refused is not None:
            return refused
        if cloud not in self.sites or cloud not in self.granted:
            return FakeResponse(404, {"errorMessages": ["Site not found or not accessible."]})
        return None

    @get("/oauth/token/accessible-resources")
    def accessible_resources(self, req: FakeRequest) -> Reply:
        refused = self.check_bearer(req)
        if refused is not None:
            return refused
        everything = {**self.sites, CONFLUENCE["id"]: CONFLUENCE}
        return [everything[c] for c in self.granted]

    @get(API.format(cloud="{cloud}") + "/myself")
    def myself(self, req: FakeRequest, cloud: str) -> Reply:
        return self._site(req, cloud) or {**self.user, "self": f"{self.url}{API.format(cloud=cloud)}/user"}

    @get(API.format(cloud="{cloud}") + "/project/search")
    def project_search(self, req: FakeRequest, cloud: str) -> Reply:
        refused = self._site(req, cloud)
        if refused is not None:
            return refused
        start, size = int(req.query.get("startAt") or 0), min(int(req.query.get("maxResults") or 50), 50)
        rows = sorted(self.projects[cloud], key=lambda p: p["key"])
        page = rows[start: start + size]
        return {"startAt": start, "maxResults": size, "total": len(rows), "isLast": start + size >= len(rows),
                "values": page}

    @get("/rest/api/3/search")
    def removed_search(self, req: FakeRequest) -> Reply:
        return FakeResponse(410, {"errorMessages": ["The requested API has been removed."]})

    @get(API.format(cloud="{cloud}") + "/search")
    def removed_site_search(self, req: FakeRequest, cloud: str) -> Reply:
        return FakeResponse(410, {"errorMessages": ["The requested API has been removed."]})

    @get(API.format(cloud="{cloud}") + "/search/jql")
    def search_jql(self, req: FakeRequest, cloud: str) -> Reply:
        refused = self._site(req, cloud)
        if refused is not None:
            return refused
        try:
            match = self.jql_filter(req.query.get("jql") or "")
        except ValueError as exc:
            return FakeResponse(400, {"errorMessages": [str(exc)], "errors": {}})
        size = min(int(req.query.get("maxResults") or 50), 5000)
        fields = {f for f in (req.query.get("fields") or "id").split(",") if f}
        rs = self.issues[cloud]
        rows = sorted(((rs.stamps[str(r["id"])], str(r["id"])), r) for r in rs if match(r, rs.stamps[str(r["id"])]))
        token = req.query.get("nextPageToken")
        if token:
            after = tuple(json.loads(base64.urlsafe_b64decode(token)))
            rows = [(k, r) for k, r in rows if k > after]  # keyset: a record updated mid-sync comes again later
        page = rows[:size]
        last = len(rows) <= size
        body: dict[str, Any] = {"issues": [self.render(r, cloud, fields) for _, r in page], "isLast": last}
        if not last:
            body["nextPageToken"] = _token(page[-1][0])
        return body

    @get(API.format(cloud="{cloud}") + "/issue/{issue_id}")
    def show_issue(self, req: FakeRequest, cloud: str, issue_id: str) -> Reply:
        refused = self._site(req, cloud)
        if refused is not None:
            return refused
        rec = self.issues[cloud].get(issue_id)
        if rec is None:
            return FakeResponse(404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]})
        fields = req.query.get("fields")
        return self.render(rec, cloud, set(fields.split(",")) if fields else None)

    @get(API.format(cloud="{cloud}") + "/issue/createmeta/{key}/issuetypes")
    def create_meta(self, req: FakeRequest, cloud: str, key: str) -> Reply:
        refused = self._site(req, cloud)
        if refused is not None:
            return refused
        if key not in {p["key"] for p in self.projects[cloud]}:
            return FakeResponse(404, {"errorMessages": [f"No project could be found with key '{key}'."]})
        types = [{**t, "description": f"A {t['name'].lower()}", "iconUrl": f"https://icons/{t['id']}.svg"}
                 for t in TYPES]
        return {"startAt": 0, "maxResults": 50, "total": len(types), "issueTypes": types}

    # --- the JQL the plugin writes ------------------------------------------------------------------

    def jql_filter(self, jql: str) -> Any:
        """A predicate ``(record, updated epoch) -> bool`` for the subset of JQL the plugin writes.

        Date literals are read in the user's ``timeZone``, at minute precision, as Jira reads them.
        """
        body, _, order = jql.partition(" ORDER BY ")
        if order.strip() not in ("updated ASC, id ASC", ""):
            raise ValueError(f"unsupported ORDER BY {order!r}")
        zone = ZoneInfo(self.user["timeZone"])
        tests: list[Any] = []
        if "project" not in body:
            raise ValueError("Unbounded JQL queries are not allowed here.")
        for clause in _split_and(body):
            if m := re.fullmatch(r'project = "([A-Z0-9_]+)"', clause):
                tests.append(lambda r, t, k=m[1]: r["project"] == k)
            elif m := re.fullmatch(r'updated (>=|<=) "(\d{4}-\d\d-\d\d \d\d:\d\d)"', clause):
                bound = datetime.strptime(m[2], "%Y-%m-%d %H:%M").replace(tzinfo=zone).timestamp()
                if m[1] == ">=":
                    tests.append(lambda r, t, b=bound: t >= b)
                else:
                    tests.append(lambda r, t, b=bound: t <= b + 59.999)
            elif m := re.fullmatch(r"issuetype in \((.*)\)", clause):
                names = set(re.findall(r'"([^"]*)"', m[1]))
                tests.append(lambda r, t, n=names: r["issuetype"] in n)
            elif m := re.fullmatch(r"statusCategory in \((.*)\)", clause):
                cats = set(re.findall(r'"([^"]*)"', m[1]))
                tests.append(lambda r, t, c=cats: r["category"] in c)
            elif m := re.fullmatch(r'\(labels = "?([\w-]+)"?\)', clause):
                tests.append(lambda r, t, label=m[1]: label in r["labels"])
            else:
                raise ValueError(f"Error in the JQL Query: unsupported clause {clause!r}")
        return lambda r, t: all(test(r, t) for test in tests)


def _split_and(jql: str) -> list[str]:
    out, depth, cur, i = [], 0, "", 0
    while i < len(jql):
        if jql[i] == "(":
            depth += 1
        elif jql[i] == ")":
            depth -= 1
        if depth == 0 and jql.startswith(" AND ", i):
            out.append(cur.strip())
            cur, i = "", i + 5
            continue
        cur += jql[i]
        i += 1
    return [*out, cur.strip()] if cur.strip() else out


# --- wiring ---------------------------------------------------------------------------------------


def token_grants(fake: FakeJira) -> list[dict[str, Any]]:
    """The JSON bodies of every ``POST /oauth/token`` so far, each checked to have come as Atlassian takes it:
    ``Content-Type: application/json``, no query string, no ``Authorization`` header (the client secret
    travels in the JSON body only)."""
    out = []
    for req in fake.requests_to(fake.token_path, "POST"):
        assert (req.header("content-type") or "").startswith("application/json"), req.header("content-type")
        assert not req.query_list and req.header("authorization") is None
        body = req.json()
        assert isinstance(body, dict) and all(isinstance(v, str) for v in body.values()), body
        out.append(body)
    return out


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, count: int = 0, clock: Any = None) -> FakeJira:
    """The fake with ``count`` ENG issues on site A (and a few elsewhere), the plugin pointed at it."""
    fake = serve_fake(FakeJira(**({"clock": clock} if clock else {})))
    fake.add_issues(count)
    fake.add_issues(2, project="OPS")
    fake.add_issues(3, site=SITE_B["id"])
    monkeypatch.setenv("HISSUNO_JIRA_API_URL", fake.url)
    monkeypatch.setenv("HISSUNO_JIRA_AUTH_URL", fake.url)
    monkeypatch.setenv("JIRA_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("JIRA_CLIENT_SECRET", fake.client_secret)
    return fake


def connect(store: Any, fake: FakeJira) -> str:
    """A connection made by the plugin's own ``on_token_exchanged`` and the callback's save, without a browser."""
    from hissuno_airflow.runtime.connect.accounts import as_auth_result, auth_ctx, save_auth_result
    from hissuno_airflow.runtime.connect.oauth2 import _tokens
    from hissuno_airflow.runtime.handlers import call_handler

    plugin = registry.get_plugin("jira")
    tokens = _tokens(fake.seed_tokens(scopes=SCOPES))
    project = settings.default_project_id()
    ctx = auth_ctx(plugin, store, project, "tester")
    result = as_auth_result(call_handler(plugin.auth.on_token_exchanged, tokens, ctx), plugin)  # type: ignore[union-attr]
    base = {k: v for k, v in tokens.model_dump(exclude={"raw"}).items() if v is not None}
    result = result.model_copy(update={"credentials": {**base, **result.credentials}})
    row, _ = save_auth_result(store, plugin, project, result)
    return row.id


ENG_A = f"issues:{SITE_A['id']}/ENG"
ENG_B = f"issues:{SITE_B['id']}/ENG"


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Seven ENG issues on site A, three on site B, connected through the plugin's token handler."""
    fake = serve(monkeypatch, serve_fake, 7)
    return ConformanceTarget(connection_id=connect(store, fake), stream_ids=(ENG_A, ENG_B))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A token response the fake issued, and one whose access token it revoked."""
    fake = serve(monkeypatch, serve_fake, 1)
    good = fake.seed_tokens(scopes=SCOPES)
    bad = fake.seed_tokens(scopes=SCOPES)
    fake.revoke_token(bad["access_token"])
    return AuthTarget(good=good, bad=bad)


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """A connection whose ``webhook_secret`` is the signer's, its ENG (site A) stream receiving the events."""
    plugin = registry.get_plugin("jira")
    fake = serve(monkeypatch, serve_fake, 1)
    cid = connect(store, fake)
    signer = Signer(plugin.webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    issue_id = fake.issues[SITE_A["id"]][0]["id"]
    return WebhookTarget(sign=signer, forge=signer.forged(), connection_id=cid, stream_ids=(ENG_A,),
                         payload=lambda event_id: fake.event("jira:issue_updated", issue_id))


__all__ = ["ENG_A", "ENG_B", "SITE_A", "SITE_B", "FakeJira", "OAuthTokens", "adf", "connect", "jira_time", "serve"]
