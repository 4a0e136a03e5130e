"""The token-endpoint body a plugin declares (``OAuth2Auth.token_body``): authlib sends the standard form
unless the plugin asks for JSON, and the client credentials go where ``token_endpoint_auth_method`` says,
over real HTTP to the OAuth fake, which takes only the body it is told to."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl

import pytest

from hissuno_airflow.kit.auth import AuthResult, OAuth2Auth
from hissuno_airflow.runtime.oauth_client import oauth_client
from tests.fakes.oauth import FakeOAuthServer


def _auth(**knobs: Any) -> OAuth2Auth:
    return OAuth2Auth(authorize_url="{AUTH}/authorize", token_url="{AUTH}/token", client_id_env="X_ID",
                      client_secret_env="X_SECRET", on_token_exchanged=lambda tokens, ctx: AuthResult(
                          external_account_id="a", account_label="a"), **knobs)


@pytest.mark.parametrize("body", ["form", "json"])
@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_the_refresh_grant_carries_the_declared_body_and_client_auth(
        serve_fake: Any, body: str, method: str) -> None:
    fake = serve_fake(FakeOAuthServer(token_body=body, token_auth_method=method))
    rt = fake.seed_tokens()["refresh_token"]
    auth = _auth(**({} if body == "form" else {"token_body": body}), token_endpoint_auth_method=method)
    with oauth_client(auth, client_id=fake.client_id, client_secret=fake.client_secret, timeout=10,
                      trust_env=False) as client:
        token = client.refresh_token(fake.url + "/token", refresh_token=rt)
    assert token["access_token"] and fake.refreshes == 1 and fake.refusals == []
    [req] = fake.requests_to("/token", "POST")
    ctype = req.header("content-type") or ""
    sent = req.json() if body == "json" else dict(parse_qsl(req.body.decode()))
    assert ctype.startswith("application/json" if body == "json" else "application/x-www-form-urlencoded")
    assert int(req.header("content-length") or -1) == len(req.body) and not req.query_list
    creds = {"client_id": fake.client_id, "client_secret": fake.client_secret}
    basic = "Basic " + base64.b64encode(f"{fake.client_id}:{fake.client_secret}".encode()).decode()
    if method == "client_secret_post":
        assert sent == {"grant_type": "refresh_token", "refresh_token": rt, **creds}
        assert req.header("authorization") is None
    else:
        assert sent == {"grant_type": "refresh_token", "refresh_token": rt}
        assert req.header("authorization") == basic


def test_form_stays_the_default() -> None:
    assert _auth().token_body == "form"
    with pytest.raises(ValueError, match="token_body"):
        _auth(token_body="xml")
