"""The webhook signers must not lie: their output verifies with kit.signatures, and only their output.

Checked three ways: the Appendix B vectors of providers.md reproduced byte for byte; a round trip for
every preset (valid accepted; tampered body, forged secret and, where the scheme has a window, a stale
timestamp refused); and a registry that covers every scheme type the kit defines.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, get_args

import pytest

from hissuno_airflow.kit import signatures as sig
from hissuno_airflow.kit.signatures import SignatureFailure, SignedRequest, verify
from hissuno_airflow.kit.testing import has_freshness_window
from tests.fakes.webhooks import SIGNERS, Signer, sign, signer_for

B = b'{"hello":"world"}'
URL = "https://example.com/hubspot/webhook"

PRESETS: dict[str, Any] = {
    "slack": sig.SlackSignature(), "github": sig.GitHubSignature(), "standard": sig.StandardWebhooks(),
    "hubspot_v3": sig.HubSpotV3(), "hubspot_v1": sig.HubSpotV1(), "linear": sig.LinearSignature(),
    "zendesk": sig.ZendeskSignature(), "notion": sig.NotionSignature(), "intercom": sig.IntercomSignature(),
    "jira": sig.JiraSignature(), "shared": sig.SharedSecretHeader(), "jwt": sig.JwtSignature(check_url=True),
}


def check(scheme: Any, secret: str, d: Any, now: float) -> sig.Verified:
    return verify(scheme, secret, SignedRequest(d.body, d.headers, d.method, d.url), now=now)


@pytest.mark.parametrize(
    ("scheme", "secret", "body", "ts", "header", "expected"),
    [
        (sig.SlackSignature(), "8f742231b10e8888abcd99yyyzzz85a5", B, 1700000000, "X-Slack-Signature",
         "v0=847e8f68e020fe69d5b60cb3ded54074024149b54d59e37785b63c35e60c4450"),
        (sig.GitHubSignature(), "It's a Secret to Everybody", b"Hello, World!", 0, "X-Hub-Signature-256",
         "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        (sig.GitHubSignature(), "whsec-test", B, 0, "X-Hub-Signature-256",
         "sha256=dd6de9189ccd27daad93261fbf5a287c12f87b58dee8c636c5887e87bb85af2f"),
        (sig.LinearSignature(), "lin_wh_test",
         b'{"action":"create","type":"Issue","data":{"id":"abc"},"webhookTimestamp":1700000000000}', 1700000000,
         "Linear-Signature", "6c8c14fbc341f9e51be07fff881693ec4ca736a7a116f166a3ff38df5486e4e0"),
        (sig.IntercomSignature(), "intercom-secret", B, 0, "X-Hub-Signature",
         "sha1=f0370dccbe42fb3b813b5f0230d21cdb3a953eb7"),
        (sig.ZendeskSignature(), "zd-secret", B, 1713374290, "X-Zendesk-Webhook-Signature",
         "Y81SumePkq2H7lpBAVl2l6gHH0/8wIft88kDmEP6pwI="),
        (sig.NotionSignature(), "secret_notion_test", B, 0, "X-Notion-Signature",
         "sha256=ab55521b2d427c5cf701a211d7a1f3e27148fe75046b7f4853b3279275d7aac1"),
        (sig.HubSpotV3(), "hs-secret", B, 1700000000, "X-HubSpot-Signature-v3",
         "vUf+F6FHKrfZyiKZ1OFjUYCvYSepNQmj3lL5ZVpuV4U="),
        (sig.HubSpotV1(), "hs-secret", B, 0, "X-HubSpot-Signature",
         "3ad2c094a17e7029caf9518168b9c1f0d4154afe7201b5ca0354e762346ff360"),
        (sig.JiraSignature(), "jira-secret", B, 0, "X-Hub-Signature",
         "sha256=5c915568d0d8fe1f2496f22bcb909f2d9eaa9d1d4d5247f555ad06f35e862476"),
        (sig.StandardWebhooks(), "whsec_ZmF0aG9tLXRlc3Qta2V5LTAxMjM0NTY3ODlhYmNkZWY=", B, 1700000000,
         "webhook-signature", "v1,m+THShcksOgtr4Mo1GCVoWIPFY3g/a4e7uuMj9f6+UM="),
    ],
    ids=["slack", "github-official", "github", "linear", "intercom", "zendesk", "notion", "hubspot-v3",
         "hubspot-v1", "jira", "standard"],
)
def test_signers_reproduce_the_appendix_b_vectors(scheme: Any, secret: str, body: bytes, ts: int, header: str,
                                                  expected: str) -> None:
    d = sign(scheme, secret, body, url=URL, ts=ts, event_id="msg_test123")
    assert d.headers[header] == expected


def test_zendesk_timestamp_is_iso_and_github_legacy_is_sha1() -> None:
    d = sign(sig.ZendeskSignature(), "zd-secret", B, ts=1713374290)
    assert d.headers["X-Zendesk-Webhook-Signature-Timestamp"] == "2024-04-17T17:18:10Z"
    legacy = sign(sig.GitHubSignature(), "whsec-test", B, legacy=True)
    assert legacy.headers["X-Hub-Signature"] == "sha1=aa10fb03480bdfbd76fa8360ab449e7f62d75c34"
    assert "X-Hub-Signature-256" not in legacy.headers


def test_jwt_signer_carries_the_body_hash_vector() -> None:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    signer = Signer(sig.JwtSignature())
    d = signer(B, url="https://h/x", timestamp=1700000000)
    token = d.headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, RSAKey.import_key(signer.secret)).claims
    assert claims["body_sha256"] == "93a23971a914e5eacbf0a8d25154cda309c3c1c72fbb9914d47c60f3cb681588"
    assert claims["webhook_url"] == "https://h/x" and claims["iat"] == 1700000000


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_valid_tampered_forged_stale(name: str) -> None:
    scheme = PRESETS[name]
    signer = Signer(scheme)
    now = 1_750_000_000.0
    d = signer({"id": "e-1", "title": "hello"}, url=URL, timestamp=now, event_id="e-1")
    v = check(scheme, signer.secret, d, now)
    if isinstance(scheme, sig.HmacSignature) and scheme.id_header:
        assert v.event_id == "e-1"
    if isinstance(scheme, sig.HmacSignature) and scheme.timestamp_field:
        assert json.loads(d.body)[scheme.timestamp_field] == int(now * 1000)
    if not isinstance(scheme, sig.SharedSecretHeader):
        with pytest.raises(SignatureFailure) as ei:
            check(scheme, signer.secret, type(d)(d.body + b" ", d.headers, d.url), now)
        assert ei.value.reason == "bad_signature"
    forged = signer.forged()({"id": "e-1", "title": "hello"}, url=URL, timestamp=now, event_id="e-1")
    with pytest.raises(SignatureFailure) as ei:
        check(scheme, signer.secret, forged, now)
    assert ei.value.reason == "bad_signature"
    old = signer({"id": "e-1"}, url=URL, timestamp=now - 3600, event_id="e-1")
    if has_freshness_window(scheme):
        with pytest.raises(SignatureFailure) as ei:
            check(scheme, signer.secret, old, now)
        assert ei.value.reason == "stale"
    else:
        check(scheme, signer.secret, old, now)


def test_url_signing_schemes_sign_the_query_too() -> None:
    scheme = sig.HubSpotV3()
    d = sign(scheme, "hs-secret", B, url=URL, query={"portalId": "42"}, ts=1700000000)
    assert d.url == URL + "?portalId=42"
    check(scheme, "hs-secret", d, 1700000000)
    with pytest.raises(SignatureFailure):
        check(scheme, "hs-secret", type(d)(d.body, d.headers, URL), 1700000000)
    v2 = sign(sig.HubSpotV1(), "hs-secret", B, url=URL, query={"a": "1"}, version="v2")
    assert v2.headers["X-HubSpot-Signature-Version"] == "v2"
    check(sig.HubSpotV1(), "hs-secret", v2, 0)


def test_every_scheme_type_of_the_kit_has_a_signer() -> None:
    kinds = set(get_args(sig.SignatureScheme))
    assert kinds == set(SIGNERS), "add a signer for each new scheme type"
    for scheme in PRESETS.values():
        assert signer_for(scheme) is SIGNERS[next(k for k in type(scheme).__mro__ if k in SIGNERS)]
    with pytest.raises(LookupError):
        signer_for(object())


def test_with_secret_for_jwt_derives_the_public_key() -> None:
    from tests.fakes.webhooks import rsa_keys

    private, public = rsa_keys("other")
    s = Signer(sig.JwtSignature()).with_secret(private)
    assert s.secret == public
    check(sig.JwtSignature(), public, s(B, timestamp=1700000000.0), 1700000000)
    assert hashlib.sha256(B).hexdigest().startswith("93a2")
