"""The OAuth fake must not lie: it refuses what a real authorization server refuses."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fakes.oauth import FakeOAuthServer, pkce_challenge
from tests.fakes.server import FakeClock

REDIRECT = "https://hissuno.test/hissuno/api/plugins/oauth/x/callback"


def client(fake: FakeOAuthServer) -> httpx.Client:
    return httpx.Client(transport=fake.transport(), base_url="http://oauth.fake")


def authorize(fake: FakeOAuthServer, verifier: str | None = None, **params: str) -> dict[str, str]:
    """The query the fake redirects back with."""
    q = {"client_id": fake.client_id, "response_type": "code", "redirect_uri": REDIRECT, "state": "st-1", **params}
    if verifier:
        q |= {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    with client(fake) as c:
        r = c.get(fake.authorize_path, params=q)
    assert r.status_code == 302, r.text
    location = r.headers["Location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def token(fake: FakeOAuthServer, *, basic: bool | None = None, **form: str) -> httpx.Response:
    basic = fake.token_auth_method == "client_secret_basic" if basic is None else basic
    with client(fake) as c:
        if basic:
            return c.post(fake.token_path, data=form, auth=(fake.client_id, fake.client_secret))
        return c.post(fake.token_path, data={"client_id": fake.client_id, "client_secret": fake.client_secret, **form})


def exchange(fake: FakeOAuthServer, code: str, verifier: str | None = None, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **extra}
    if verifier is not None:
        form["code_verifier"] = verifier
    return token(fake, **form)


def me(fake: FakeOAuthServer, access: str) -> httpx.Response:
    with client(fake) as c:
        return c.get("/me", headers={"Authorization": f"Bearer {access}"})


def test_code_flow_with_pkce_and_single_use_codes() -> None:
    fake = FakeOAuthServer(require_pkce=True)
    verifier = secrets.token_urlsafe(48)
    back = authorize(fake, verifier)
    assert back["state"] == "st-1"
    wrong = exchange(fake, back["code"], "a-different-verifier-" + "x" * 30)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert "PKCE" in wrong.json()["error_description"]
    # The failed attempt burnt the code, as it must (codes are single use).
    assert exchange(fake, back["code"], verifier).json()["error"] == "invalid_grant"

    back = authorize(fake, verifier)
    ok = exchange(fake, back["code"], verifier)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["refresh_token"].startswith("rt-")
    assert me(fake, body["access_token"]).json() == fake.account
    assert exchange(fake, back["code"], verifier).json()["error"] == "invalid_grant"
    assert fake.exchanges == 1


def test_pkce_required_missing_verifier_and_plain_method_are_refused() -> None:
    fake = FakeOAuthServer(require_pkce=True)
    with client(fake) as c:
        no_challenge = c.get("/authorize", params={"client_id": fake.client_id, "response_type": "code",
                                                   "redirect_uri": REDIRECT, "state": "s"})
        plain = c.get("/authorize", params={"client_id": fake.client_id, "response_type": "code", "state": "s",
                                            "redirect_uri": REDIRECT, "code_challenge": "abc",
                                            "code_challenge_method": "plain"})
    for r in (no_challenge, plain):
        q = parse_qs(urlsplit(r.headers["Location"]).query)
        assert r.status_code == 302 and q["error"] == ["invalid_request"] and q["state"] == ["s"]
    back = authorize(fake, "v" * 43)
    assert exchange(fake, back["code"]).json()["error"] == "invalid_grant"  # verifier left out


def test_refresh_rotates_and_a_used_refresh_token_is_refused() -> None:
    fake = FakeOAuthServer()
    first = fake.seed_tokens()
    r1 = token(fake, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert r1.status_code == 200
    second = r1.json()
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    reused = token(fake, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert "already used" in reused.json()["error_description"]
    assert fake.live_refresh_tokens == [second["refresh_token"]]
    assert token(fake, grant_type="refresh_token", refresh_token=second["refresh_token"]).status_code == 200
    assert token(fake, grant_type="refresh_token", refresh_token="never-issued").json()["error"] == "invalid_grant"
    assert fake.refreshes == 2


def test_without_rotation_the_refresh_token_is_reusable() -> None:
    fake = FakeOAuthServer(rotate_refresh_tokens=False)
    rt = fake.seed_tokens()["refresh_token"]
    for _ in range(2):
        r = token(fake, grant_type="refresh_token", refresh_token=rt)
        assert r.status_code == 200 and r.json()["refresh_token"] == rt


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_token_endpoint_auth_method_is_enforced(method: str) -> None:
    fake = FakeOAuthServer(token_auth_method=method)
    rt = fake.seed_tokens()["refresh_token"]
    wrong = token(fake, basic=method != "client_secret_basic", grant_type="refresh_token", refresh_token=rt)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert token(fake, grant_type="refresh_token", refresh_token=rt).status_code == 200


def test_scope_separator_required_params_and_allowed_scopes() -> None:
    fake = FakeOAuthServer(scope_separator=",", required_authorize_params={"prompt": "consent"},
                           required_token_params={"audience": "api.fake"}, allowed_scopes=frozenset({"read", "write"}))
    assert authorize(fake, scope="read,write")["error"] == "invalid_request"  # no prompt=consent
    assert authorize(fake, scope="read,admin", prompt="consent")["error"] == "invalid_scope"
    back = authorize(fake, scope="read,write", prompt="consent")
    assert exchange(fake, back["code"]).json()["error"] == "invalid_request"  # no audience (checked before the code is used)
    ok = exchange(fake, back["code"], audience="api.fake")
    assert ok.status_code == 200, ok.text
    assert ok.json()["scope"] == "read,write"
    assert fake.authorize_requests[-1]["scope"] == "read,write"


def test_redirect_uri_must_match_and_consent_can_be_denied() -> None:
    fake = FakeOAuthServer()
    back = authorize(fake)
    r = token(fake, grant_type="authorization_code", code=back["code"], redirect_uri=REDIRECT + "/evil")
    assert r.json()["error"] == "invalid_grant"
    fake.deny_consent = True
    assert authorize(fake)["error"] == "access_denied"
    with client(fake) as c:
        assert c.get("/authorize", params={"client_id": "someone-else", "response_type": "code",
                                           "redirect_uri": REDIRECT}).status_code == 400


def test_expiry_on_demand_and_on_the_clock() -> None:
    clock = FakeClock()
    fake = FakeOAuthServer(clock=clock.time, access_ttl=60)
    access = fake.seed_tokens()["access_token"]
    assert me(fake, access).status_code == 200
    assert fake.expire_access_token() == access
    expired = me(fake, access)
    assert expired.status_code == 401 and expired.json()["error"] == "token_expired"
    later = fake.seed_tokens()["access_token"]
    clock.advance(61)
    assert me(fake, later).json()["error"] == "token_expired"


def test_revocation_kills_access_and_refresh_tokens() -> None:
    fake = FakeOAuthServer()
    t = fake.seed_tokens()
    with client(fake) as c:
        form: dict[str, Any] = {"client_id": fake.client_id, "client_secret": fake.client_secret}
        assert c.post("/revoke", data={**form, "token": t["access_token"]}).status_code == 200
        assert c.post("/revoke", data={**form, "token": t["refresh_token"]}).status_code == 200
        assert c.post("/revoke", data={"token": t["refresh_token"]}).status_code == 401
    assert me(fake, t["access_token"]).status_code == 401
    assert token(fake, grant_type="refresh_token", refresh_token=t["refresh_token"]).json()["error"] == "invalid_grant"


def test_json_token_bodies_and_knob_typos() -> None:
    fake = FakeOAuthServer()
    rt = fake.seed_tokens()["refresh_token"]
    with client(fake) as c:
        r = c.post("/token", json={"grant_type": "refresh_token", "refresh_token": rt, "client_id": fake.client_id,
                                   "client_secret": fake.client_secret})
    assert r.status_code == 200, r.text
    with pytest.raises(TypeError, match="scope_seperator"):
        FakeOAuthServer(scope_seperator=",")


@pytest.mark.parametrize("body", ["form", "json"])
def test_token_body_knob_takes_only_that_body(body: str) -> None:
    fake = FakeOAuthServer(token_body=body)
    rt = fake.seed_tokens()["refresh_token"]
    grant = {"grant_type": "refresh_token", "refresh_token": rt, "client_id": fake.client_id,
             "client_secret": fake.client_secret}
    with client(fake) as c:
        wrong = c.post("/token", data=grant) if body == "json" else c.post("/token", json=grant)
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_request", wrong.text
        assert fake.refreshes == 0 and rt in fake.refresh_tokens
        right = c.post("/token", json=grant) if body == "json" else c.post("/token", data=grant)
    assert right.status_code == 200 and fake.refreshes == 1, right.text
