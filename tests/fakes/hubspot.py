"""A stateful fake of HubSpot (providers.md §8): its OAuth server and the CRM v3 API, on 127.0.0.1.

OAuth (``FakeOAuthServer``): ``GET /oauth/authorize`` (space-separated scopes), ``POST /oauth/v1/token``
(form-encoded, ``client_secret_post``, snake_case answer with ``expires_in: 1800``), refresh tokens rotated
(the issue's premise; ``rotate_refresh_tokens=False`` gives the reusable kind providers.md describes), and
the who-am-I ``GET /oauth/v1/access-tokens/{token}`` (``hub_id``, ``hub_domain``; 404 for an unknown or
dead token). Every CRM route demands a live bearer token (401 ``token_expired`` once expired).

CRM, for ``contacts`` and ``companies``:

- ``POST /crm/v3/objects/{type}/search``: ``filterGroups`` on the last-modified property (``lastmodifieddate``,
  ``hs_lastmodifieddate``; operators GTE/GT/LT/LTE, values epoch ms), ``sorts`` by it, ``limit`` at most 200,
  ``after``; ``{total, results, paging.next.after}``. Like HubSpot it refuses to page past ``search_cap``
  results (400), and a page that ends at the cap still links to the next one. Search answers carry no
  rate-limit headers; ``search_per_second`` (by the fake clock) answers 429 ``SECONDLY`` without Retry-After.
- ``GET /crm/v3/objects/{type}?archived=true``: archived objects (``archived``, ``archivedAt``), paged by ``after``.
- ``GET /crm/v3/objects/{type}/{id}``: one live object (404 once archived).
- ``POST /crm/v4/associations/contacts/companies/batch/read`` and ``POST /crm/v3/objects/companies/batch/read``.

Objects are ``RecordSet`` rows on the fake's clock (``updatedAt`` in ISO with milliseconds, mirrored in the
last-modified property); ``update``, ``archive``, ``restore``, ``associate`` mutate them. Every other answer
carries ``X-HubSpot-RateLimit-*``. ``event(...)`` builds a webhook event; ``Signer(HubSpotV3())`` signs a
batch as HubSpot does. The conformance factories are at the end.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from tests.fakes.oauth import FakeOAuthServer
from tests.fakes.server import FakeClock, FakeRequest, FakeResponse, RecordSet, Reply, get, post
from tests.fakes.webhooks import Signer

HUB_ID = 62515
HUB_DOMAIN = "acme-corp.hubspot.com"
CLIENT_ID = "hs-client-id"
CLIENT_SECRET = "hs-client-secret-0123456789"
MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
INDUSTRIES = ("COMPUTER_SOFTWARE", "RETAIL", None)


def iso_ms(ts: float) -> str:
    """Epoch seconds as HubSpot writes times: ``2023-11-14T22:13:20.123Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{round(ts * 1000) % 1000:03d}Z"


def _error(status: int, message: str, category: str, **extra: Any) -> FakeResponse:
    return FakeResponse(status, {"status": "error", "message": message, "correlationId": "c0ffee", "category": category,
                                 **extra})


