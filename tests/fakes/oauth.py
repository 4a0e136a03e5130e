"""A stateful OAuth 2.0 authorization server for provider fakes (RFC 6749, PKCE RFC 7636, revocation RFC 7009).

A provider fake subclasses ``FakeOAuthServer`` and sets its knobs as class attributes (or passes them to
the constructor), then adds its API routes, which ``check_bearer`` guards::

    class FakeLinear(FakeOAuthServer):
        token_path = "/oauth/token"
        scope_separator = ","
        userinfo_path = None              # Linear answers who-am-I through GraphQL instead

        @post("/graphql")
        def graphql(self, req: FakeRequest) -> Reply:
            refused = self.check_bearer(req)
            ...

What it enforces:

- ``GET authorize_path``: known ``client_id``, ``response_type=code``, a ``redirect_uri`` (one of
  ``redirect_uris`` when set), every ``required_authorize_params``, a PKCE S256 challenge when
  ``require_pkce`` (``plain`` is refused), scopes split on ``scope_separator`` and within
  ``allowed_scopes`` when set. Grants at once (302 to the redirect URI with ``code`` and ``state``),
  or answers ``error=access_denied`` when ``deny_consent`` is set.
- ``POST token_path`` (form or JSON body; only the one ``token_body`` names when it is ``"form"`` or
  ``"json"``, the other is ``invalid_request``, HTTP 400): client authentication by ``token_auth_method``
  (``client_secret_basic`` demands the Basic header, ``client_secret_post`` the body fields), every
  ``required_token_params``; ``authorization_code`` codes are single-use, expire, and are bound to
  the redirect URI and the PKCE challenge; ``refresh_token`` rotates when ``rotate_refresh_tokens``: the
  used refresh token is dead from then on and presenting it again is ``invalid_grant``.
- ``POST revoke_path``: revokes an access or refresh token (client-authenticated, 200 either way).
- ``GET userinfo_path``: the account behind a live bearer token; 401 for unknown, expired or revoked.

State a test reads or changes: ``codes``, ``tokens`` (access token -> expiry, from ``FakeProvider``),
``token_accounts``, ``refresh_tokens`` (live) and ``used_refresh_tokens``, ``exchanges``, ``refreshes``,
``refusals`` (every OAuth error answered), ``authorize_requests``. ``expire_access_token()`` expires the
newest access token on demand; ``seed_tokens`` / ``seed_refresh_token`` create credentials without the
browser leg. Token values are ``<prefix><n>-<random>`` (``at-1-9f0c...``), numbered per server; with
``numbered_tokens`` they are just ``<prefix><n>`` (``access-1``), for tests that name them.
"""

from __future__ import annotations

import base64
import hashlib
import json as jsonlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .server import FakeProvider, FakeRequest, FakeResponse, Reply

__all__ = ["FakeOAuthServer", "Grant", "pkce_challenge"]

TokenAuthMethod = Literal["client_secret_basic", "client_secret_post"]
TokenBody = Literal["form", "json", "any"]

_KNOBS = (
    "client_id", "client_secret", "authorize_path", "token_path", "revoke_path", "userinfo_path", "scope_separator",
    "token_auth_method", "token_body", "require_pkce", "required_authorize_params", "required_token_params",
    "redirect_uris", "allowed_scopes", "access_ttl", "code_ttl", "issue_refresh_tokens", "rotate_refresh_tokens", "access_prefix",
    "refresh_prefix", "numbered_tokens", "extra_token_response", "account",
)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (base64url of its SHA-256, unpadded)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Grant:
    """An authorization code and what it is bound to."""

    code: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    expires_at: float
    account: dict[str, Any] = field(default_factory=dict)


