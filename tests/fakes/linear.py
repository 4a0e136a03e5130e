"""A stateful fake of Linear (``providers.md`` §3): OAuth 2.0 authorization server and GraphQL API in one.

OAuth (``tests.fakes.oauth.FakeOAuthServer``): ``GET /oauth/authorize`` demands ``prompt=consent`` and
splits scopes on commas; ``POST /oauth/token`` (client_secret_post, form body) answers 24-hour access
tokens (``expires_in`` 86399) and rotating refresh tokens (a used one is ``invalid_grant``); the code
exchange answers ``scope`` as a JSON array, as older Linear apps get it; ``POST /oauth/revoke``.

``POST /graphql`` behind a bearer token (401 with an ``authentication error`` GraphQL body otherwise). It
does not parse GraphQL: it answers by the operation name (``query Viewer``, ``Teams``, ``Team``,
``Issues``) and evaluates the ``IssueFilter`` passed as the ``filter`` variable (``team.id.eq``, ``id.eq``,
``updatedAt``/``createdAt`` with ``gt gte lt lte``, ``state.type.in``). ``issues`` is ordered by
``updatedAt`` with a keyset cursor (update time and id of the page's last issue), so an issue updated
mid-sync moves to the end and is listed again, never skipped; ``includeArchived`` is honoured.

Rate limits as Linear reports them: every GraphQL answer carries ``x-ratelimit-requests-*`` and
``x-ratelimit-complexity-*`` (limit, remaining, reset in epoch milliseconds) and ``x-complexity``; an
hourly request and complexity budget on the fake's clock; past either, 400 (or 429, ``limit_status``)
with a ``RATELIMITED`` error and no ``Retry-After``, as Linear does.

Issues are a ``RecordSet`` stamped ``createdAt``/``updatedAt`` a minute apart on the fake's clock
(``add_issues``, ``update_issue``, ``archive_issue``, ``delete_issue``); ``event(action, id)`` builds an
``Issue`` webhook body as Linear posts it (signed by ``tests.fakes.webhooks.Signer``).

The module also defines the conformance factories of ``tests/plugins/test_conformance.py``.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import time
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from hissuno_airflow.store import connections as repo
from tests.fakes.oauth import FakeOAuthServer
from tests.fakes.server import FakeClock, FakeRequest, FakeResponse, RecordSet, Reply, iso_z, post
from tests.fakes.webhooks import Signer

ORG = {"id": "org-8f1c", "name": "Acme Robotics", "urlKey": "acme"}
VIEWER = {"id": "user-1", "name": "Ada Lovelace", "email": "ada@acme.test"}
TEAMS = ({"id": "team-eng", "key": "ENG", "name": "Engineering"},
         {"id": "team-des", "key": "DES", "name": "Design"})
STATES = {
    "triage": {"id": "st-tri", "name": "Triage", "type": "triage"},
    "backlog": {"id": "st-bkl", "name": "Backlog", "type": "backlog"},
    "unstarted": {"id": "st-todo", "name": "Todo", "type": "unstarted"},
    "started": {"id": "st-prog", "name": "In Progress", "type": "started"},
    "completed": {"id": "st-done", "name": "Done", "type": "completed"},
    "canceled": {"id": "st-cxl", "name": "Canceled", "type": "canceled"},
}
LABELS = ({"id": "lb-bug", "name": "Bug"}, {"id": "lb-feat", "name": "Feature"},
          {"id": "lb-imp", "name": "Improvement"})
HOUR = 3600.0
_NESTED = ("state", "team", "labels", "assignee", "project")
"""Issue fields that are objects: answered only when the query selects them."""
_OPERATION = re.compile(r"^\s*(?:query|mutation)\s+([A-Za-z_]\w*)")


def gql_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """A GraphQL error body as Linear sends it."""
    extensions: dict[str, Any] = {"type": type_, "userPresentableMessage": message}
    if code:
        extensions["code"] = code
    return {"errors": [{"message": message, "extensions": extensions}], "data": None}


RATE_LIMITED = gql_error("Rate limit exceeded", "ratelimited", "RATELIMITED")
NOT_AUTHENTICATED = gql_error("Authentication required, not authenticated", "authentication error",
                              "AUTHENTICATION_ERROR")


def _ts(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _cursor(key: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _uncursor(text: str) -> tuple[float, str] | None:
    try:
        stamp, ident = json.loads(base64.urlsafe_b64decode(text.encode()))
        return float(stamp), str(ident)
    except (ValueError, TypeError):
        return None


def _compare(have: float, ops: dict[str, Any]) -> bool:
    for op, raw in ops.items():
        want = _ts(raw)
        ok = {"eq": have == want, "neq": have != want, "gt": have > want, "gte": have >= want,
              "lt": have < want, "lte": have <= want}.get(op)
        if ok is None:
            raise ValueError(f"DateComparator: unknown operator {op!r}")
        if not ok:
            return False
    return True


class FakeLinear(FakeOAuthServer):
    """Linear's authorization server and GraphQL API; see the module docstring."""

    name = "linear"
    require_auth = True
    client_id = "lin-client-id"
    client_secret = "lin-client-secret-5f2e"
    authorize_path = "/oauth/authorize"
    token_path = "/oauth/token"
    revoke_path = "/oauth/revoke"
    userinfo_path = None
    scope_separator = ","
    required_authorize_params = {"prompt": "consent"}
    access_ttl = 86399
    access_prefix = "lin_oauth_at"
    refresh_prefix = "lin_oauth_rt"
    account = ORG
    page_delay = 0.0
    """Seconds each ``issues`` page takes to answer (real time, outside the fake's lock): a long sync that a
    fault test can interrupt in the middle."""

    def __init__(self, per_team: int = 0, *, request_limit: int = 5000, complexity_limit: int = 250_000,
                 limit_status: int = 400, **knobs: Any) -> None:
        super().__init__(**knobs)
        self.teams = [dict(t) for t in TEAMS]
        self.issues = RecordSet(self.clock, created_field="createdAt", updated_field="updatedAt", resolution=60)
        self.request_limit, self.complexity_limit, self.limit_status = request_limit, complexity_limit, limit_status
        self._window = -1.0
        self.requests_used = 0
        self.complexity_used = 0
        self.limited = 0
        """GraphQL requests refused for a spent budget."""
        self.scope_as_array = True
        """Answer the code exchange's ``scope`` as a JSON array (older apps) instead of a comma string."""
        self._numbers: dict[str, int] = {}
        for team in self.teams:
            self.add_issues(team["id"], per_team)

    # -- data ------------------------------------------------------------------------------------

    def add_issues(self, team_id: str, n: int) -> list[dict[str, Any]]:
        """Append ``n`` issues to a team, a minute apart; states, priorities and labels cycle."""
        team = next(t for t in self.teams if t["id"] == team_id)
        out = []
        kinds = list(STATES)
        for _ in range(n):
            num = self._numbers[team_id] = self._numbers.get(team_id, 0) + 1
            labels = [LABELS[num % 4]] if num % 4 < 3 else []
            out.append(self.issues.add(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{team_id}/{num}")), identifier=f"{team['key']}-{num}",
                number=num, title=f"{team['name']} issue {num}: export fails on large files",
                description=f"Steps to reproduce {num}:\n\n1. Export\n2. Wait", priority=num % 5,
                priorityLabel=["No priority", "Urgent", "High", "Medium", "Low"][num % 5],
                url=f"https://linear.app/{ORG['urlKey']}/issue/{team['key']}-{num}",
                archivedAt=None, completedAt=None, canceledAt=None, startedAt=None,
                state=dict(STATES[kinds[num % len(kinds)]]), team=dict(team),
                labels={"nodes": [dict(lb) for lb in labels]}, assignee=None, project=None,
            ))
        return out

    def team_issues(self, team_id: str) -> list[dict[str, Any]]:
        """The team's live (unarchived) issues."""
        return [i for i in self.issues if i["team"]["id"] == team_id and not i["archivedAt"]]

    def update_issue(self, issue_id: str, **fields: Any) -> dict[str, Any]:
        """Change an issue (moves ``updatedAt``)."""
        return self.issues.update(issue_id, **fields)

    def archive_issue(self, issue_id: str) -> dict[str, Any]:
        """Archive an issue: ``archivedAt`` set, ``updatedAt`` moved."""
        return self.issues.update(issue_id, archivedAt=iso_z(self.clock()))

    def delete_issue(self, issue_id: str) -> dict[str, Any]:
        """Delete an issue for good (no longer listed, even archived)."""
        return self.issues.delete(issue_id)

    def event(self, action: str, issue_id: str, *, updated_from: dict[str, Any] | None = None,
              data: dict[str, Any] | None = None) -> dict[str, Any]:
        """An ``Issue`` entity webhook body (without ``webhookTimestamp``, which the signer adds)."""
        issue = self.issues.get(issue_id)
        snapshot = copy.deepcopy(issue) if issue is not None else {"id": issue_id}
        if issue is not None:
            snapshot.update(teamId=issue["team"]["id"], stateId=issue["state"]["id"],
                            labelIds=[lb["id"] for lb in issue["labels"]["nodes"]],
                            labels=issue["labels"]["nodes"])
        snapshot.update(data or {})
        body: dict[str, Any] = {"action": action, "type": "Issue", "createdAt": iso_z(self.clock()),
                                "actor": {"id": VIEWER["id"], "name": VIEWER["name"], "type": "user"},
                                "data": snapshot, "url": snapshot.get("url"), "organizationId": ORG["id"],
                                "webhookId": "wh-1"}
        if updated_from is not None:
            body["updatedFrom"] = updated_from
        return body

    # -- OAuth knobs Linear needs ----------------------------------------------------------------

    def _issue(self, account: dict[str, Any], scopes: tuple[str, ...], *, refresh: bool = True) -> dict[str, Any]:
        body = super()._issue(account, scopes, refresh=refresh)
        if scopes and self.scope_as_array:
            body["scope"] = list(scopes)
        return body

    # -- auth and rate limits --------------------------------------------------------------------

    def check_auth(self, req: FakeRequest) -> Reply | None:
        if req.path != "/graphql":
            return super().check_auth(req)
        if self.check_bearer(req) is not None:
            return FakeResponse(401, NOT_AUTHENTICATED)
        return None

    def _budget_headers(self) -> dict[str, str]:
        reset = str(int((self._window + HOUR) * 1000))
        return {
            "X-RateLimit-Requests-Limit": str(self.request_limit),
            "X-RateLimit-Requests-Remaining": str(max(0, self.request_limit - self.requests_used)),
            "X-RateLimit-Requests-Reset": reset,
            "X-RateLimit-Complexity-Limit": str(self.complexity_limit),
            "X-RateLimit-Complexity-Remaining": str(max(0, self.complexity_limit - self.complexity_used)),
            "X-RateLimit-Complexity-Reset": reset,
        }

    def _spend(self, cost: int) -> FakeResponse | None:
        """Charge one request of ``cost`` points; a refusal when a budget cannot pay for it."""
        start = math.floor(self.clock() / HOUR) * HOUR
        if start != self._window:
            self._window, self.requests_used, self.complexity_used = start, 0, 0
        if self.requests_used + 1 > self.request_limit or self.complexity_used + cost > self.complexity_limit:
            self.limited += 1
            return FakeResponse(self.limit_status, RATE_LIMITED, self._budget_headers())
        self.requests_used += 1
        self.complexity_used += cost
        return None

    # -- GraphQL ---------------------------------------------------------------------------------

    @post("/graphql")
    def graphql(self, req: FakeRequest) -> Reply:
        body = req.json() or {}
        match = _OPERATION.match(str(body.get("query") or ""))
        variables = body.get("variables") or {}
        op = match.group(1) if match else ""
        try:
            data, cost = self._answer(op, {**variables, "_document": body.get("query")})
        except ValueError as exc:
            return FakeResponse(400, gql_error(str(exc), "invalid input", "INVALID_INPUT"))
        refused = self._spend(cost)
        if refused is not None:
            return refused
        return FakeResponse(200, {"data": data}, {**self._budget_headers(), "X-Complexity": str(cost)})

    def _answer(self, op: str, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        if op == "Viewer":
            return {"viewer": dict(VIEWER), "organization": dict(ORG)}, 2
        if op in ("Teams", "Team"):
            wanted = ((variables.get("filter") or {}).get("id") or {}).get("eq")
            nodes = [dict(t) for t in self.teams if wanted is None or t["id"] == wanted]
            return {"teams": {"nodes": nodes, "pageInfo": {"hasNextPage": False, "endCursor": None}}}, 1 + len(nodes)
        if op == "Issues":
            return self._issues(variables)
        raise ValueError(f"Unknown operation {op or '(anonymous)'}")

    def _matches(self, issue: dict[str, Any], flt: dict[str, Any]) -> bool:
        for key, cond in flt.items():
            if key == "team":
                if issue["team"]["id"] != cond["id"]["eq"]:
                    return False
            elif key == "id":
                if issue["id"] != cond["eq"]:
                    return False
            elif key in ("updatedAt", "createdAt"):
                if not _compare(_ts(issue[key]), cond):
                    return False
            elif key == "state":
                if issue["state"]["type"] not in cond["type"]["in"]:
                    return False
            else:
                raise ValueError(f"IssueFilter: field {key!r} is not supported by this fake")
        return True

    def _issues(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        if self.page_delay:
            time.sleep(self.page_delay)
        first = int(variables.get("first") or 50)
        if not 1 <= first <= 250:
            raise ValueError("first: expected 1 to 250")
        flt = variables.get("filter") or {}
        rows = sorted((i for i in self.issues if self._matches(i, flt)), key=lambda i: (_ts(i["updatedAt"]), i["id"]))
        if after := variables.get("after"):
            key = _uncursor(str(after))
            if key is None:
                raise ValueError("after: not a cursor")
            rows = [i for i in rows if (_ts(i["updatedAt"]), i["id"]) > key]
        page, more = rows[:first], len(rows) > first
        # What the document does not select is not answered (the state, labels, team of each issue).
        document = str(variables.get("_document") or "")
        page = [{k: v for k, v in i.items() if k not in _NESTED or re.search(rf"\b{k}\b[^{{]*{{", document)}
                for i in page]
        end = _cursor((_ts(page[-1]["updatedAt"]), page[-1]["id"])) if page else None
        # Linear costs a connection by the nodes it may return (and their nested connections).
        cost = 1 + first * 2
        return {"issues": {"nodes": copy.deepcopy(page),
                           "pageInfo": {"hasNextPage": more, "endCursor": end}}}, cost

    # -- helpers for tests -----------------------------------------------------------------------

    def graphql_bodies(self, op: str | None = None) -> list[dict[str, Any]]:
        """The JSON bodies of ``/graphql`` requests (of operation ``op``), in order."""
        out = []
        for r in self.requests_to("/graphql"):
            body = r.json() or {}
            match = _OPERATION.match(str(body.get("query") or ""))
            if op is None or (match and match.group(1) == op):
                out.append(body)
        return out


# -- connecting without a browser ------------------------------------------------------------------


def oauth_env(monkeypatch: pytest.MonkeyPatch, fake: FakeLinear) -> None:
    """Point the plugin's bases at the fake and give the server its app credentials."""
    monkeypatch.setenv("HISSUNO_LINEAR_API_URL", fake.url)
    monkeypatch.setenv("HISSUNO_LINEAR_AUTH_URL", fake.url)
    monkeypatch.setenv("LINEAR_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("LINEAR_CLIENT_SECRET", fake.client_secret)


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, per_team: int, **kwargs: Any) -> FakeLinear:
    """Start the fake with ``per_team`` issues in each team and point the plugin at it."""
    kwargs.setdefault("clock", FakeClock().time)
    fake = serve_fake(FakeLinear(per_team, **kwargs))
    oauth_env(monkeypatch, fake)
    return fake


def connect(store: Any, fake: FakeLinear, *, user_id: str = "tester", reconnect_id: str | None = None) -> str:
    """The whole OAuth round trip in process: authorize URL, the fake's consent, the callback."""
    from hissuno_airflow.runtime.connect import finish_callback, start_oauth

    plugin = registry.get_plugin("linear")
    started = start_oauth(plugin, store, project_id=settings.default_project_id(), user_id=user_id,
                          redirect_uri="http://127.0.0.1:9/callback", reconnect_id=reconnect_id)
    location = httpx.get(started["authorize_url"], follow_redirects=False, timeout=10).headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    back = finish_callback("linear", query, store, user_id=user_id)
    assert back.get("connected") == "1", back
    return back["connection"]


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Six issues in Engineering, in pages of the plugin's size, connected by the OAuth round trip."""
    fake = serve(monkeypatch, serve_fake, 6)
    return ConformanceTarget(connection_id=connect(store, fake), stream_ids=(f"issues:{TEAMS[0]['id']}",))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A token response the fake issued, and one whose access token it revoked."""
    fake = serve(monkeypatch, serve_fake, 0)
    good = fake.seed_tokens()
    bad = fake.seed_tokens()
    fake.revoke_token(bad["access_token"])
    return AuthTarget(good=good, bad=bad)


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """A connection with Engineering enabled and a ``webhook_secret``; payloads are issue updates."""
    fake = serve(monkeypatch, serve_fake, 1)
    cid = connect(store, fake)
    signer = Signer(registry.get_plugin("linear").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    issue_id = fake.team_issues(TEAMS[0]["id"])[0]["id"]

    def payload(event_id: str) -> dict[str, Any]:
        return {**fake.event("update", issue_id), "webhookId": event_id}

    return WebhookTarget(sign=signer, forge=signer.forged(), connection_id=cid, payload=payload,
                         stream_ids=(f"issues:{TEAMS[0]['id']}",))