class FakeHubSpot(FakeOAuthServer):
    """HubSpot's OAuth server and CRM; see the module docstring."""

    name = "hubspot"
    require_auth = True
    client_id = CLIENT_ID
    client_secret = CLIENT_SECRET
    authorize_path = "/oauth/authorize"
    token_path = "/oauth/v1/token"
    revoke_path = None
    userinfo_path = None
    access_ttl = 1800
    account = {"hub_id": HUB_ID, "hub_domain": HUB_DOMAIN, "user": "ada@acme-corp.com"}
    search_cap = 10_000
    search_per_second: int | None = None
    """Search requests allowed per second of the fake clock (None: unlimited)."""

    def __init__(self, companies: int = 0, contacts: int = 0, *, search_cap: int = 10_000,
                 search_per_second: int | None = None, ten_second_limit: int = 110, **knobs: Any) -> None:
        super().__init__(**knobs)
        self.search_cap, self.search_per_second = search_cap, search_per_second
        self.ten_second_limit = ten_second_limit
        """Non-search CRM requests allowed per rolling 10 s of the fake clock (HubSpot: 110 for OAuth apps)."""
        self.limited = 0
        """429s answered for the 10-second limit."""
        self.refused_tokens: list[str | None] = []
        """Bearer tokens the CRM answered 401 to, in order."""
        self.objects = {t: RecordSet(self.clock, created_field="createdAt", updated_field="updatedAt", fmt=iso_ms,
                                     resolution=1.0) for t in ("contacts", "companies")}
        self.archived: dict[str, dict[str, dict[str, Any]]] = {"contacts": {}, "companies": {}}
        self.links: dict[str, list[tuple[str, bool]]] = {}
        """Contact id -> (company id, primary) associations."""
        self.add_companies(companies)
        self.add_contacts(contacts)

    # -- data ----------------------------------------------------------------------------------------

    def _add(self, object_type: str, props: dict[str, Any], at: float | None = None) -> dict[str, Any]:
        rs = self.objects[object_type]
        record = rs.add({"id": str(1000 + len(rs) + len(self.archived[object_type]) + 1), "properties": props},
                        at=at)
        return self._stamp(object_type, record)

    def _stamp(self, object_type: str, record: dict[str, Any]) -> dict[str, Any]:
        props = record["properties"]
        props["hs_object_id"] = record["id"]
        props["createdate"] = record["createdAt"]
        props[MODIFIED[object_type]] = record["updatedAt"]
        record["archived"] = False
        return record

    def add_companies(self, n: int, *, at: float | None = None, **props: Any) -> list[dict[str, Any]]:
        """``n`` companies ``Company <i>`` with domain ``company<i>.example`` (every 5th has none)."""
        out = []
        for _ in range(n):
            i = len(self.objects["companies"]) + len(self.archived["companies"]) + 1
            fields = {"name": f"Company {i}", "domain": None if i % 5 == 0 else f"company{i}.example",
                      "industry": INDUSTRIES[i % 3], "country": "France", "numberofemployees": str(10 * i),
                      "annualrevenue": f"{i}000000.5", "description": f"Customer number {i}", "phone": None,
                      "website": f"https://company{i}.example", "notes_last_updated": None, **props}
            out.append(self._add("companies", fields, at))
        return out

    def add_contacts(self, n: int, *, at: float | None = None, **props: Any) -> list[dict[str, Any]]:
        """``n`` contacts (every 7th without an email), each associated with a company when there are any:
        contact i's primary company is company ``i mod companies``, plus an unlabeled second one."""
        out = []
        companies = list(self.objects["companies"])
        for _ in range(n):
            i = len(self.objects["contacts"]) + len(self.archived["contacts"]) + 1
            fields = {"firstname": f"Ada{i}", "lastname": "Lovelace", "email": None if i % 7 == 0 else f"ada{i}@mail.example",
                      "phone": f"+33 1 00 00 {i:04d}", "jobtitle": "Engineer", "company": f"Free text {i} Inc",
                      "lifecyclestage": "customer", "notes_last_updated": None, **props}
            contact = self._add("contacts", fields, at)
            if companies:
                first = companies[i % len(companies)]["id"]
                second = companies[(i + 1) % len(companies)]["id"]
                self.links[contact["id"]] = [(second, False), (first, True)] if second != first else [(first, True)]
            out.append(contact)
        return out

    def update(self, object_type: str, object_id: str, **props: Any) -> dict[str, Any]:
        """Change properties; ``updatedAt`` and the last-modified property move on."""
        rs = self.objects[object_type]
        record = rs.get(object_id)
        assert record is not None, f"no live {object_type} {object_id}"
        return self._stamp(object_type, rs.update(object_id, properties={**record["properties"], **props}))

    def archive(self, object_type: str, object_id: str) -> dict[str, Any]:
        """Archive (HubSpot's delete): gone from search and reads, listed with ``archived=true``."""
        record = self.objects[object_type].delete(object_id)
        record = {**record, "archived": True, "archivedAt": iso_ms(self.objects[object_type].deleted[object_id])}
        self.archived[object_type][object_id] = record
        return record

    def purge(self, object_type: str, object_id: str) -> None:
        """Delete for good (a GDPR deletion, a merged-away record): no archive is left behind."""
        self.objects[object_type].delete(object_id)
        self.links.pop(object_id, None)

    def restore(self, object_type: str, object_id: str) -> dict[str, Any]:
        """Un-archive: back in search with a new modification time."""
        record = self.archived[object_type].pop(object_id)
        record.pop("archivedAt", None)
        rs = self.objects[object_type]
        rs.deleted.pop(object_id, None)
        stamped = rs.add({k: v for k, v in record.items() if k not in ("updatedAt",)})
        return self._stamp(object_type, stamped)

    def associate(self, contact_id: str, company_id: str) -> None:
        """Make ``company_id`` the contact's only (primary) company; the contact counts as modified."""
        self.links[contact_id] = [(company_id, True)]
        self.update("contacts", contact_id)

    def live(self, object_type: str) -> list[dict[str, Any]]:
        """Live objects."""
        return list(self.objects[object_type])

    # -- auth and headers ------------------------------------------------------------------------------

    def check_auth(self, req: FakeRequest) -> Reply | None:
        if req.path.startswith("/oauth/v1/access-tokens/"):
            return None
        refused = super().check_auth(req)
        if refused is not None:
            self.refused_tokens.append(req.bearer_token)
            status = refused.status if isinstance(refused, FakeResponse) else 401
            return _error(status, "Authentication credentials not found.", "INVALID_AUTHENTICATION")
        return None

    def handle(self, req: FakeRequest) -> FakeResponse:
        if req.path.endswith("/search") or req.path.startswith("/oauth/"):
            return super().handle(req)  # search answers carry no rate-limit headers
        now = self.clock()
        with self._lock:
            used = 1 + sum(1 for r in self.requests if now - 10 < r.at <= now and not r.path.endswith("/search")
                           and not r.path.startswith("/oauth/"))
        if used > self.ten_second_limit:
            self.requests.append(req)
            req.at = now
            self.limited += 1
            return _error(429, "You have reached your ten_secondly_rolling limit.", "RATE_LIMITS",
                          errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING")
        resp = super().handle(req)
        headers = dict(resp.headers)
        headers.setdefault("X-HubSpot-RateLimit-Interval-Milliseconds", "10000")
        headers.setdefault("X-HubSpot-RateLimit-Max", str(self.ten_second_limit))
        headers.setdefault("X-HubSpot-RateLimit-Remaining", str(max(0, self.ten_second_limit - used)))
        return FakeResponse(resp.status, resp.json, headers, resp.body, resp.content_type)

    # -- routes --------------------------------------------------------------------------------------

    @get("/oauth/v1/access-tokens/{token}")
    def token_info(self, req: FakeRequest, token: str) -> Reply:
        if not self.token_valid(token):
            return _error(404, "access token not found", "OBJECT_NOT_FOUND")
        account = self.token_accounts.get(token, self.account)
        return {"token": token, "user": account["user"], "hub_domain": account["hub_domain"],
                "scopes": ["oauth", "crm.objects.contacts.read", "crm.objects.companies.read"],
                "hub_id": account["hub_id"], "app_id": 4242, "expires_in": 1700, "user_id": 7,
                "token_type": "access"}

    def _render(self, object_type: str, record: dict[str, Any], properties: list[str] | None) -> dict[str, Any]:
        props = record["properties"]
        wanted = properties or list(props)
        keep = {k: props.get(k) for k in {*wanted, "hs_object_id", "createdate", MODIFIED[object_type]}}
        out = {"id": record["id"], "properties": keep, "createdAt": record["createdAt"],
               "updatedAt": record["updatedAt"], "archived": record.get("archived", False)}
        if record.get("archivedAt"):
            out["archivedAt"] = record["archivedAt"]
        return out

    @post("/crm/v3/objects/{object_type}/search")
    def search(self, req: FakeRequest, object_type: str) -> Reply:
        if object_type not in self.objects:
            return _error(404, f"unknown object type {object_type}", "OBJECT_NOT_FOUND")
        if self.search_per_second is not None:
            now = self.clock()
            recent = [r for r in self.requests_to(f"/crm/v3/objects/{object_type}/search") if now - 1 < r.at <= now]
            if len(recent) > self.search_per_second:
                return _error(429, "You have reached your secondly limit.", "RATE_LIMITS", errorType="RATE_LIMIT",
                              policyName="SECONDLY")
        body = req.json() or {}
        limit = int(body.get("limit", 10))
        if limit > 200:
            return _error(400, "limit: must be at most 200", "VALIDATION_ERROR")
        offset = int(body.get("after") or 0)
        if offset >= self.search_cap:
            return _error(400, f"Cannot page beyond {self.search_cap} results", "VALIDATION_ERROR")
        prop = MODIFIED[object_type]
        rs = self.objects[object_type]
        rows = list(rs)
        for group in body.get("filterGroups") or []:
            for f in group.get("filters") or []:
                if f.get("propertyName") != prop:
                    return _error(400, f"the fake filters on {prop} only", "VALIDATION_ERROR")
                bound = int(f["value"]) / 1000
                op = f["operator"]
                test = {"GTE": lambda s, b=bound: s >= b - 1e-9, "GT": lambda s, b=bound: s > b + 1e-9,
                        "LT": lambda s, b=bound: s < b - 1e-9, "LTE": lambda s, b=bound: s <= b + 1e-9}[op]
                rows = [r for r in rows if test(rs.stamps[r["id"]])]
        sorts = body.get("sorts") or []
        if sorts:
            if sorts[0].get("propertyName") != prop:
                return _error(400, f"the fake sorts on {prop} only", "VALIDATION_ERROR")
            rows.sort(key=lambda r: (rs.stamps[r["id"]], int(r["id"])), reverse=sorts[0].get("direction") == "DESCENDING")
        page = rows[offset : offset + limit]
        out: dict[str, Any] = {"total": len(rows),
                               "results": [self._render(object_type, r, body.get("properties")) for r in page]}
        if offset + limit < len(rows):
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return out

    @get("/crm/v3/objects/{object_type}")
    def list_objects(self, req: FakeRequest, object_type: str) -> Reply:
        if object_type not in self.objects:
            return _error(404, f"unknown object type {object_type}", "OBJECT_NOT_FOUND")
        archived = req.query.get("archived") == "true"
        rows = list(self.archived[object_type].values()) if archived else self.live(object_type)
        limit = min(int(req.query.get("limit") or 10), 100)
        offset = int(req.query.get("after") or 0)
        props = [p for p in (req.query.get("properties") or "").split(",") if p]
        out: dict[str, Any] = {"results": [self._render(object_type, r, props) for r in rows[offset : offset + limit]]}
        if offset + limit < len(rows):
            nxt = str(offset + limit)
            out["paging"] = {"next": {"after": nxt, "link": req.url_for(req.path, after=nxt, limit=limit)}}
        return out

    @get("/crm/v3/objects/{object_type}/{object_id}")
    def read_object(self, req: FakeRequest, object_type: str, object_id: str) -> Reply:
        record = self.objects[object_type].get(object_id) if object_type in self.objects else None
        if record is None:
            return _error(404, "Object not found.", "OBJECT_NOT_FOUND")
        props = [p for p in (req.query.get("properties") or "").split(",") if p]
        return self._render(object_type, record, props)

    @post("/crm/v4/associations/contacts/companies/batch/read")
    def read_associations(self, req: FakeRequest) -> Reply:
        inputs = [str(i["id"]) for i in (req.json() or {}).get("inputs", [])]
        results = []
        for cid in inputs:
            links = [(co, primary) for co, primary in self.links.get(cid, []) if self.objects["companies"].get(co)]
            if not links:
                continue
            results.append({"from": {"id": cid}, "to": [
                {"toObjectId": int(co), "associationTypes": (
                    [{"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}] if primary else []
                ) + [{"category": "HUBSPOT_DEFINED", "typeId": 279, "label": None}]}
                for co, primary in links]})
        return {"status": "COMPLETE", "results": results, "startedAt": iso_ms(self.clock()),
                "completedAt": iso_ms(self.clock())}

    @post("/crm/v3/objects/companies/batch/read")
    def read_companies(self, req: FakeRequest) -> Reply:
        body = req.json() or {}
        found = [self.objects["companies"].get(str(i["id"])) for i in body.get("inputs", [])]
        return {"status": "COMPLETE", "results": [self._render("companies", r, body.get("properties"))
                                                  for r in found if r is not None]}

    # -- webhooks ------------------------------------------------------------------------------------

    def event(self, subscription_type: str, object_id: str, *, event_id: int, attempt: int = 0,
              occurred_at: float | None = None, portal_id: int = HUB_ID, **extra: Any) -> dict[str, Any]:
        """One webhook event as HubSpot puts it in a delivery's JSON array."""
        return {"eventId": event_id, "subscriptionId": 12345, "portalId": portal_id, "appId": 4242,
                "occurredAt": int((self.clock() if occurred_at is None else occurred_at) * 1000),
                "subscriptionType": subscription_type, "attemptNumber": attempt, "objectId": int(object_id),
                "changeSource": "CRM", **extra}

    # -- helpers for tests ---------------------------------------------------------------------------

    def searches(self, object_type: str) -> list[FakeRequest]:
        """Every search request for ``object_type``."""
        return self.requests_to(f"/crm/v3/objects/{object_type}/search")


# -- wiring and conformance factories (see tests/plugins/test_conformance.py) -----------------------------


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, companies: int = 0, contacts: int = 0,
          clock: Any = None, **knobs: Any) -> FakeHubSpot:
    """Start a fake and point the plugin (both bases, the app's client id and secret) at it."""
    fake = serve_fake(FakeHubSpot(companies, contacts, clock=clock or FakeClock().time, **knobs))
    for base in ("API", "AUTH"):
        monkeypatch.setenv(f"HISSUNO_HUBSPOT_{base}_URL", fake.url)
    monkeypatch.setenv("HUBSPOT_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("HUBSPOT_CLIENT_SECRET", CLIENT_SECRET)
    return fake


def connect(store: Any, fake: FakeHubSpot) -> str:
    """A connection made by the plugin's own ``on_token_exchanged`` over tokens the fake issued (the browser
    leg is covered by the OAuth tests); returns its id."""
    from hissuno_airflow import registry, settings
    from hissuno_airflow.kit.auth import OAuth2Auth, OAuthTokens
    from hissuno_airflow.runtime.connect.accounts import as_auth_result, auth_ctx, save_auth_result
    from hissuno_airflow.runtime.handlers import call_handler

    plugin = registry.get_plugin("hubspot")
    auth = plugin.auth
    assert isinstance(auth, OAuth2Auth)
    tokens = fake.seed_tokens()
    project = settings.default_project_id()
    ctx = auth_ctx(plugin, store, project, "tester")
    exchanged = OAuthTokens(access_token=tokens["access_token"], refresh_token=tokens["refresh_token"], raw=tokens)
    result = as_auth_result(call_handler(auth.on_token_exchanged, exchanged, ctx), plugin)
    expires = datetime.fromtimestamp(datetime.now(UTC).timestamp() + 1800, UTC).isoformat()
    creds = {"access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"], "expires_at": expires,
             **result.credentials}
    row, _ = save_auth_result(store, plugin, project, result.model_copy(update={"credentials": creds}))
    return str(row.id)


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Six companies (one without a domain) and ten contacts (one without an email)."""
    fake = serve(monkeypatch, serve_fake, 6, 10)
    return ConformanceTarget(connection_id=connect(store, fake), stream_ids=("companies", "contacts"))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A token response the fake issued, and one whose access token it revoked."""
    fake = serve(monkeypatch, serve_fake)
    good = fake.seed_tokens()
    bad = fake.seed_tokens()
    fake.revoke_token(bad["access_token"])
    return AuthTarget(good=good, bad=bad)


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """The app's client secret signs; each payload is a ``contact.propertyChange`` batch of the portal."""
    from hissuno_airflow.kit.signatures import HubSpotV3
    from hissuno_airflow.runtime.streams import enable_stream

    fake = serve(monkeypatch, serve_fake, 1, 1)
    cid = connect(store, fake)
    for stream in ("companies", "contacts"):
        enable_stream(store, cid, stream)
    signer = Signer(HubSpotV3())
    monkeypatch.setenv("HUBSPOT_CLIENT_SECRET", signer.secret)
    contact = fake.live("contacts")[0]["id"]
    return WebhookTarget(sign=signer, forge=signer.forged(),
                         payload=lambda eid: [fake.event("contact.propertyChange", contact,
                                                         event_id=abs(hash(eid)) % 10**9, propertyName="email")])