class FakeOAuthServer(FakeProvider):
    """An OAuth 2.0 authorization server with per-provider knobs; see the module docstring."""

    name = "oauth"
    client_id = "fake-client"
    client_secret = "fake-client-secret"
    authorize_path = "/authorize"
    token_path = "/token"
    revoke_path: str | None = "/revoke"
    userinfo_path: str | None = "/me"
    scope_separator = " "
    token_auth_method: TokenAuthMethod = "client_secret_post"
    token_body: TokenBody = "any"
    """Body the token endpoint reads: ``"form"`` (urlencoded), ``"json"`` (Atlassian), ``"any"`` either."""
    require_pkce = False
    required_authorize_params: Mapping[str, str] = {}
    """Authorize query parameters that must be present with these values (``{"prompt": "consent"}``)."""
    required_token_params: Mapping[str, str] = {}
    """Token request parameters that must be present with these values (``{"audience": "..."}``)."""
    redirect_uris: tuple[str, ...] | None = None
    """Registered redirect URIs; None accepts any."""
    allowed_scopes: frozenset[str] | None = None
    """Scopes the app may ask for; None accepts any."""
    access_ttl: float | None = 3600
    """Access token lifetime in seconds (``expires_in``); None: tokens never expire (Intercom)."""
    code_ttl: float = 600
    issue_refresh_tokens = True
    rotate_refresh_tokens = True
    """Each refresh answers a new refresh token and kills the used one; False: the refresh token is reusable."""
    access_prefix = "at-"
    refresh_prefix = "rt-"
    numbered_tokens = False
    """True: tokens are ``<prefix><n>`` exactly; False adds a random part, so a leak check cannot match by chance."""
    extra_token_response: Mapping[str, Any] = {}
    """Provider-specific fields added to every token response (Slack's ``team``, Gong's base URL)."""
    account: dict[str, Any] = {"id": "acct-1", "name": "Fake Account"}
    """The account a grant authorizes (what ``userinfo_path`` answers)."""

    def __init__(self, **knobs: Any) -> None:
        clock = knobs.pop("clock", None)
        unknown = sorted(set(knobs) - set(_KNOBS))
        if unknown:
            raise TypeError(f"unknown FakeOAuthServer knob(s): {', '.join(unknown)}")
        super().__init__(**({"clock": clock} if clock else {}))
        for name, value in knobs.items():
            setattr(self, name, value)
        self.account = dict(self.account)
        self.codes: dict[str, Grant] = {}
        self.token_accounts: dict[str, dict[str, Any]] = {}
        """Live and expired access tokens -> the account they act for."""
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        """Live refresh tokens -> the account they act for."""
        self.used_refresh_tokens: set[str] = set()
        self.revoked: set[str] = set()
        self.access_issued: list[str] = []
        self.exchanges = 0
        self.refreshes = 0
        self.refusals: list[dict[str, Any]] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.deny_consent = False
        self._n = 0
        self.router.add("GET", self.authorize_path, self._authorize)
        self.router.add("POST", self.token_path, self._token)
        if self.revoke_path:
            self.router.add("POST", self.revoke_path, self._revoke)
        if self.userinfo_path:
            self.router.add("GET", self.userinfo_path, self._userinfo)

    # --- test-side helpers --------------------------------------------------------------------------

    def seed_tokens(self, account: Mapping[str, Any] | None = None, *, scopes: tuple[str, ...] = ()) -> dict[str, Any]:
        """Issue a token response directly, as if a grant had happened (no browser leg)."""
        with self._lock:
            return self._issue(dict(account or self.account), scopes)

    def seed_refresh_token(self, token: str, account: Mapping[str, Any] | None = None) -> str:
        """Make ``token`` a live refresh token (credentials a test stores before the refresh under test)."""
        with self._lock:
            self.refresh_tokens[token] = dict(account or self.account)
        return token

    def expire_access_token(self, token: str | None = None) -> str:
        """Expire ``token`` (default: the newest access token) now; the API then answers ``token_expired``."""
        with self._lock:
            target = token or (self.access_issued[-1] if self.access_issued else None)
            if target is None:
                raise LookupError("no access token was issued yet")
            self.expire_token(target)
            return target

    @property
    def live_refresh_tokens(self) -> list[str]:
        """Refresh tokens that would be accepted now."""
        with self._lock:
            return sorted(self.refresh_tokens)

    def revoke_token(self, token: str) -> None:
        """Stop accepting ``token``, whether an access or a refresh token."""
        with self._lock:
            super().revoke_token(token)
            self.refresh_tokens.pop(token, None)
            self.revoked.add(token)

    # --- OAuth endpoints (exempt from ``require_auth``) ----------------------------------------------------

    def check_auth(self, req: FakeRequest) -> Reply | None:
        """OAuth endpoints authenticate the client themselves; the rest follows ``require_auth``."""
        if req.path in {self.authorize_path, self.token_path, self.revoke_path}:
            return None
        return super().check_auth(req)

    def _refuse(self, status: int, error: str, description: str, **extra: Any) -> FakeResponse:
        self.refusals.append({"error": error, "error_description": description, **extra})
        return FakeResponse(status, {"error": error, "error_description": description})

    def _authorize(self, req: FakeRequest) -> Reply:
        q = req.query
        with self._lock:
            self.authorize_requests.append(q)
        if q.get("client_id") != self.client_id:
            return self._refuse(400, "invalid_client", "unknown client_id")
        redirect = q.get("redirect_uri", "")
        if not redirect or (self.redirect_uris is not None and redirect not in self.redirect_uris):
            return self._refuse(400, "invalid_request", "redirect_uri missing or not registered")

        def back(**params: str) -> FakeResponse:
            if q.get("state") is not None:
                params["state"] = q["state"]
            parts = urlsplit(redirect)
            query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
            return FakeResponse(302, headers={"Location": urlunsplit(parts._replace(query=query))})

        def refuse(error: str, description: str) -> FakeResponse:
            self._refuse(302, error, description)
            return back(error=error, error_description=description)

        if q.get("response_type") != "code":
            return refuse("unsupported_response_type", "response_type must be code")
        for name, value in self.required_authorize_params.items():
            if q.get(name) != value:
                return refuse("invalid_request", f"{name}={value} is required")
        challenge, method = q.get("code_challenge"), q.get("code_challenge_method")
        if challenge and method != "S256":
            return refuse("invalid_request", "only code_challenge_method=S256 is supported")
        if self.require_pkce and not challenge:
            return refuse("invalid_request", "PKCE code_challenge is required")
        scopes = tuple(s for s in (q.get("scope") or "").split(self.scope_separator) if s)
        if self.allowed_scopes is not None and not set(scopes) <= self.allowed_scopes:
            bad = sorted(set(scopes) - self.allowed_scopes)
            return refuse("invalid_scope", f"unknown scope(s): {' '.join(bad)}")
        if self.deny_consent:
            return refuse("access_denied", "the user denied the request")
        code = secrets.token_urlsafe(16)
        with self._lock:
            self.codes[code] = Grant(code, self.client_id, redirect, scopes, challenge,
                                     self.clock() + self.code_ttl, dict(self.account))
        return back(code=code)

    def _form(self, req: FakeRequest) -> dict[str, str]:
        if (req.header("content-type") or "").startswith("application/json"):
            data = req.json() or {}
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return dict(parse_qsl(req.body.decode(), keep_blank_values=True))

    def _client_ok(self, req: FakeRequest, form: Mapping[str, str]) -> bool:
        if self.token_auth_method == "client_secret_basic":
            return req.basic_auth == (self.client_id, self.client_secret)
        return (form.get("client_id"), form.get("client_secret")) == (self.client_id, self.client_secret)

    def _token(self, req: FakeRequest) -> Reply:
        is_json = (req.header("content-type") or "").startswith("application/json")
        if self.token_body != "any" and is_json != (self.token_body == "json"):
            want = "application/json" if self.token_body == "json" else "application/x-www-form-urlencoded"
            return self._refuse(400, "invalid_request", f"the token request body must be {want}",
                                content_type=req.header("content-type"))
        form = self._form(req)
        grant_type = form.get("grant_type", "")
        if not self._client_ok(req, form):
            return self._refuse(401, "invalid_client", f"client authentication failed ({self.token_auth_method})",
                                grant_type=grant_type)
        for name, value in self.required_token_params.items():
            if form.get(name) != value:
                return self._refuse(400, "invalid_request", f"{name}={value} is required", grant_type=grant_type)
        with self._lock:
            if grant_type == "authorization_code":
                return self._exchange(form)
            if grant_type == "refresh_token":
                return self._refresh(form)
        return self._refuse(400, "unsupported_grant_type", f"grant_type {grant_type!r}", grant_type=grant_type)

    def _exchange(self, form: Mapping[str, str]) -> Reply:
        grant = self.codes.pop(form.get("code", ""), None)  # single use, whatever happens next
        if grant is None:
            return self._refuse(400, "invalid_grant", "unknown or used code", grant_type="authorization_code")
        if self.clock() > grant.expires_at:
            return self._refuse(400, "invalid_grant", "code expired", grant_type="authorization_code")
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._refuse(400, "invalid_grant", "redirect_uri differs from the authorize request",
                                grant_type="authorization_code")
        if grant.challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier or not secrets.compare_digest(pkce_challenge(verifier), grant.challenge):
                return self._refuse(400, "invalid_grant", "PKCE verification failed", grant_type="authorization_code")
        elif form.get("code_verifier"):
            return self._refuse(400, "invalid_grant", "code_verifier without a challenge",
                                grant_type="authorization_code")
        self.exchanges += 1
        return self._issue(grant.account, grant.scopes)

    def _refresh(self, form: Mapping[str, str]) -> Reply:
        token = form.get("refresh_token", "")
        if token in self.used_refresh_tokens:
            return self._refuse(400, "invalid_grant", "refresh token was already used (rotated)",
                                grant_type="refresh_token")
        account = self.refresh_tokens.get(token)
        if account is None:
            return self._refuse(400, "invalid_grant", "unknown or revoked refresh token", grant_type="refresh_token")
        self.refreshes += 1
        if self.rotate_refresh_tokens:
            self.refresh_tokens.pop(token)
            self.used_refresh_tokens.add(token)
            return self._issue(account, ())
        body = self._issue(account, (), refresh=False)
        body["refresh_token"] = token
        return body

    def _issue(self, account: dict[str, Any], scopes: tuple[str, ...], *, refresh: bool = True) -> dict[str, Any]:
        self._n += 1
        tail = "" if self.numbered_tokens else "-" + secrets.token_hex(8)
        access = f"{self.access_prefix}{self._n}{tail}"
        self.issue_token(access, expires_in=self.access_ttl)
        self.token_accounts[access] = account
        self.access_issued.append(access)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
        if self.access_ttl is not None:
            body["expires_in"] = int(self.access_ttl)
        if refresh and self.issue_refresh_tokens:
            rt = f"{self.refresh_prefix}{self._n}{tail}"
            self.refresh_tokens[rt] = account
            body["refresh_token"] = rt
        if scopes:
            body["scope"] = self.scope_separator.join(scopes)
        body.update(jsonlib.loads(jsonlib.dumps(dict(self.extra_token_response))))
        return body

    def _revoke(self, req: FakeRequest) -> Reply:
        form = self._form(req)
        if not self._client_ok(req, form):
            return self._refuse(401, "invalid_client", "client authentication failed")
        token = form.get("token", "")
        if token:
            self.revoke_token(token)
        return FakeResponse(200, {})

    def _userinfo(self, req: FakeRequest) -> Reply:
        refused = self.check_bearer(req)
        if refused is not None:
            return refused
        return self.token_accounts.get(req.bearer_token or "", self.account)
